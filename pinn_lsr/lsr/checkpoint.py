"""Checkpoints of a long LSR run, so that an interrupted large-rank refinement resumes.

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

log = logging.getLogger(__name__)


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A short SHA-256 of the tensors' bytes (to recognise the same θ0 and data)."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class CheckpointStore:
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
                f"the checkpoint directory {directory} holds pieces of a different refinement "
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
