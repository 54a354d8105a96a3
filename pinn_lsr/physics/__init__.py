"""Physics-informed refinement against finite-element residuals.

Modules, in the order data flows through them:

* :mod:`~pinn_lsr.physics.instances`: :class:`FEMInstances`, one instance set for the built-in
  problems (``from_pde``), a user's PETSc ``A, b[, S]`` (``from_petsc``) and a user's DOLFINx
  forms (``from_forms``); :mod:`~pinn_lsr.physics.checks` validates a user's input collectively.
* :mod:`~pinn_lsr.physics.residual`: :class:`PhysicsResidual`, ``A_k P u_θ(a_k) − b_k``
  linearized, in the energy, dual or ℓ2 norm.
* :mod:`~pinn_lsr.physics.refine`: subspaces, the reduced problem and :func:`refine_physics`
  (one-shot physics LSR).
* :mod:`~pinn_lsr.physics.iterative`: I-LSR (physics LSR alternated with supervised alignment).
* :mod:`~pinn_lsr.physics.finetune`: the gradient fine-tuning baseline on the same FEM loss.
"""
