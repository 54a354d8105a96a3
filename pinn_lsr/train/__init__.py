"""Gradient training (Adam, SGD, L-BFGS), data-parallel under MPI, with atomic checkpoints."""
