"""MPI helpers: abort the whole job when one rank raises, raise on every rank together, and
rank-aware logging."""

import logging
import sys
import traceback

from mpi4py import MPI


def abort_on_uncaught_exception(comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """Make an uncaught exception on any rank print its traceback and abort every rank.

    Without this, a rank that raises exits while the others wait forever in a collective.
    Serial runs keep Python's default behaviour (traceback, exit code 1).
    """
    if comm.size == 1:
        return

    def hook(exc_type, exc, tb):
        sys.stderr.write(
            f"[rank {comm.rank}] uncaught exception, aborting all {comm.size} ranks:\n"
        )
        traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
        sys.stderr.flush()
        comm.Abort(1)

    sys.excepthook = hook


def configure_logging(
    comm: MPI.Comm = MPI.COMM_WORLD, *, level: int = logging.INFO, logfile=None
) -> None:
    """Log ``level`` and above on rank 0 (console, and ``logfile`` if given); warnings elsewhere.

    Messages from ranks other than 0 are prefixed with their rank.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    prefix = "" if comm.rank == 0 else f"[rank {comm.rank}] "
    fmt = logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if logfile is not None and comm.rank == 0:
        file_handler = logging.FileHandler(logfile)
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)
    root.setLevel(level if comm.rank == 0 else logging.WARNING)


def raise_collectively(
    comm: MPI.Comm, message: str | None, error: type[Exception] = ValueError
) -> None:
    """Raise ``error`` on every rank if any rank has a ``message`` (its own, else the first one's,
    prefixed with that rank). Collective on ``comm``: call it on every rank, with None where the
    check passed, so a rank-dependent check fails everywhere together instead of hanging."""
    messages = comm.allgather(message)
    if any(messages):
        first = next(r for r, m in enumerate(messages) if m)
        raise error(message if message else f"on rank {first}: {messages[first]}")
