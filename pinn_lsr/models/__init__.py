"""Models: inputs -> values at target points, in torch (no PETSc/DOLFINx here).

=============  ================================  ===============================
model          input                             output
=============  ================================  ===============================
``fno``        coefficient (batch, s, s)         (batch, s*s) at the grid nodes
``deeponet``   coefficient (batch, s, s)         (batch, n_points), grid nodes by default
``mlp``        (batch, *in_shape) flattened      (batch, out_features)
=============  ================================  ===============================

``fno`` and ``deeponet`` take ``dim=1`` for a 1D grid (Burgers): (batch, s) -> (batch, s).
"""

from torch import nn

from pinn_lsr.models.deeponet import DeepONet
from pinn_lsr.models.fno import FNOOperator
from pinn_lsr.models.mlp import MLP

MODELS = {"fno": FNOOperator, "deeponet": DeepONet, "mlp": MLP}


def build_model(name: str, **kwargs) -> nn.Module:
    """Build model ``name`` with ``kwargs``; the model remembers ``spec = {"name", "kwargs"}``
    so a checkpoint can rebuild it.

    Raises:
        ValueError: unknown model name (the message lists the known ones) or argument.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    try:
        model = MODELS[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for model {name!r}: {exc}") from exc
    model.spec = {"name": name, "kwargs": dict(kwargs)}
    return model
