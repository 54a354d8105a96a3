"""Subspace construction phase of :func:`pinn_lsr.lsr.refine.refine`: the basis V (m × r) of
the kind the settings name (:mod:`pinn_lsr.lsr.subspace`, :mod:`pinn_lsr.lsr.lean`)."""

from mpi4py import MPI

from pinn_lsr.lsr.lean import lean_randomized_subspace
from pinn_lsr.lsr.residual import DataResidual
from pinn_lsr.lsr.restart import RestartStore
from pinn_lsr.lsr.settings import LSRSettings
from pinn_lsr.lsr.subspace import (
    Subspace,
    krylov_subspace,
    random_subspace,
    randomized_subspace,
)


def build_subspace(
    residual: DataResidual,
    rank: int,
    settings: LSRSettings,
    *,
    held_out: DataResidual | None = None,
    store: RestartStore | None = None,
    progress: bool = False,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> Subspace:
    """V for ``residual`` (this rank's rows the subspace is found on). Collective.

    Args:
        rank: r, the columns asked for; a Krylov basis may stop with fewer (``V.shape[1]``).
        settings: ``subspace``, ``engine`` and the options of each (oversampling,
            power_iterations, distribution, scaled, block_columns, krylov_patience, seed).
        held_out: (krylov) this rank's validation rows, for early stopping.
        store: (lean engine) where the sketch and projection blocks are saved and resumed from.
        progress: progress bars (rank 0).
    """
    s = settings
    if s.subspace == "randomized":
        options = dict(
            comm=comm,
            oversampling=s.oversampling,
            power_iterations=s.power_iterations,
            distribution=s.distribution,
            scaled=s.scaled,
            seed=s.seed,
        )
        if s.engine == "lean":
            return lean_randomized_subspace(
                residual,
                rank,
                block_columns=s.block_columns,
                store=store,
                progress=progress,
                **options,
            )
        return randomized_subspace(residual, rank, **options)
    if s.subspace == "krylov":
        return krylov_subspace(
            residual,
            rank,
            comm=comm,
            held_out=held_out,
            patience=s.krylov_patience,
            progress=progress,
        )
    jacobian = residual.jacobian
    return random_subspace(
        jacobian.n_params, rank, seed=s.seed, dtype=jacobian.dtype, device=jacobian.device
    )
