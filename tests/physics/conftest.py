"""Fixtures of the physics tests (serial)."""

import pytest
from mpi4py import MPI

from tests.physics.physics_cases import darcy_instances


@pytest.fixture(scope="module")
def fem():
    """Two 6 × 6 Darcy instances with their FEM solutions, on this rank alone."""
    instances = darcy_instances(MPI.COMM_SELF, size=6, n=2)
    yield instances
    instances.destroy()
