"""Jacobian products of a model's outputs with respect to (a subset of) its real parameters.

``q(θ)``: the model's outputs on a set of inputs, flattened to ``n`` rows; ``θ``: ``m`` selected
real parameters (complex ones as (real, imaginary) pairs, see
:func:`pinn_lsr.models.parameters.real_parameters`); ``J = ∂q/∂θ`` (n × m) is never formed:

* :meth:`ModelJacobian.jvp` computes ``J T`` for many tangents (forward mode, ``torch.func.jvp``
  vectorised with ``vmap``),
* :meth:`ModelJacobian.vjp` computes ``Jᵀ W`` for many cotangents (reverse mode),

both in chunks of samples and of tangents, so memory stays bounded. Local: rows are this rank's.
Products run where the model's parameters live (``device``; the inputs must be there too), and
tangents / cotangents are moved there.
"""

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jvp, vjp, vmap

from pinn_lsr.models.parameters import as_model_parameters, real_parameters


def select_parameters(
    model: nn.Module,
    *,
    names: Sequence[str] | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Indices into the flat real parameter vector of the parameters LSR may change.

    ``names``: parameter names or name prefixes (e.g. ``["net.4"]`` for one layer); ``fraction``:
    a random fraction p of the remaining entries (the same on every rank for one ``seed``).
    Default: all. Returns an int64 tensor, sorted.
    """
    real = real_parameters(model)
    offsets = np.cumsum([0] + [t.numel() for t in real.values()])
    if names is None:
        index = np.arange(offsets[-1])
    else:
        chosen = [
            k
            for k, name in enumerate(real)
            if any(name == n or name.startswith(n + ".") for n in names)
        ]
        if not chosen:
            raise ValueError(f"no parameter matches {list(names)}; parameters are {list(real)}")
        index = np.concatenate([np.arange(offsets[k], offsets[k + 1]) for k in chosen])
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        keep = np.random.default_rng(seed).random(len(index)) < fraction
        index = index[keep]
    if len(index) == 0:
        raise ValueError("the parameter selection is empty (a model with no trainable parameters?)")
    return torch.as_tensor(np.sort(index), dtype=torch.int64)


class ModelJacobian:
    """Products with ``J = ∂q/∂θ`` of a model on fixed inputs, at the model's current ``θ0``.

    Args:
        model: any ``torch.nn.Module``; its parameters are not modified.
        inputs: (n_samples, ...) this rank's inputs, on the model's device; each gives
            ``n_outputs`` rows.
        index: selected entries of the flat real parameter vector (default: all).
        forward: ``forward(model, inputs) -> (n_samples, n_outputs)``; default ``model(inputs)``.
        chunk_samples: samples per forward evaluation and forward-mode product.
        chunk_tangents: tangents (or cotangents) per vectorised product.
        vjp_chunk_samples: samples per reverse-mode product (default ``chunk_samples``): each
            chunk pays an m × chunk_tangents parameter gradient, so larger chunks are faster.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        *,
        index: torch.Tensor | None = None,
        forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
        chunk_samples: int = 256,
        chunk_tangents: int = 64,
        vjp_chunk_samples: int | None = None,
    ):
        self.model = model
        self.inputs = inputs
        self.forward = forward or (lambda m, x: m(x))
        real = real_parameters(model)
        if not real:
            raise ValueError("the model has no trainable parameters")
        self._names = list(real)
        self._complex = {name for name, p in model.named_parameters() if p.is_complex()}
        self._shapes = [t.shape for t in real.values()]
        self._sizes = [t.numel() for t in real.values()]
        self.theta0_full = torch.cat([t.detach().reshape(-1) for t in real.values()]).clone()
        self.device = self.theta0_full.device
        self.index = (torch.arange(len(self.theta0_full)) if index is None else index.cpu()).to(
            self.device
        )
        if len(self.index) > 1 and not bool((self.index[1:] > self.index[:-1]).all()):
            raise ValueError(
                "the parameter index must be strictly increasing (see select_parameters)"
            )
        self.theta0 = self.theta0_full[self.index].clone()
        # per parameter tensor: its selected entries (a slice of θ, sorted index) or None, so that
        # tensors without selected entries stay constants and carry no tangents (layer-restricted
        # subspaces then skip the products through the layers before the first selected one).
        # Products are taken with respect to the varying tensors one by one, never through θ as
        # one vector: the reverse pass of slicing θ would write a zero-filled m-vector per tensor
        # and per cotangent (measured: 5x the time of the vjp of a 192k-parameter FNO itself)
        offsets = np.cumsum([0] + self._sizes)
        bounds = np.searchsorted(self.index.cpu().numpy(), offsets)
        self._varying = []  # (tensor number, slice of θ, entries of the tensor or None for all)
        for j, (first, last) in enumerate(zip(bounds[:-1], bounds[1:])):
            if first == last:
                continue
            whole = last - first == self._sizes[j]
            entries = None if whole else self.index[first:last] - int(offsets[j])
            self._varying.append((j, slice(int(first), int(last)), entries))
        self._pieces0 = torch.split(self.theta0_full, self._sizes)
        self._varying0 = tuple(self._pieces0[j].clone() for j, _, _ in self._varying)
        self.dtype = self.theta0.dtype
        self._buffers = dict(model.named_buffers())
        self._kept = None  # the single sample chunk's linear maps (see _kept_maps)
        self.chunk_samples = int(chunk_samples)
        self.chunk_tangents = int(chunk_tangents)
        self.vjp_chunk_samples = int(vjp_chunk_samples or chunk_samples)
        with torch.no_grad():
            first = self.forward(model, inputs[:1])
        self.n_outputs = first.reshape(1, -1).shape[1]

    @property
    def n_params(self) -> int:
        """m, the number of selected real parameters."""
        return len(self.index)

    @property
    def tensor_slices(self) -> list[slice]:
        """The slice of θ (m,) that holds each parameter tensor's selected entries, in order."""
        return [piece for _, piece, _ in self._varying]

    @property
    def n_rows(self) -> int:
        """n, this rank's rows (samples × outputs)."""
        return len(self.inputs) * self.n_outputs

    def _split(self, theta: torch.Tensor, base: Sequence[torch.Tensor]) -> tuple:
        """Selected entries (m,) (parameters or a tangent) -> the varying tensors, flat, with
        unselected entries from ``base`` (θ0's, or zeros for tangents)."""
        return tuple(
            theta[piece] if entries is None else base[k].index_put((entries,), theta[piece])
            for k, (_, piece, entries) in enumerate(self._varying)
        )

    def _gather(self, pieces: Sequence[torch.Tensor]) -> torch.Tensor:
        """Cotangents of the varying tensors -> their selected entries (m,)."""
        return torch.cat(
            [
                g.reshape(-1) if entries is None else g.reshape(-1)[entries]
                for g, (_, _, entries) in zip(pieces, self._varying)
            ]
        )

    def _call(self, varying: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Outputs on ``x`` with the varying tensors set to ``varying`` (flat), as rows."""
        pieces = list(self._pieces0)
        for (j, _, _), piece in zip(self._varying, varying):
            pieces[j] = piece
        # complex parameters: view_as_complex needs an even storage offset, hence the copy
        real = {
            name: piece.reshape(shape).clone() if name in self._complex else piece.reshape(shape)
            for name, piece, shape in zip(self._names, pieces, self._shapes)
        }
        params = {**as_model_parameters(real, self.model), **self._buffers}
        return self.forward(_Functional(self.model, params), x).reshape(-1)

    @property
    def chunks(self) -> dict:
        """The chunk sizes, as keyword arguments of the constructor (for Jacobians of other
        inputs)."""
        return {
            "chunk_samples": self.chunk_samples,
            "chunk_tangents": self.chunk_tangents,
            "vjp_chunk_samples": self.vjp_chunk_samples,
        }

    def _sample_chunks(self, size: int | None = None):
        size = size or self.chunk_samples
        for start in range(0, len(self.inputs), size):
            yield start * self.n_outputs, self.inputs[start : start + size]

    @torch.no_grad()
    def outputs(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """``q(θ)`` (default θ0) on this rank's inputs, shape (n_rows,)."""
        varying = self._varying0 if theta is None else self._split(theta, self._varying0)
        return torch.cat([self._call(varying, x) for _, x in self._sample_chunks()])

    def jvp(self, T: torch.Tensor) -> torch.Tensor:
        """``J T``: T (m, k) -> (n_rows, k), or T (m,) -> (n_rows,)."""
        if T.dim() == 1:
            return self.jvp(T[:, None])[:, 0]
        return torch.cat([block for _, block in self.jvp_blocks(T)], dim=0)

    def jvp_blocks(self, T: torch.Tensor):
        """Yield ``(first_row, (J T)[rows])`` block by block (``chunk_samples`` samples each),
        so that callers can stream ``J T`` without holding it whole."""
        if T.dim() != 2 or T.shape[0] != self.n_params:
            raise ValueError(f"tangents must have shape ({self.n_params}, k), got {tuple(T.shape)}")
        T = T.to(self.device)
        zeros = [torch.zeros_like(p) for p in self._varying0]
        kept = self._kept_maps() if T.shape[1] == 1 else None
        if kept is not None and kept[1] is not None:  # one tangent: the kept transpose
            tangent = self._split(T[:, 0].to(self.dtype), zeros)
            yield 0, kept[1](tangent)[0].detach()[:, None]
            return
        for first_row, x in self._sample_chunks():

            def product(t, x=x):
                return jvp(lambda *v: self._call(v, x), self._varying0, self._split(t, zeros))[1]

            block = torch.empty(
                len(x) * self.n_outputs, T.shape[1], dtype=self.dtype, device=self.device
            )
            for k in range(0, T.shape[1], self.chunk_tangents):
                tangents = T[:, k : k + self.chunk_tangents].T.to(self.dtype)
                block[:, k : k + self.chunk_tangents] = vmap(product)(tangents).T.detach()
            yield first_row, block

    def vjp(self, W: torch.Tensor) -> torch.Tensor:
        """``Jᵀ W``: W (n_rows, k) -> (m, k), summed over this rank's rows."""
        if W.dim() == 1:
            return self.vjp(W[:, None])[:, 0]
        if W.shape[0] != self.n_rows:
            raise ValueError(f"cotangents must have {self.n_rows} rows, got shape {tuple(W.shape)}")
        W = W.to(self.device)
        result = torch.zeros(self.n_params, W.shape[1], dtype=self.dtype, device=self.device)
        for row, x in self._sample_chunks(self.vjp_chunk_samples):
            pullback = self._pullback(row, x)
            rows = W[row : row + x.shape[0] * self.n_outputs].to(self.dtype)
            for k in range(0, W.shape[1], self.chunk_tangents):
                cotangents = rows[:, k : k + self.chunk_tangents].T
                result[:, k : k + self.chunk_tangents] += _columns(
                    lambda c: self._gather(pullback(c)), cotangents
                ).T
        return result.detach()

    def _pullback(self, row: int, x: torch.Tensor):
        """The reverse-mode pullback ``w -> Jᵀ w`` of the sample chunk starting at ``row`` (the
        whole kept one when there is a single chunk, see :meth:`_kept_maps`)."""
        kept = self._kept_maps()
        if kept is not None:
            return kept[0]
        return vjp(lambda *v: self._call(v, x), *self._varying0)[1]

    def _kept_maps(self):
        """``(pullback, pushforward)`` of all inputs as one sample chunk, built once and kept (with
        their memory) for every later product; None with several chunks.

        Physics LSR calls ``vjp`` and ``jvp`` hundreds of times on a few inputs: a kept pullback
        skips the forward pass of every reverse product, and for a single tangent the pushforward
        ``v -> J v`` is the pullback's own transpose (the reverse pass through the kept reverse
        pass, exact since the pullback is linear). On make run's FNO (one input, 1 thread) that is
        8.2 + 5.6 ms for a jvp and a vjp against 15.4 + 13.1; for blocks of 8 or more tangents
        ``vmap`` over forward mode is faster than over the transpose, and is used. Models whose
        operations have no double backward use forward mode."""
        if self._kept is None:
            if len(self.inputs) > min(self.chunk_samples, self.vjp_chunk_samples):
                self._kept = False
            else:
                outputs, pullback = vjp(lambda *v: self._call(v, self.inputs), *self._varying0)
                try:
                    pushforward = vjp(pullback, torch.zeros_like(outputs))[1]
                except (NotImplementedError, RuntimeError):
                    pushforward = None
                self._kept = (pullback, pushforward)
        return self._kept or None

    def full(self) -> torch.Tensor:
        """The whole J (n_rows, m). Only for small problems and tests."""
        return self.jvp(torch.eye(self.n_params, dtype=self.dtype, device=self.device))


def _columns(product: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """``product`` of every row of X (k, ...), stacked: vectorised by ``vmap``, or called
    directly for a single row (vmap's own cost was a third of a one-vector product)."""
    if len(X) == 1:
        return product(X[0])[None]
    return vmap(product)(X)


class _Functional(nn.Module):
    """``model`` evaluated with given parameters and buffers (for user ``forward`` callables)."""

    def __init__(self, model: nn.Module, params: dict[str, torch.Tensor]):
        super().__init__()
        self._model = model
        self._params = params

    def forward(self, *args, **kwargs):
        return functional_call(self._model, self._params, args, kwargs)
