"""The command line under 2 ranks: one run directory, rank 0 writes, errors on every rank."""

import json

import pytest
from mpi4py import MPI

from pinn_lsr.run.cli import compose_config, main, run_directory
from tests.run.test_cli import SMALL

# SMALL: no physics stage and (unless a test picks a method) no LSR: the stages under test only


def test_ranks_agree_on_a_time_stamped_run_directory(comm):
    cfg = compose_config(["hydra.run.dir=outputs/${now:%H-%M-%S-%f}"])
    if comm.rank == 1:
        import time

        time.sleep(0.01)  # rank 1 resolving the stamp itself would get another value
    paths = comm.allgather(str(run_directory(cfg, comm)))
    assert paths[0] == paths[1]


def test_run_under_two_ranks(comm, shared_tmp_path):
    code = main(
        [
            f"hydra.run.dir={shared_tmp_path / 'run'}",
            f"data.cache_dir={shared_tmp_path / 'cache'}",
            *SMALL,
            "method=none",
        ]
    )
    assert comm.allgather(code) == [0, 0]
    metrics = json.loads((shared_tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_ranks"] == 2 and metrics["n_dofs"] == 144
    assert metrics["fem"]["distributed_vs_dataset_max_abs_diff"] < 1e-10
    assert (shared_tmp_path / "run" / "fields" / "samples.xdmf").exists()
    assert metrics["train"]["epochs"] == 2 and (shared_tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("override", ["problem=heat", "mesh.file=nowhere.msh", "data.n_tests=1"])
def test_bad_input_fails_on_every_rank_without_hanging(comm, shared_tmp_path, override):
    code = main(
        [
            f"hydra.run.dir={shared_tmp_path / 'run'}",
            f"data.cache_dir={shared_tmp_path / 'cache'}",
            override,
        ]
    )
    assert comm.allgather(code) == [2, 2]
    assert not (shared_tmp_path / "run").exists()


def test_broken_mesh_file_fails_on_every_rank(comm, shared_tmp_path):
    broken = shared_tmp_path / "broken.msh"
    if comm.rank == 0:
        broken.write_text("$MeshFormat\n4.1 0 8\n$EndMeshFormat\n$Nodes\n1 2\n")
    comm.Barrier()
    from pinn_lsr.fem.mesh import read_mesh

    with pytest.raises(ValueError, match="broken.msh"):
        read_mesh(broken, MPI.COMM_WORLD)


def test_lsr_run_under_two_ranks(comm, shared_tmp_path):
    args = [
        f"hydra.run.dir={shared_tmp_path / 'run'}",
        f"data.cache_dir={shared_tmp_path / 'cache'}",
        *SMALL,
        "data.n_train=10",
        "method=lsr",
        "method.rank=6",
    ]
    assert comm.allgather(main(args)) == [0, 0]
    lsr = json.loads((shared_tmp_path / "run" / "metrics.json").read_text())["lsr"]
    assert lsr["n_rows"] == 8 * 144 and 1 <= lsr["rank"] <= 6
    assert lsr["objective"]["linearized"] <= lsr["objective"]["initial"]


def test_resume_is_checked_on_every_rank_before_any_work(comm, shared_tmp_path, monkeypatch):
    args = [
        f"hydra.run.dir={shared_tmp_path / 'run'}",
        f"data.cache_dir={shared_tmp_path / 'cache'}",
        *SMALL,
        "method=none",
        "train.checkpoint_every=1",
    ]
    assert comm.allgather(main(args)) == [0, 0]
    assert comm.allgather(main([*args, "train.resume=true", "train.lr=0.01"])) == [2, 2]
    if comm.rank == 1:  # a check that fails on one rank only fails on both, without a hang
        import pinn_lsr.run.checkpoints

        def unreadable(path):
            raise ValueError(f"checkpoint {path} cannot be read on rank 1")

        monkeypatch.setattr(pinn_lsr.run.checkpoints, "read_checkpoint", unreadable)
    assert comm.allgather(main([*args, "train.resume=true"])) == [2, 2]
    monkeypatch.undo()
    assert comm.allgather(main([*args, "train.resume=true", "train.epochs=3"])) == [0, 0]
    train = json.loads((shared_tmp_path / "run" / "metrics.json").read_text())["train"]
    assert train["resumed"] == {"from_epoch": 2, "changed": {"epochs": [2, 3]}}
