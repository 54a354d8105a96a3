"""pinn_lsr: neural PDE operators refined by linearized subspace refinement (LSR).

Subpackages follow the data flow: ``run`` (command line, settings, pipeline) uses ``physics``
(physics LSR, I-LSR), ``lsr`` (data LSR) and ``vpro`` (GNvpro), which use ``train``, ``models``,
``fem`` and ``data``, which use ``parallel`` and ``io``; never the other way. See ``README.md``.
"""

__version__ = "0.1.0"


def __getattr__(name):
    """``pinn_lsr.refine`` without importing torch until it is used."""
    if name == "refine":
        from pinn_lsr.lsr import refine

        return refine
    raise AttributeError(f"module 'pinn_lsr' has no attribute {name!r}")
