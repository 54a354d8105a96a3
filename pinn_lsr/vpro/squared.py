"""Squared loss with the linear weights ``(W, β)`` eliminated in closed form, Kronecker-structured.

Rows are this rank's samples i, columns the output values x of a sample. With the left features
``H = [h(θ), 1]`` (n_local, p + 1), the right features ``T = t(θ)`` (n_values, L) (the identity
I_L when the model has none: the affine case), ``c = scale/√N`` and ``B = (Y − shift)/√N`` (N the
number of target entries over all ranks; see :mod:`pinn_lsr.vpro.separable`), the model is the
linear map

    D(W, β) = c (H Wᵀ Tᵀ + β 1 1ᵀ)   (n_local, n_values),   W (L, p + 1), β scalar or absent,

whose matrix on vec(W) (rows (i, x), columns (l, j)) is the Kronecker product c T ⊗ H, never
formed, and

    Φ(θ) = min_{W, β} ½‖D(W, β) − B‖² + (α_W/2)(‖W‖² + β²) + (α_θ/2)‖θ − θ_ref‖²,

so the data term is half the mean squared error.

**Solve.** ``H = U_H S_H V_Hᵀ`` through the R factor of ``[H, B U_T, 1]`` (TSQR across ranks,
never HᵀH) and ``T = U_T S_T V_Tᵀ`` (replicated on every rank). In these bases the normal operator
of W, ``N_W = D_Wᵀ D_W + α_W I``, is diagonal:

    V_Tᵀ N_W[X] V_H = F ⊙ (V_Tᵀ X V_H),   F_lj = c² s_T,l² s_H,j² + α_W,

and ``V_Tᵀ D_Wᵀ[R] V_H = c s_T s_Hᵀ ⊙ (U_Tᵀ Rᵀ U_H)``, so ``W_0 = N_W⁻¹ D_Wᵀ B`` is the
Tikhonov-filtered SVD solution (the filter factors of the singular values ``c s_T,l s_H,j`` of the
design). The offset's column ``c 1 1ᵀ`` couples to W through one vector: with
``W_1 = N_W⁻¹ D_Wᵀ[c 1 1ᵀ]``, ``r_0 = D_W W_0 − B``, ``r_1 = c 1 1ᵀ − D_W W_1``,

    β = −(⟨r_0, r_1⟩ − α_W⟨W_0, W_1⟩)/σ,   σ = ‖r_1‖² + α_W‖W_1‖² + α_W,   W = W_0 − β W_1,

σ the Schur complement of N_W in the joint normal operator N (computed from residuals, not by
cancellation), which gives N⁻¹ by block elimination.

**Reduced Jacobian.** With ``w = (W, β)``, ``E = D(w) − B`` and ``dD[w] = c (dH Wᵀ Tᵀ + H Wᵀ dTᵀ)``
(dH, dT from the feature Jacobian products of
:class:`~pinn_lsr.vpro.separable.FeatureLinearization`; dT = 0 in the affine case), the reduced
residual ``r(θ) = [E; √α_W w]`` has ``J_red v = [dD[w] + D(dw); √α_W dw]`` with, from the normal
equations,

    dw = −N⁻¹ (dDᵀ E + Dᵀ dD[w]),

and ``J_redᵀ (U, V) = pull(U − D(M), w) − pull(E, M)``, ``M = N⁻¹(Dᵀ U + √α_W V)``, where
``pull(R, w)`` is the θ-gradient of ⟨R, dD[w]⟩ (one backward pass). The gradient is
``pull(E, w) + α_θ(θ − θ_ref)`` (variable projection: W(θ) is optimal).
"""

import numpy as np
import torch

from pinn_lsr.parallel.tsqr import tsqr_r
from pinn_lsr.vpro.problem import Point, ReducedProblem
from pinn_lsr.vpro.separable import LinearWeights


def _divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, 0 where the denominator is 0 (α_W = 0 on a null direction: the
    minimum-norm solution)."""
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, numerator / safe, torch.zeros_like(numerator))


class KroneckerNormal:
    """``N_W = D_Wᵀ D_W + α_W I`` on W (L, p + 1) in the singular bases of H and T. Local (its
    factors are the same on every rank).

    Args:
        V_H: (p + 1, p + 1) right singular vectors of H; s_H: (p + 1,) its singular values,
            zero-padded.
        V_T: (L, L) right singular vectors of T; s_T: (L,) zero-padded.
        c: the design's scale. alpha: α_W.
    """

    def __init__(self, V_H, s_H, V_T, s_T, c: float, alpha: float):
        self.V_H, self.V_T = V_H, V_T
        self.gain = c * s_T[:, None] * s_H[None, :]  # (L, p + 1), singular values of D_W
        self.filter = self.gain**2 + alpha  # (L, p + 1), eigenvalues of N_W

    def inverse(self, X: torch.Tensor) -> torch.Tensor:
        """N_W⁻¹ X for X (L, p + 1)."""
        return self.V_T @ _divide(self.V_T.T @ X @ self.V_H, self.filter) @ self.V_H.T

    def solve_data(self, C: torch.Tensor) -> torch.Tensor:
        """N_W⁻¹ D_Wᵀ X from ``C = U_Tᵀ Xᵀ U_H`` (L, p + 1), X's coefficients in the left singular
        bases: the Tikhonov-filtered solution of D_W W ≈ X."""
        return self.V_T @ _divide(self.gain * C, self.filter) @ self.V_H.T


class SquaredPoint(Point):
    """A point of :class:`SquaredProblem` with its local caches."""

    def __init__(self, *, linearization, H, T, E, normal, W1, sigma, **kwargs):
        super().__init__(**kwargs)
        self.linearization = linearization
        self.H = H  # (n_local, p + 1), [h, 1]
        self.T = T  # (n_values, L), right features or the identity
        self.E = E  # (n_local, n_values), D(w) − B
        self.normal = normal  # KroneckerNormal
        self.W1 = W1  # (L, p + 1), N_W⁻¹ D_Wᵀ[c 1 1ᵀ]; None without an offset
        self.sigma = sigma  # the Schur complement of N_W in N; None without an offset


class SquaredProblem(ReducedProblem):
    """Reduced mean-squared-error problem (see the module docstring). Collective on ``comm``."""

    def __init__(self, separable, inputs, targets, **kwargs):
        super().__init__(separable, inputs, targets, **kwargs)
        self.Y = separable.rows(targets)
        n_entries = self.comm.allreduce(self.Y.numel())
        self.c = separable.scale / np.sqrt(n_entries)
        self.B = (self.Y - separable.shift) / np.sqrt(n_entries)
        self.has_offset = separable.offset is not None

    # ------------------------------------------------------------------ the linear map D
    def _apply(self, H: torch.Tensor, T: torch.Tensor, W: torch.Tensor, beta) -> torch.Tensor:
        """D(W, β): (n_local, n_values)."""
        out = self.c * (H @ W.T @ T.T)
        return out + self.c * beta if beta is not None else out

    def _adjoint(self, W_local: torch.Tensor, R: torch.Tensor | None):
        """Sum over ranks of (W_local (L, p + 1), c·ΣR) (the offset's part of an adjoint); β
        None without an offset. One allreduce."""
        if not self.has_offset:
            return self.allreduce(W_local), None
        flat = self.allreduce(torch.cat([W_local.reshape(-1), (self.c * R.sum()).reshape(1)]))
        return flat[:-1].reshape(W_local.shape), flat[-1]

    def _inverse(self, point: SquaredPoint, X: torch.Tensor, x_beta):
        """N⁻¹ (X, x_β) by block elimination (module docstring)."""
        Y = point.normal.inverse(X)
        if x_beta is None:
            return Y, None
        y_beta = (x_beta - (point.W1 * X).sum()) / point.sigma
        return Y - point.W1 * y_beta, y_beta

    def _flat(self, W: torch.Tensor, beta) -> torch.Tensor:
        return W.reshape(-1) if beta is None else torch.cat([W.reshape(-1), beta.reshape(1)])

    # ------------------------------------------------------------------ W(θ)
    def evaluate(self, theta, start=None) -> SquaredPoint:
        linearization = self.separable.linearize(theta, self.prepared)
        self.count(1)
        h = linearization.values[0]
        dtype = h.dtype
        H = torch.cat([h, torch.ones(len(h), 1, dtype=dtype)], dim=1)
        T = (
            linearization.values[1]
            if self.separable.has_right
            else torch.eye(self.separable.n_right, dtype=dtype)
        )
        n_cols, L = H.shape[1], T.shape[1]
        U_T, s_T, Vh_T = np.linalg.svd(T.numpy(), full_matrices=len(T) < L)
        k_T = len(s_T)
        s_T = np.concatenate([s_T, np.zeros(L - k_T)])
        # R factor of [H, B U_T, 1]: H's singular bases and the data's coefficients in them
        augmented = np.hstack([H.numpy(), self.B.numpy() @ U_T, np.ones((len(H), 1))])
        width = augmented.shape[1]
        R_local = np.linalg.qr(augmented, mode="r") if len(augmented) else np.zeros((0, width))
        R = tsqr_r(R_local, self.comm)
        R = np.vstack([R, np.zeros((width - len(R), width))])
        U_R, s_H, Vh_H = np.linalg.svd(R[:n_cols, :n_cols])
        coefficients = U_R.T @ R[:n_cols, n_cols:]  # U_Hᵀ [B U_T, 1]
        C_B = np.zeros((L, n_cols))
        C_B[:k_T] = coefficients[:, :k_T].T

        def tensor(array):
            return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)

        normal = KroneckerNormal(
            tensor(Vh_H.T), tensor(s_H), tensor(Vh_T.T), tensor(s_T), self.c, self.alpha_W
        )
        W = normal.solve_data(tensor(C_B))
        E = self._apply(H, T, W, None) - self.B
        beta = W1 = sigma = None
        if self.has_offset:
            ones_T = np.zeros(L)
            ones_T[:k_T] = U_T.sum(axis=0)  # U_Tᵀ 1
            C_1 = self.c * np.outer(ones_T, coefficients[:, -1])  # U_Tᵀ (c 1 1ᵀ)ᵀ U_H
            W1 = normal.solve_data(tensor(C_1))
            r1 = self.c - self._apply(H, T, W1, None)
            sums = self.allreduce(torch.stack([(E * r1).sum(), r1.pow(2).sum()]))
            sigma = sums[1] + self.alpha_W * (W1.pow(2).sum() + 1.0)
            beta = -(sums[0] - self.alpha_W * (W * W1).sum()) / sigma
            W, E = W - beta * W1, E + beta * r1
        mse = float(self.allreduce(E.pow(2).sum()))
        penalty = float(W.pow(2).sum() + (beta**2 if beta is not None else 0.0))
        return SquaredPoint(
            theta=theta,
            weights=LinearWeights(W.contiguous(), beta),
            objective=0.5 * mse + 0.5 * self.alpha_W * penalty + self.theta_penalty(theta),
            loss=mse,
            linearization=linearization,
            H=H,
            T=T,
            E=E,
            normal=normal,
            W1=W1,
            sigma=sigma,
        )

    # ------------------------------------------------------------------ derivatives
    def _cotangents(self, point: SquaredPoint, R: torch.Tensor, W: torch.Tensor):
        """Cotangents on the features (h, and t where the model has it) of ⟨R, dD[W]⟩."""
        G_h = self.c * (R @ point.T @ W[:, :-1])
        if not self.separable.has_right:
            return (G_h,)
        return G_h, self.c * (R.T @ point.H @ W.T)

    def _pull(self, point: SquaredPoint, pairs) -> torch.Tensor:
        """θ-gradient (m,), summed over ranks, of Σ ⟨R, dD[W]⟩ over the pairs (R, W)."""
        cotangents = [self._cotangents(point, R, W) for R, W in pairs]
        total = tuple(sum(parts) for parts in zip(*cotangents))
        return self.allreduce(point.linearization.vjp(total))

    def gradient(self, point: SquaredPoint) -> torch.Tensor:
        self.count(1)
        return self._pull(point, [(point.E, point.weights.W)]) + self.alpha_theta * (
            point.theta - self.theta_ref
        )

    def reduced_jvp(
        self, point: SquaredPoint, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """J_red v: (dE (n_local, n_values), √α_W dw (L (p + 1) [+ 1],), dw = (vec dW, dβ)).
        Collective; not counted."""
        W, H, T, E = point.weights.W, point.H, point.T, point.E
        dvalues = point.linearization.jvp(v)
        dH = torch.cat([dvalues[0], torch.zeros(len(H), 1, dtype=H.dtype)], dim=1)
        dDw = self.c * (dH @ W.T @ T.T)
        X = T.T @ (E.T @ dH)  # (dD)ᵀ E without the factor c ...
        if self.separable.has_right:
            dT = dvalues[1]
            dDw = dDw + self.c * (H @ W.T @ dT.T)
            X = X + dT.T @ (E.T @ H)
        X = self.c * (X + T.T @ (dDw.T @ H))  # ... plus Dᵀ dD[w]
        dW, dbeta = self._inverse(point, *self._adjoint(X, dDw))
        dW, dbeta = -dW, (-dbeta if dbeta is not None else None)
        return dDw + self._apply(H, T, dW, dbeta), np.sqrt(self.alpha_W) * self._flat(dW, dbeta)

    def reduced_vjp(self, point: SquaredPoint, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """J_redᵀ (U, V) for U (n_local, n_values), V (L (p + 1) [+ 1],): (m,), summed over ranks.
        Collective."""
        X, x_beta = self._adjoint(self.c * (point.T.T @ U.T @ point.H), U)
        n_W = X.numel()
        X = X + np.sqrt(self.alpha_W) * V[:n_W].reshape(X.shape)
        if x_beta is not None:
            x_beta = x_beta + np.sqrt(self.alpha_W) * V[n_W]
        M, m_beta = self._inverse(point, X, x_beta)
        return self._pull(
            point,
            [(U - self._apply(point.H, point.T, M, m_beta), point.weights.W), (-point.E, M)],
        )

    def gn_product(self, point: SquaredPoint, v: torch.Tensor) -> torch.Tensor:
        self.count(2)
        return self.reduced_vjp(point, *self.reduced_jvp(point, v)) + self.alpha_theta * v
