"""Squared loss with the final affine layer eliminated in closed form.

With ``A = (scale/√N) [Z(θ), 1]`` (rows: this rank's feature rows; N = rows × outputs over all
ranks) and ``B = (Y − shift)/√N``,

    Φ(θ) = min_W ½‖A Wᵀ − B‖² + (α_W/2)‖W‖² + (α_θ/2)‖θ − θ_ref‖²,

so the data term is half the mean squared error. ``Wᵀ = R₁₁⁻¹ R₁₂`` from the R factor of
``[A B; √α_W I 0]`` (TSQR across ranks, never the normal equations). The reduced residual
``r(θ) = [A Wᵀ − B; √α_W Wᵀ]`` has the Jacobian ``J_red v = [dA Wᵀ + A dWᵀ; √α_W dWᵀ]`` with
``dA = (scale/√N)[J_Z v, 0]`` and, from the normal equations with ``H = AᵀA + α_W I = R₁₁ᵀR₁₁``,

    dWᵀ = −H⁻¹ (dAᵀ E + Aᵀ dA Wᵀ),  E = A Wᵀ − B,

applied matrix-free with the feature Jacobian products of
:class:`~pinn_lsr.vpro.separable.FeatureLinearization` (reverse mode and double reverse mode).
"""

import numpy as np
import torch

from pinn_lsr.parallel.tsqr import tsqr_r
from pinn_lsr.vpro.problem import Point, ReducedProblem


class SquaredPoint(Point):
    """A point of :class:`SquaredProblem` with its local caches."""

    def __init__(self, *, linearization, A, E, Wt, R11, **kwargs):
        super().__init__(**kwargs)
        self.linearization = linearization
        self.A = A  # (n_rows_local, p + 1)
        self.E = E  # (n_rows_local, q), A Wᵀ − B
        self.Wt = Wt  # (p + 1, q)
        self.R11 = R11  # (p + 1, p + 1), H = R11ᵀ R11


class SquaredProblem(ReducedProblem):
    """Reduced mean-squared-error problem (see the module docstring). Collective on ``comm``."""

    def __init__(self, separable, inputs, targets, **kwargs):
        super().__init__(separable, inputs, targets, **kwargs)
        self.Y = separable.rows(targets)
        n_entries = self.comm.allreduce(self.Y.numel())
        self.row_scale = separable.scale / np.sqrt(n_entries)
        self.B = (self.Y - separable.shift) / np.sqrt(n_entries)

    def _solve_weights(self, A: torch.Tensor):
        """R₁₁ and Wᵀ of the regularised least-squares problem in A (local rows)."""
        n_cols, q = A.shape[1], self.B.shape[1]
        augmented = torch.cat([A, self.B], dim=1).numpy()
        R_local = np.linalg.qr(augmented, mode="r") if len(augmented) else np.zeros((0, n_cols + q))
        R = tsqr_r(R_local, self.comm)
        regularization = np.hstack([np.sqrt(self.alpha_W) * np.eye(n_cols), np.zeros((n_cols, q))])
        R = np.linalg.qr(np.vstack([R, regularization]), mode="r")
        R11 = torch.from_numpy(R[:n_cols, :n_cols]).to(A.dtype)
        R12 = torch.from_numpy(R[:n_cols, n_cols:]).to(A.dtype)
        return R11, torch.linalg.solve_triangular(R11, R12, upper=True)

    def _H_inverse(self, R11: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        Y = torch.linalg.solve_triangular(R11.T, X, upper=False)
        return torch.linalg.solve_triangular(R11, Y, upper=True)

    def evaluate(self, theta, start=None) -> SquaredPoint:
        linearization = self.separable.linearize(theta, self.prepared)
        self.count(1)
        Z = linearization.Z
        A = self.row_scale * torch.cat([Z, torch.ones(len(Z), 1, dtype=Z.dtype)], dim=1)
        R11, Wt = self._solve_weights(A)
        E = A @ Wt - self.B
        mse = float(self.allreduce(E.pow(2).sum()))
        objective = (
            0.5 * mse + 0.5 * self.alpha_W * float(Wt.pow(2).sum()) + self.theta_penalty(theta)
        )
        return SquaredPoint(
            theta=theta,
            W=Wt.T.contiguous(),
            objective=objective,
            loss=mse,
            linearization=linearization,
            A=A,
            E=E,
            Wt=Wt,
            R11=R11,
        )

    def _pull(self, point: SquaredPoint, G_A: torch.Tensor) -> torch.Tensor:
        """θ-gradient (m,), summed over ranks, of ⟨G_A, dA⟩ for a cotangent G_A
        (n_rows_local, p + 1)."""
        return self.allreduce(point.linearization.vjp(self.row_scale * G_A[:, :-1]))

    def gradient(self, point: SquaredPoint) -> torch.Tensor:
        self.count(1)
        return self._pull(point, point.E @ point.Wt.T) + self.alpha_theta * (
            point.theta - self.theta_ref
        )

    def reduced_jvp(
        self, point: SquaredPoint, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """J_red v: (dE (n_rows_local, q), √α_W dWᵀ (p + 1, q)). Collective; not counted."""
        dZ = point.linearization.jvp(v)
        dA = self.row_scale * torch.cat([dZ, torch.zeros(len(dZ), 1, dtype=dZ.dtype)], dim=1)
        dWt = -self._H_inverse(
            point.R11, self.allreduce(dA.T @ point.E + point.A.T @ (dA @ point.Wt))
        )
        return dA @ point.Wt + point.A @ dWt, np.sqrt(self.alpha_W) * dWt

    def reduced_vjp(self, point: SquaredPoint, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """J_redᵀ (U, V) for U (n_rows_local, q), V (p + 1, q): (m,), summed over ranks.
        Collective."""
        M = self._H_inverse(point.R11, self.allreduce(point.A.T @ U) + np.sqrt(self.alpha_W) * V)
        G_A = U @ point.Wt.T - point.E @ M.T - point.A @ (M @ point.Wt.T)
        return self._pull(point, G_A)

    def gn_product(self, point: SquaredPoint, v: torch.Tensor) -> torch.Tensor:
        self.count(2)
        return self.reduced_vjp(point, *self.reduced_jvp(point, v)) + self.alpha_theta * v
