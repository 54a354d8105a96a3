"""Where torch computes (``device = cpu | cuda | cuda:N``), and MPI collectives on its tensors.

mpi4py communicates host (NumPy) buffers. The helpers here take a tensor wherever it lives: a
CPU tensor is communicated in place through its NumPy view, a device tensor through one host
copy, so solvers never scatter ``.cpu()`` calls and the same code runs on both (tests run the
device code path with ``device=cpu``).
"""

import re

import numpy as np
import torch
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

DEVICE_NAMES = "cpu | cuda | cuda:N"
_DEVICE = re.compile(r"cpu|cuda(:[0-9]+)?")


def check_device(name, *, key: str = "device") -> None:
    """Raise ValueError (naming ``key``) unless ``name`` is ``cpu``, ``cuda`` or ``cuda:N`` and,
    for CUDA, torch sees a GPU (with number N). Local."""
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        raise ValueError(f"{key} must be one of {DEVICE_NAMES}, got {name!r}")
    if name == "cpu":
        return
    if not torch.cuda.is_available():
        raise ValueError(
            f"{key}={name}: torch sees no CUDA device on this machine "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use {key}=cpu"
        )
    count = torch.cuda.device_count()
    if ":" in name and int(name.split(":")[1]) >= count:
        raise ValueError(f"{key}={name}: this machine has {count} CUDA device(s), cuda:0..")


def resolve_device(name: str, comm: MPI.Comm = MPI.COMM_WORLD) -> torch.device:
    """The torch device of ``name`` for this MPI rank: ``cuda`` is ``cuda:i`` with i this rank's
    number among the ranks on its node modulo the node's GPUs; ``cpu`` and ``cuda:N`` as given.
    Collective for ``cuda`` (a split of ``comm`` by node).

    Raises:
        ValueError: see :func:`check_device`.
    """
    check_device(name)
    if name != "cuda":
        return torch.device(name)
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank = node.rank
    node.Free()
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def _through_host(t: torch.Tensor, operation) -> torch.Tensor:
    """``operation(host)`` on a NumPy array of ``t``'s values, written back to ``t``; the array
    is ``t``'s own memory for a contiguous CPU tensor, else a host copy. Returns ``t``."""
    view = t.device.type == "cpu" and t.is_contiguous()
    host = t.detach().numpy() if view else t.detach().cpu().contiguous().numpy()
    operation(host)
    if not view:
        with torch.no_grad():
            t.copy_(torch.from_numpy(host).reshape(t.shape))
    return t


def allreduce_(t: torch.Tensor, comm: MPI.Comm) -> torch.Tensor:
    """Sum ``t`` over ``comm`` in place (any device; a contiguous CPU tensor without a copy);
    returns ``t``. Collective."""
    if comm.size == 1:
        return t
    return _through_host(t, lambda host: comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM))


def broadcast_(t: torch.Tensor, comm: MPI.Comm, *, root: int = 0) -> torch.Tensor:
    """Overwrite ``t`` with ``root``'s values, in place (any device); returns ``t``. Collective."""
    if comm.size == 1:
        return t
    return _through_host(t, lambda host: comm.Bcast(host, root=root))


def allgather_rows_(t: torch.Tensor, counts: list[int], comm: MPI.Comm) -> torch.Tensor:
    """Fill every rank's rows of ``t`` (n, ...) from the rank that owns them, in place: rank i
    owns ``counts[i]`` rows, in rank order (any device); returns ``t``. Collective."""
    if comm.size == 1:
        return t
    width = int(np.prod(t.shape[1:], dtype=int))

    def gather(host: np.ndarray) -> None:
        sizes = [c * width for c in counts]
        comm.Allgatherv(MPI.IN_PLACE, [host, sizes, None, from_numpy_dtype(host.dtype)])

    return _through_host(t, gather)


def gram_product(A: torch.Tensor) -> torch.Tensor:
    """``Aᵀ A`` (k, k) for A (n, k), on A's device. Local.

    On the CPU through NumPy, whose product recognises ``Aᵀ A`` and calls BLAS's ``syrk`` (half
    the flops of torch's general product, which ignores the symmetry: measured +23 % on the
    normal equations of a rank-3000 LSR); torch's product elsewhere.
    """
    if A.device.type == "cpu":
        host = A.detach().numpy()
        return torch.from_numpy(host.T @ host)
    return A.T @ A


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a CUDA ``device`` (before reading a clock). Local."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_device_memory(device: torch.device) -> None:
    """Restart the CUDA allocator's peak count of ``device`` (nothing on the CPU). Local."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_device_memory_mb(device: torch.device) -> float | None:
    """Peak memory the CUDA allocator handed out on ``device`` since the last reset, MB
    (``torch.cuda.max_memory_allocated``); None on the CPU (see
    :mod:`pinn_lsr.parallel.memory`). Local."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
