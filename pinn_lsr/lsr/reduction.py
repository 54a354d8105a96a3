"""Reduction phase of :func:`pinn_lsr.lsr.refine.refine`: the reduced problem
``min_c ||G V c + f||`` of a data residual in a subspace V, by the solver of the settings.

``streaming`` feeds the row blocks of ``[G V | f]`` to :func:`pinn_lsr.lsr.reduced.solve_streaming`
(G V never held whole; resumable from a restart store; ``reduction=gram`` on the products'
device); ``dense`` forms this rank's G V and factorises it on the host
(:func:`pinn_lsr.lsr.reduced.solve_dense`); ``lsqr`` hands it to PETSc's KSPLSQR
(:class:`pinn_lsr.lsr.lsqr.LSQRSolution`).
"""

import torch
from mpi4py import MPI

from pinn_lsr.lsr.reduced import ReducedSolution, solve_dense, solve_streaming
from pinn_lsr.lsr.residual import DataResidual
from pinn_lsr.lsr.restart import RestartStore
from pinn_lsr.lsr.settings import LSRSettings


def solve_reduced(
    residual: DataResidual,
    V: torch.Tensor,
    f0: torch.Tensor,
    settings: LSRSettings,
    *,
    store: RestartStore | None = None,
    progress: bool = False,
    comm: MPI.Comm = MPI.COMM_WORLD,
):
    """Factorise (or, for ``lsqr``, set up) the reduced problem of ``residual`` in V. Collective.

    Args:
        residual: this rank's rows of the data residual at θ0.
        V: (m, r) the subspace, identical on every rank.
        f0: (n_rows_local,) ``residual.value()``, already at hand.
        settings: ``solver``, ``reduction``, ``restart_seconds``, ``petsc_options``, ``seed``.
        store: (streaming) where the accumulator is saved and resumed from.
    Returns:
        A :class:`~pinn_lsr.lsr.reduced.ReducedSolution`, or an
        :class:`~pinn_lsr.lsr.lsqr.LSQRSolution` with the same interface.
    """
    if settings.solver == "dense":  # a NumPy QR on the host
        return solve_dense(residual.G(V).double().cpu().numpy(), f0.double().cpu().numpy(), comm)
    if settings.solver == "lsqr":
        from pinn_lsr.lsr.lsqr import LSQRSolution  # PETSc (on the host) only when asked for

        return LSQRSolution(
            residual.G(V).double().cpu().numpy(),
            f0.double().cpu().numpy(),
            comm,
            options=settings.petsc_options,
            seed=settings.seed,
        )
    return _stream(residual, V, f0, settings, store=store, progress=progress, comm=comm)


def _stream(
    residual: DataResidual,
    V: torch.Tensor,
    f0: torch.Tensor,
    settings: LSRSettings,
    *,
    store: RestartStore | None,
    progress: bool,
    comm: MPI.Comm,
) -> ReducedSolution:
    n_samples, n_outputs = len(residual.jacobian.inputs), residual.jacobian.n_outputs

    def remaining(rows_done: int):
        """The blocks of the samples after the first ``rows_done`` rows (whole samples)."""
        done = rows_done // n_outputs
        rest = residual if done == 0 else residual.subset(torch.arange(done, n_samples))
        yield from rest.G_blocks(V, f0[done * n_outputs :])

    return solve_streaming(
        remaining,
        V.shape[1],
        comm,
        reduction=settings.reduction,
        store=store,
        restart_seconds=settings.restart_seconds,
        progress=progress,
        n_rows=residual.jacobian.n_rows,
        device=residual.jacobian.device,
    )
