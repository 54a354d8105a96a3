"""Operator datasets (input field -> FEM solution on the grid), generated across MPI ranks and
cached in one HDF5 file keyed by a hash of every generating setting.

The file is written atomically and carries a SHA-256 checksum of its arrays; a truncated,
corrupt or mismatched cache is reported and regenerated, never used.
"""

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from mpi4py import MPI
from tqdm import tqdm

from pinn_lsr.io.atomic import atomic_path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class OperatorDataset:
    """Pairs of grid fields, identical on every rank.

    Attributes:
        inputs: (n_samples, s, s) float64, the input field (coefficient or source) at grid nodes;
            (n_samples, s) on a 1D grid (evolution problems: the initial condition).
        solutions: (n_samples, s, s) float64, the FEM solution at grid nodes; (n_samples, c, s, s)
            for a vector problem with c components; (n_samples, s) on a 1D grid.
    """

    inputs: np.ndarray
    solutions: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)

    def split(self, n_first: int) -> tuple["OperatorDataset", "OperatorDataset"]:
        """The first ``n_first`` samples and the rest (e.g. train and test)."""
        if not 0 <= n_first <= len(self):
            raise ValueError(f"cannot split {len(self)} samples at {n_first}")
        return (
            OperatorDataset(self.inputs[:n_first], self.solutions[:n_first]),
            OperatorDataset(self.inputs[n_first:], self.solutions[n_first:]),
        )


@dataclass(frozen=True)
class CacheReport:
    """How a dataset was obtained: ``status`` is ``"hit"``, ``"generated"`` or ``"regenerated"``."""

    path: Path
    status: str
    reason: str  # why it was (re)generated, empty on a hit
    seconds: float
    samples_per_second: float  # generation throughput (all ranks), 0 on a hit


def settings_key(settings: Mapping) -> str:
    """A 16-hex-digit hash of the settings (canonical JSON)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _checksum(inputs: np.ndarray, solutions: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (inputs, solutions):
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return digest.hexdigest()


def load_or_generate(
    cache_dir: str | Path,
    settings: Mapping,
    *,
    sample_inputs: Callable[[int, int], np.ndarray],
    solve: Callable[[np.ndarray], np.ndarray],
    comm: MPI.Comm = MPI.COMM_WORLD,
    progress: bool = True,
) -> tuple[OperatorDataset, CacheReport]:
    """Load the cached dataset for ``settings`` or generate and cache it.

    Collective on ``comm``. ``settings`` must hold ``n_samples`` and ``grid_size`` and every
    other value the data depend on (problem parameters, mesh, seed, ...), ``components``
    (c > 1) for a vector problem and ``dim`` (1) for a 1D grid (default 2). Generation splits
    the samples into contiguous blocks, one per rank: ``sample_inputs(first, count)`` returns
    inputs (count, s, s) (1D: (count, s)) and ``solve(input)`` the solution (s, s) (vector:
    (c, s, s); 1D: (s,)) on this rank's own mesh.
    Only rank 0 reads and writes the file.
    """
    start = time.perf_counter()
    n_samples, size = int(settings["n_samples"]), int(settings["grid_size"])
    components = int(settings.get("components", 1))
    grid = (size,) * int(settings.get("dim", 2))
    solution_shape = grid if components == 1 else (components, *grid)  # per sample
    key = settings_key(settings)
    path = (Path(cache_dir) / f"{settings.get('problem', 'data')}-{key}.h5").resolve()

    loaded, reason = (None, "")
    if comm.rank == 0:
        loaded, reason = _read(path, key, (n_samples, *grid), (n_samples, *solution_shape))
    loaded, reason = comm.bcast((loaded, reason), root=0)
    if loaded is not None:
        return loaded, CacheReport(path, "hit", "", time.perf_counter() - start, 0.0)

    status = "generated" if reason == "missing" else "regenerated"
    if status == "regenerated":
        log.warning("dataset cache %s is unusable (%s); regenerating it", path, reason)
    log.info("generating %d samples on %d rank(s) into %s", n_samples, comm.size, path)
    dataset = _generate(n_samples, grid, solution_shape, sample_inputs, solve, comm, progress)
    if comm.rank == 0:
        _write(path, dataset, settings, key)
    comm.Barrier()
    seconds = time.perf_counter() - start
    return dataset, CacheReport(path, status, reason, seconds, n_samples / max(seconds, 1e-12))


def _generate(
    n_samples, grid, solution_shape, sample_inputs, solve, comm, progress
) -> OperatorDataset:
    counts = np.full(comm.size, n_samples // comm.size)
    counts[: n_samples % comm.size] += 1
    first = int(counts[: comm.rank].sum())
    count = int(counts[comm.rank])
    inputs = np.ascontiguousarray(sample_inputs(first, count), dtype=np.float64)
    if inputs.shape != (count, *grid):
        raise ValueError(f"sample_inputs returned shape {inputs.shape}, expected {(count, *grid)}")
    solutions = np.empty((count, *solution_shape))
    bar = tqdm(
        range(count),
        desc="FEM solves (rank 0)",
        disable=not progress or comm.rank != 0,
        mininterval=1.0,
    )
    for i in bar:
        solutions[i] = solve(inputs[i])
    gathered = []
    for local in (inputs, solutions):
        full = np.empty((n_samples, *local.shape[1:]))
        comm.Allgatherv(local, [full, counts * int(np.prod(local.shape[1:]))])
        gathered.append(full)
    if not np.all(np.isfinite(gathered[1])):
        raise FloatingPointError("FEM solutions contain NaN or infinite values")
    return OperatorDataset(*gathered)


def _write(path: Path, dataset: OperatorDataset, settings: Mapping, key: str) -> None:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("inputs", data=dataset.inputs)
            f.create_dataset("solutions", data=dataset.solutions)
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["key"] = key
            f.attrs["settings"] = json.dumps(settings, sort_keys=True, default=str)
            f.attrs["sha256"] = _checksum(dataset.inputs, dataset.solutions)


def _read(
    path: Path, key: str, shape: tuple, solution_shape: tuple
) -> tuple[OperatorDataset | None, str]:
    """Return (dataset, "") or (None, reason it cannot be used). Local."""
    if not path.exists():
        return None, "missing"
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format_version") != FORMAT_VERSION or f.attrs.get("key") != key:
                return None, "written by another version or for other settings"
            inputs, solutions = f["inputs"][()], f["solutions"][()]
            expected_sum = f.attrs["sha256"]
    except (OSError, KeyError, ValueError) as exc:
        return None, f"cannot be read: {exc}"
    if inputs.shape != shape or solutions.shape != solution_shape:
        return (
            None,
            f"shapes {inputs.shape}, {solutions.shape} differ from {shape}, {solution_shape}",
        )
    if _checksum(inputs, solutions) != expected_sum:
        return None, "checksum mismatch"
    return OperatorDataset(inputs, solutions), ""
