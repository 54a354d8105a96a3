"""Norms of P1 fields given by their owned dof values, through an assembled PETSc matrix."""

import numpy as np
from petsc4py import PETSc


def matrix_norm(M: PETSc.Mat, u: np.ndarray) -> float:
    """``sqrt(uᵀ M u)`` for owned dof values ``u`` (M: mass matrix -> L2 norm; stiffness ->
    energy norm). Collective on ``M.comm``."""
    x, y = M.createVecs()
    x.setArray(np.asarray(u, dtype=np.float64))
    M.mult(x, y)
    value = x.dot(y)
    x.destroy()
    y.destroy()
    return float(np.sqrt(max(value, 0.0)))


def relative_error(M: PETSc.Mat, u: np.ndarray, reference: np.ndarray) -> float:
    """``||u − reference||_M / ||reference||_M``. Collective."""
    return matrix_norm(M, u - reference) / matrix_norm(M, reference)
