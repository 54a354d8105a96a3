import pytest
import torch
from mpi4py import MPI

from pinn_lsr.parallel.device import (
    allgather_rows_,
    allreduce_,
    broadcast_,
    check_device,
    gram_product,
    peak_device_memory_mb,
    resolve_device,
)

NO_CUDA = not torch.cuda.is_available()


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:-1", "CPU", 0, None])
def test_bad_device_names_are_refused_naming_the_key(name):
    with pytest.raises(ValueError, match=r"mydevice must be one of cpu \| cuda \| cuda:N"):
        check_device(name, key="mydevice")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA device")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_refused(name):
    with pytest.raises(ValueError, match=f"device={name}: torch sees no CUDA device"):
        resolve_device(name, MPI.COMM_SELF)


def test_cpu_helpers_work_in_place_on_one_rank():
    assert resolve_device("cpu", MPI.COMM_SELF) == torch.device("cpu")
    assert peak_device_memory_mb(torch.device("cpu")) is None
    t = torch.arange(6.0).reshape(3, 2)
    for helper in (
        lambda x: allreduce_(x, MPI.COMM_SELF),
        lambda x: broadcast_(x, MPI.COMM_SELF),
        lambda x: allgather_rows_(x, [3], MPI.COMM_SELF),
    ):
        assert helper(t) is t and torch.equal(t, torch.arange(6.0).reshape(3, 2))


@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA device")
def test_cuda_resolves_to_a_gpu_of_this_node_and_counts_its_peak():
    device = resolve_device("cuda", MPI.COMM_SELF)
    assert device.type == "cuda" and device.index == 0
    x = torch.ones(1 << 20, device=device)
    assert peak_device_memory_mb(device) >= x.numel() * 4 / 2**20


def test_gram_product_is_the_transpose_product():
    A = torch.randn(50, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gram_product(A), A.T @ A, rtol=1e-14, atol=1e-13)
