"""A set of FEM instances on the distributed mesh, with what physics refinement and its reports need."""

from dataclasses import dataclass
from functools import cached_property

import dolfinx_solver  # noqa: F401  (orders mpi4py before petsc4py)
import numpy as np
import scipy.sparse
import torch
from mpi4py import MPI
from torch import nn

from pinn_lsr.fem.grid_pde import GridPDE
from pinn_lsr.fem.norms import relative_error
from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.fem.instance import LinearInstance
from pinn_lsr.lsr.physics import PhysicsResidual


@dataclass
class FEMInstances:
    """K instances of one PDE: inputs on the grid, assembled systems, and (optionally) their FEM
    solutions to measure errors against. Owned dof values are this rank's rows."""

    pde: GridPDE  # a LinearPDE or NonlinearPDE
    inputs: np.ndarray  # (K, s, s) input fields on the grid
    systems: list[LinearInstance]
    references: list[np.ndarray] | None  # FEM solutions, owned dofs per instance

    @classmethod
    def create(cls, pde: GridPDE, inputs: np.ndarray, *, solve: bool = True) -> "FEMInstances":
        """Assemble (and with ``solve``, solve) every instance. Collective."""
        systems, references = [], []
        for field in inputs:
            systems.append(pde.instance(field))
            if solve:
                references.append(pde.solve(field).x.array[: pde.n_owned].copy())
        return cls(pde, np.asarray(inputs), systems, references if solve else None)

    @property
    def comm(self) -> MPI.Comm:
        return self.pde.domain.mesh.comm

    def __len__(self) -> int:
        return len(self.systems)

    def subset(self, index: list[int]) -> "FEMInstances":
        """The instances ``index`` (sharing the PETSc objects)."""
        refs = None if self.references is None else [self.references[k] for k in index]
        return FEMInstances(self.pde, self.inputs[index], [self.systems[k] for k in index], refs)

    @cached_property
    def to_dofs(self) -> scipy.sparse.csr_matrix:
        """``P`` on the owned dofs, (n_owned, s*s)."""
        return self.pde.grid_to_owned_dofs()

    def model_inputs(self, model: nn.Module) -> torch.Tensor:
        """The inputs as a tensor of the model's dtype, (K, s, s)."""
        return torch.as_tensor(self.inputs).to(next(model.parameters()).dtype)

    def network_fields(self, model: nn.Module) -> list[np.ndarray]:
        """The model's predictions as owned dof values, per instance. Local."""
        with torch.no_grad():
            grid = model(self.model_inputs(model)).double().numpy().reshape(len(self), -1)
        return [self.to_dofs @ g for g in grid]

    def residual(
        self,
        model: nn.Module,
        *,
        norm: str = "energy",
        chunk_tangents: int = 64,
        evaluate_at: str = "grid",
    ) -> PhysicsResidual:
        """The linearizable FEM residual of ``model``'s predictions on these instances. Collective.

        ``evaluate_at="dofs"`` (DeepONet only): the trunk runs at the owned dof coordinates, so
        ``P`` is the identity (:func:`pinn_lsr.lsr.coupling.dof_point_residual`)."""
        if evaluate_at == "dofs":
            from pinn_lsr.lsr.coupling import dof_point_residual, owned_dof_points

            return dof_point_residual(
                model,
                self.model_inputs(model),
                owned_dof_points(self.pde.V, self.pde.grid),
                self.systems,
                norm=norm,
                comm=self.comm,
                chunk_tangents=chunk_tangents,
            )
        if evaluate_at != "grid":
            raise ValueError(f"evaluate_at must be 'grid' or 'dofs', got {evaluate_at!r}")
        jacobian = ModelJacobian(
            model, self.model_inputs(model), chunk_samples=len(self), chunk_tangents=chunk_tangents
        )
        return PhysicsResidual(jacobian, self.systems, self.to_dofs, norm=norm, comm=self.comm)

    def errors(self, fields: list[np.ndarray]) -> list[float]:
        """Relative L2 errors (mass matrix) of owned dof fields against the FEM solutions. Collective."""
        if self.references is None:
            raise ValueError("these instances were created without FEM solutions (solve=False)")
        mass = self.pde.mass_matrix()
        return [relative_error(mass, u, ref) for u, ref in zip(fields, self.references)]

    def residual_norm(self, fields: list[np.ndarray]) -> float:
        """``sqrt(Σ_k ||A_k u_k − b_k||²)`` over instances and ranks. Collective."""
        local = sum(float(np.sum(s.residual(u) ** 2)) for s, u in zip(self.systems, fields))
        return float(np.sqrt(self.comm.allreduce(local)))

    def on_grid(self, fields: list[np.ndarray]) -> np.ndarray:
        """Owned dof fields -> grid values (K, s, s), identical on all ranks. Collective."""
        return np.stack([self.pde.field_on_grid(u) for u in fields])

    def destroy(self) -> None:
        for system in self.systems:
            system.destroy()
