"""Cross-entropy (softmax) loss with the final affine layer eliminated by an inner
Newton–Krylov solve.

With ``A = scale · [Z(θ), 1]`` (rows: this rank's samples), logits ``O = A Wᵀ`` (n, C),
probabilities ``S = softmax(O)`` and one-hot labels ``Y``,

    Φ(θ) = min_W (1/n) Σ_i [logsumexp(o_i) − o_i·y_i] + (α_W/2)‖W‖² + (α_θ/2)‖θ − θ_ref‖²,

n the global sample count. For fixed θ the problem in W is strictly convex (α_W > 0) and is
solved by Newton's method with CG on ``H_W[V] = Aᵀ Λ(A V)/n + α_W V`` (``Λ(X)_i = s_i ⊙ x_i −
s_i (s_iᵀ x_i)``, the softmax curvature) and Armijo backtracking, warm-started from the previous W,
until ``‖∇_W‖ ≤ inner_tol``. The sensitivity of W(θ) comes from differentiating ``∇_W = 0``:

    H_W dWᵀ = −(1/n)[Aᵀ Λ(dA Wᵀ) + dAᵀ (S − Y)],

solved with a Cholesky factor of H_W formed once per point (size C·(p+1), small next to the
data). The outer Gauss–Newton matrix is ``J_redᵀ diag(Λ/n, I) J_red + α_θ I`` with
``J_red v = [dA Wᵀ + A dWᵀ; √α_W dWᵀ]``.
"""

import math

import torch
from mpi4py import MPI

from pinn_lsr.vpro.krylov import lanczos
from pinn_lsr.vpro.problem import Point, ReducedProblem
from pinn_lsr.vpro.separable import LinearWeights


class CrossEntropyPoint(Point):
    """A point of :class:`CrossEntropyProblem` with its local caches."""

    def __init__(self, *, linearization, A, S, Wt, cholesky, **kwargs):
        super().__init__(**kwargs)
        self.linearization = linearization
        self.A = A  # (n_local, p + 1)
        self.S = S  # (n_local, C) softmax probabilities
        self.Wt = Wt  # (p + 1, C)
        # lower factor of H_W, ((p + 1)·C, (p + 1)·C), vec in row-major (p + 1, C) order
        self.cholesky = cholesky


def softmax_curvature(S: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Λ(X): rows s_i ⊙ x_i − s_i (s_iᵀ x_i) for S, X (n, C)."""
    return S * X - S * (S * X).sum(dim=1, keepdim=True)


class CrossEntropyProblem(ReducedProblem):
    """Reduced softmax cross-entropy problem (see the module docstring). Collective on ``comm``.

    ``targets`` are class indices (n_local,) in ``[0, C)``, C = the final layer's outputs.
    ``inner`` holds the inner solve's settings: ``tol``, ``max_iterations``, ``krylov_rtol``,
    ``krylov_max_iterations``.
    """

    def __init__(self, separable, inputs, targets, *, inner: dict | None = None, **kwargs):
        super().__init__(separable, inputs, targets, **kwargs)
        self.inner = {
            "tol": 1e-10,
            "max_iterations": 50,
            "krylov_rtol": 1e-2,
            "krylov_max_iterations": 200,
            **(inner or {}),
        }
        if separable.has_right or separable.offset is not None:
            raise ValueError(
                "the cross-entropy loss needs a model whose outputs (the logits) are affine in its "
                "last layer (an MLP, an nn.Sequential); this model has right features or an offset"
            )
        n_classes = separable.n_right
        labels = targets.reshape(-1)
        if labels.dtype.is_floating_point or len(labels) != len(inputs):
            raise ValueError(
                f"cross-entropy targets must be integer class indices of shape ({len(inputs)},), "
                f"got {tuple(targets.shape)} {targets.dtype}"
            )
        if not self.comm.allreduce(bool(((labels >= 0) & (labels < n_classes)).all()), op=MPI.LAND):
            raise ValueError(f"class indices must lie in [0, {n_classes}) (the model's outputs)")
        self.Y = torch.nn.functional.one_hot(labels.long(), n_classes).to(separable.theta().dtype)

    def subset(self, samples):
        problem = super().subset(samples)
        problem.inner = self.inner
        return problem

    def _objective_W(self, A: torch.Tensor, Wt: torch.Tensor) -> tuple[float, torch.Tensor, float]:
        """(data term, S, ½α_W‖W‖²) at W."""
        logits = A @ Wt
        data = (
            float(
                self.allreduce(
                    (torch.logsumexp(logits, dim=1) - (logits * self.Y).sum(dim=1)).sum()
                )
            )
            / self.n_samples
        )
        return data, torch.softmax(logits, dim=1), 0.5 * self.alpha_W * float(Wt.pow(2).sum())

    def _hessian_W(self, A, S, V):
        return self.allreduce(A.T @ softmax_curvature(S, A @ V)) / self.n_samples + self.alpha_W * V

    def solve_weights(self, A: torch.Tensor, Wt: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Newton–CG on W from ``Wt`` (p + 1, C): (W(θ)ᵀ, facts: iterations, gradient norm,
        converged)."""
        data, S, penalty = self._objective_W(A, Wt)
        iterations = 0
        for iterations in range(self.inner["max_iterations"] + 1):
            grad = self.allreduce(A.T @ (S - self.Y)) / self.n_samples + self.alpha_W * Wt
            grad_norm = float(grad.norm())
            if grad_norm <= self.inner["tol"] or iterations == self.inner["max_iterations"]:
                break
            basis = lanczos(
                lambda v: self._hessian_W(A, S, v.reshape(Wt.shape)).reshape(-1),
                grad.reshape(-1),
                rtol=self.inner["krylov_rtol"],
                max_iterations=self.inner["krylov_max_iterations"],
            )
            step = basis.solve().step.reshape(Wt.shape)
            slope = float((grad * step).sum())
            t = 1.0
            while t > 1e-10:
                trial_data, trial_S, trial_penalty = self._objective_W(A, Wt + t * step)
                if trial_data + trial_penalty <= data + penalty + 1e-4 * t * slope:
                    break
                t *= 0.5
            Wt, data, S, penalty = Wt + t * step, trial_data, trial_S, trial_penalty
        facts = {
            "w_iterations": iterations,
            "w_gradient_norm": grad_norm,
            "w_converged": grad_norm <= self.inner["tol"],
        }
        return Wt, facts

    def evaluate(self, theta, start=None) -> CrossEntropyPoint:
        linearization = self.separable.linearize(theta, self.prepared)
        self.count(1)
        Z = linearization.values[0]
        A = self.separable.scale * torch.cat([Z, torch.ones(len(Z), 1, dtype=Z.dtype)], dim=1)
        Wt0 = (start.weights if start is not None else self.separable.weights()).W.to(Z.dtype).T
        Wt, facts = self.solve_weights(A, Wt0.contiguous())
        data, S, penalty = self._objective_W(A, Wt)
        return CrossEntropyPoint(
            theta=theta,
            weights=LinearWeights(Wt.T.contiguous(), None),
            objective=data + penalty + self.theta_penalty(theta),
            loss=data,
            info=facts,
            linearization=linearization,
            A=A,
            S=S,
            Wt=Wt,
            cholesky=self._factor_hessian(A, S),
        )

    def _factor_hessian(self, A: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """Lower Cholesky factor of H_W in the row-major vec of (p + 1, C)."""
        n_cols, n_classes = A.shape[1], S.shape[1]
        Lam = torch.diag_embed(S) - S[:, :, None] * S[:, None, :]  # (n, C, C)
        AA = (A[:, :, None] * A[:, None, :]).reshape(len(A), -1)  # (n, (p+1)²)
        H = (
            self.allreduce(AA.T @ Lam.reshape(len(A), -1)) / self.n_samples
        )  # ((p+1)², C²) as [j,k],[c,d]
        H = (
            H.reshape(n_cols, n_cols, n_classes, n_classes)
            .permute(0, 2, 1, 3)
            .reshape(n_cols * n_classes, -1)
        )
        H = H + self.alpha_W * torch.eye(len(H), dtype=H.dtype)
        return torch.linalg.cholesky(0.5 * (H + H.T))

    def _H_inverse(self, point: CrossEntropyPoint, X: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_solve(X.reshape(-1, 1), point.cholesky).reshape(X.shape)

    def _pull(self, point, G_A):
        return self.allreduce(point.linearization.vjp((self.separable.scale * G_A[:, :-1],)))

    def gradient(self, point: CrossEntropyPoint) -> torch.Tensor:
        self.count(1)
        G_A = (point.S - self.Y) @ point.Wt.T / self.n_samples
        return self._pull(point, G_A) + self.alpha_theta * (point.theta - self.theta_ref)

    def reduced_jvp(
        self, point: CrossEntropyPoint, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """J_red v: (dO (n_local, C), √α_W dWᵀ (p + 1, C)). Collective; not counted."""
        (dZ,) = point.linearization.jvp(v)
        dA = self.separable.scale * torch.cat([dZ, torch.zeros(len(dZ), 1, dtype=dZ.dtype)], dim=1)
        rhs = self.allreduce(
            point.A.T @ softmax_curvature(point.S, dA @ point.Wt) + dA.T @ (point.S - self.Y)
        )
        dWt = -self._H_inverse(point, rhs / self.n_samples)
        return dA @ point.Wt + point.A @ dWt, math.sqrt(self.alpha_W) * dWt

    def reduced_vjp(
        self, point: CrossEntropyPoint, U: torch.Tensor, V: torch.Tensor
    ) -> torch.Tensor:
        """J_redᵀ (U, V) for U (n_local, C), V (p + 1, C): (m,), summed over ranks. Collective."""
        M = self._H_inverse(point, self.allreduce(point.A.T @ U) + math.sqrt(self.alpha_W) * V)
        G_A = (
            U @ point.Wt.T
            - (softmax_curvature(point.S, point.A @ M) @ point.Wt.T + (point.S - self.Y) @ M.T)
            / self.n_samples
        )
        return self._pull(point, G_A)

    def gn_product(self, point: CrossEntropyPoint, v: torch.Tensor) -> torch.Tensor:
        self.count(2)
        dO, dW = self.reduced_jvp(point, v)
        return (
            self.reduced_vjp(point, softmax_curvature(point.S, dO) / self.n_samples, dW)
            + self.alpha_theta * v
        )
