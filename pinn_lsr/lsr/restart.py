"""Restart files of a long LSR run, so that an interrupted large-rank refinement resumes.

Each MPI rank keeps its own pieces (its rows of the sketch, the reduced factor so far) under
``<directory>/rank<k>of<size>/``; every file is written atomically, so a file present is a file
complete. A fingerprint of the run (settings, sizes, hashes of θ0 and of the residual at θ0)
is stored with them: a directory holding another run's pieces is an error, never silently mixed.
"""

import hashlib
import json
import logging
from pathlib import Path

import torch
from mpi4py import MPI

from pinn_lsr.io.atomic import atomic_path, write_json
from pinn_lsr.lsr.settings import LSRSettings

log = logging.getLogger(__name__)


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A short SHA-256 of the tensors' bytes (to recognise the same θ0 and data)."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class RestartStore:
    """Named tensors of one refinement on this rank. Collective construction.

    Args:
        directory: where the pieces live (created if needed).
        fingerprint: JSON-serialisable description of the run; resuming needs an equal one.
        comm: the refinement's communicator (each rank has its own folder).

    Raises:
        ValueError: on every rank, when the directory holds pieces of a different run.
    """

    def __init__(self, directory: str | Path, fingerprint: dict, comm: MPI.Comm = MPI.COMM_WORLD):
        self.folder = Path(directory) / f"rank{comm.rank}of{comm.size}"
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = self.folder / "fingerprint.json"
        fingerprint = json.loads(json.dumps(fingerprint))
        mismatch = stamp.exists() and json.loads(stamp.read_text()) != fingerprint
        if comm.allreduce(mismatch, op=MPI.LOR):
            raise ValueError(
                f"the restart directory {directory} holds pieces of a different refinement "
                f"(other settings, data or model); remove it or choose another directory"
            )
        if not stamp.exists():
            write_json(stamp, fingerprint)
        self.comm = comm
        self.resumed = 0  # pieces read back so far

    def load(self, name: str) -> torch.Tensor | dict | None:
        """The piece saved under ``name``, or None on every rank unless every rank has it (a run
        killed between two ranks' writes recomputes that piece everywhere). Collective."""
        path = self.folder / f"{name}.pt"
        if not self.comm.allreduce(path.exists(), op=MPI.LAND):
            return None
        self.resumed += 1
        return torch.load(path, weights_only=False)

    def save(self, name: str, value: torch.Tensor | dict) -> None:
        """Write a piece atomically. Local."""
        with atomic_path(self.folder / f"{name}.pt") as tmp:
            torch.save(value, tmp)


def open_restart_store(
    settings: LSRSettings,
    rank: int,
    *,
    n_rows: int,
    index: torch.Tensor,
    theta0: torch.Tensor,
    f0: torch.Tensor,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> RestartStore | None:
    """The store of a refinement in ``settings.restart_dir`` (None without one), fingerprinted
    by the settings that shape its pieces, this rank's row count ``n_rows`` and hashes of the
    parameter selection ``index``, of θ0 and of the residual ``f0`` at θ0. Collective.

    Raises:
        ValueError: on every rank, when the directory holds pieces of a different run.
    """
    if settings.restart_dir is None:
        return None
    fingerprint = {
        "rank": rank,
        "oversampling": settings.oversampling,
        "power_iterations": settings.power_iterations,
        "distribution": settings.distribution,
        "scaled": settings.scaled,
        "seed": settings.seed,
        "row_fraction": settings.row_fraction,
        "subspace": settings.subspace,
        "reduction": settings.reduction,
        "block_columns": settings.block_columns,
        "n_rows": n_rows,
        "index": tensor_digest(index),
        "theta0": tensor_digest(theta0),
        "f0": tensor_digest(f0),
    }
    return RestartStore(settings.restart_dir, fingerprint, comm)
