"""One FEM instance as the physics refinement sees it: a residual ``F(u)`` on the owned rows, a
linearization ``A = ∂F/∂u`` at a chosen field, products with ``A`` by PETSc, and an optional
SPD weighting ``S`` (the norm of ``norm="dual"``)."""

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

import dolfinx.fem
import dolfinx.fem.petsc
from pinn_lsr.fem.solver import DIRECT_SOLVER_OPTIONS, create_ksp, solve_checked


def dense_matrix(X: np.ndarray, comm: MPI.Comm) -> PETSc.Mat:
    """A PETSc dense matrix with this rank's rows ``X`` (n_local, k)."""
    D = PETSc.Mat().createDense(
        ((X.shape[0], PETSc.DETERMINE), (PETSc.DECIDE, X.shape[1])),
        array=np.asfortranarray(X, dtype=np.float64),
        comm=comm,
    )
    D.assemble()
    return D


class LinearInstance:
    """``F(u) = A u − b`` (owned rows), with an optional SPD weighting ``S``. Owns the PETSc
    objects (see :meth:`destroy`)."""

    def __init__(self, A: PETSc.Mat, b: PETSc.Vec | None, weight: PETSc.Mat | None = None):
        self.A, self.b, self.weight = A, b, weight
        self._weight_ksp = None

    def linearize(self, u: np.ndarray) -> None:
        """Nothing to do: ``A`` does not depend on ``u``."""

    def residual(self, u: np.ndarray) -> np.ndarray:
        """``A u − b`` on the owned rows for owned dof values ``u``. Collective."""
        return (
            self.apply(np.asarray(u, dtype=np.float64)[:, None])[:, 0]
            - self.b.getArray(readonly=True)[: len(u)]
        )

    def apply(self, X: np.ndarray, *, transpose: bool = False) -> np.ndarray:
        """``A X`` (or ``Aᵀ X``) for owned rows ``X`` (n_owned, k) by PETSc MatMatMult.
        Collective."""
        D = dense_matrix(X, self.A.comm)
        product = self.A.transposeMatMult(D) if transpose else self.A.matMult(D)
        result = product.getDenseArray().copy()
        D.destroy()
        product.destroy()
        return result

    def solve_weight(self, X: np.ndarray) -> np.ndarray:
        """``S⁻¹ X`` (n_owned, k) by a direct solve (MUMPS, prefix ``physics_weight_``), the
        solver factorised on first use and kept (:meth:`release_weight_solver`). Collective."""
        if self.weight is None:
            raise ValueError("norm='dual' needs an SPD weighting operator S on every instance")
        if self._weight_ksp is None:
            self._weight_ksp = create_ksp(
                self.A.comm, prefix="physics_weight_", options=DIRECT_SOLVER_OPTIONS
            )
        self._weight_ksp.setOperators(self.weight)
        x, y = self.weight.createVecs()
        out = np.empty_like(X)
        for j in range(X.shape[1]):
            y.setArray(X[:, j])
            solve_checked(self._weight_ksp, y, x)
            out[:, j] = x.getArray(readonly=True)
        x.destroy()
        y.destroy()
        return out

    def release_weight_solver(self) -> None:
        """Free the solver :meth:`solve_weight` made (a later call makes a new one), keeping
        ``A``, ``b`` and ``S``: for systems whose PETSc objects belong to someone else.
        Collective."""
        if self._weight_ksp is not None:
            self._weight_ksp.destroy()
            self._weight_ksp = None

    def destroy(self) -> None:
        """Free the PETSc objects (``A``, ``b``, ``S`` and the weight solver). Collective."""
        for obj in (self.A, self.b, self.weight, self._weight_ksp):
            if obj is not None:
                obj.destroy()


class NonlinearInstance(LinearInstance):
    """``F(u)`` of a :class:`~pinn_lsr.fem.nonlinear_pde.NonlinearPDE` for one input field; ``A``
    is the Jacobian ``∂F/∂u`` and ``S`` the SPD weighting at the field of the last
    :meth:`linearize`."""

    def __init__(self, pde, grid_values: np.ndarray):
        pde.set_input(grid_values)
        self.pde = pde
        self.input_values = pde.input.x.array.copy()
        super().__init__(
            dolfinx.fem.petsc.create_matrix(pde.J), None, dolfinx.fem.petsc.create_matrix(pde.S)
        )
        self._F = dolfinx.fem.petsc.create_vector(pde.V)

    def _set_state(self, u: np.ndarray) -> None:
        self.pde.input.x.array[:] = self.input_values
        self.pde.set_state(u)

    def linearize(self, u: np.ndarray) -> None:
        """Assemble ``A = ∂F/∂u(u)`` and ``S(u)`` (Dirichlet rows: identity). Collective."""
        self._set_state(u)
        self.pde.assemble_jacobian(self.A)
        self.pde.assemble_weight(self.weight)

    def residual(self, u: np.ndarray) -> np.ndarray:
        """``F(u)`` on the owned rows (see :meth:`NonlinearPDE.assemble_residual`). Collective."""
        self._set_state(u)
        return self.pde.assemble_residual(self._F)[: len(u)].copy()

    def destroy(self) -> None:
        super().destroy()
        self._F.destroy()
