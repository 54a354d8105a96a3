"""Write finite-element fields with their mesh as XDMF (opens in ParaView)."""

import shutil
from contextlib import contextmanager
from pathlib import Path

import dolfinx_solver  # noqa: F401  (must precede dolfinx / petsc4py)
import dolfinx.io
import dolfinx.mesh


@contextmanager
def xdmf_series(directory: str | Path, name: str, mesh: dolfinx.mesh.Mesh):
    """Yield an XDMFFile ``directory/name.xdmf`` with ``mesh`` written; call
    ``write_function(f, t)``.

    Collective on ``mesh.comm``. The files are written into a temporary folder renamed to
    ``directory`` only when the block completes (an existing ``directory`` is replaced), so an
    interrupted run leaves no half-written fields under the final name.
    """
    directory = Path(directory)
    comm = mesh.comm
    tmp = directory.with_name(f".{directory.name}.partial")
    if comm.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    comm.Barrier()
    with dolfinx.io.XDMFFile(comm, str(tmp / f"{name}.xdmf"), "w") as xdmf:
        xdmf.write_mesh(mesh)
        yield xdmf
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(directory, ignore_errors=True)
        tmp.rename(directory)
    comm.Barrier()
