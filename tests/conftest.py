"""Shared fixtures. Tests mirror the package layout; tests/mpi runs under ``mpirun -n 2``."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
