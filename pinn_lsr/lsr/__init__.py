"""Linearized subspace refinement: Jacobian products, subspaces, reduced solves, refinement."""

from pinn_lsr.lsr.refine import LSRReport, RefinedModel, refine

__all__ = ["LSRReport", "RefinedModel", "refine"]
