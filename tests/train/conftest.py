import pytest


@pytest.fixture(scope="session")
def darcy_tensors(darcy_samples):
    """24 Darcy samples on an 8 × 8 grid (FEM reference), float64: (inputs (24, 8, 8),
    targets (24, 64))."""
    return darcy_samples(24, 8, 0)
