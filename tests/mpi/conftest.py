"""MPI tests run under ``mpirun -n 2``. After each test: collect garbage and synchronise, so
collective PETSc destructors run on every rank together (as DOLFINx's test-suite does)."""

import gc

import pytest
from mpi4py import MPI

from tests.physics.physics_cases import darcy_instances


@pytest.fixture(autouse=True)
def collective_cleanup():
    yield
    gc.collect()
    MPI.COMM_WORLD.Barrier()


@pytest.fixture
def comm():
    if MPI.COMM_WORLD.size < 2:
        pytest.skip("run under mpirun -n 2")
    return MPI.COMM_WORLD


@pytest.fixture
def shared_tmp_path(tmp_path, comm):
    """A temporary folder that is the same on every rank (rank 0's)."""
    return type(tmp_path)(comm.bcast(str(tmp_path), root=0))


@pytest.fixture(scope="module")
def instances():
    """Two 8 × 8 Darcy instances, distributed over the ranks and on this rank alone."""
    pair = {
        name: darcy_instances(c, size=8, n=2)
        for name, c in (("parallel", MPI.COMM_WORLD), ("serial", MPI.COMM_SELF))
    }
    yield pair
    for fem in pair.values():
        fem.destroy()
