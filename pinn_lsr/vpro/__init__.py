"""GNvpro: Gauss–Newton with variable projection for networks whose outputs are linear in some
weights (an MLP's last layer, a DeepONet's branch head and bias: :mod:`pinn_lsr.models.bilinear`).

``model, history = pinn_lsr.vpro.train_gnvpro(model, x, y, loss="squared" | "cross_entropy", ...)``
eliminates those weights (closed form for the squared loss, inner Newton–Krylov for
cross-entropy) and takes Gauss–Newton steps on the remaining parameters θ (Newman, Ruthotto,
Hart, van Bloemen Waanders, "Train Like a (Var)Pro", SIAM J. Math. Data Sci. 2021).
:func:`run_gnvpro` takes a :class:`GNSettings`; :func:`train_gnvpro_on_dataset` is the
pipeline's entry.
"""

from pinn_lsr.vpro.api import (
    build_problem,
    run_gnvpro,
    train_gnvpro,
    train_gnvpro_on_dataset,
)
from pinn_lsr.vpro.optimizer import GNResult, GNSettings, minimize
from pinn_lsr.vpro.separable import as_separable

__all__ = [
    "GNResult",
    "GNSettings",
    "as_separable",
    "build_problem",
    "minimize",
    "run_gnvpro",
    "train_gnvpro",
    "train_gnvpro_on_dataset",
]
