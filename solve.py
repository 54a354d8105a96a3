"""Run pinn_lsr: ``mpirun -n N python solve.py problem=darcy [key=value ...]``; see README.md."""

import sys

from pinn_lsr.run.cli import main

if __name__ == "__main__":
    sys.exit(main())
