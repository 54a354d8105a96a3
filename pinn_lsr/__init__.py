"""pinn_lsr: neural PDE operators refined by linearized subspace refinement (LSR).

Subpackages follow the data flow ``problem -> fem -> data -> models -> train -> lsr -> io``;
see ``README.md`` and ``DESIGN.md``.
"""

__version__ = "0.1.0"
