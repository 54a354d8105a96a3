"""Finite-element layer: DOLFINx meshes, spaces and forms turned into PETSc operators.

This package speaks DOLFINx/PETSc and never imports torch. ``dolfinx_solver`` is imported
first because it orders ``mpi4py.MPI`` ahead of the compiled DOLFINx/PETSc bindings.
"""

import dolfinx_solver  # noqa: F401  (must precede dolfinx / petsc4py)
