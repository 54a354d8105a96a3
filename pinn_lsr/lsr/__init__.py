"""Linearized subspace refinement: Jacobian products, subspaces, reduced solves, refinement."""

from pinn_lsr.lsr.refine import refine
from pinn_lsr.lsr.refined import RefinedModel
from pinn_lsr.lsr.report import LSRReport
from pinn_lsr.lsr.settings import LSRSettings

__all__ = ["LSRReport", "LSRSettings", "RefinedModel", "refine"]
