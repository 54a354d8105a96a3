"""MPI helpers: abort the whole job when one rank raises, raise on every rank together, tell
whether every rank failed alike, and rank-aware logging."""

import logging
import sys
import time
import traceback
from collections.abc import Sequence

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
        abort(comm)

    sys.excepthook = hook


def abort(comm: MPI.Comm, status: int = 1) -> None:
    """Abort every rank of ``comm`` with ``status``, the log and stderr flushed first and a moment
    left for mpirun to forward the output it has not read yet (an abort drops it; seen on a loaded
    machine)."""
    logging.shutdown()
    sys.stderr.flush()
    time.sleep(1.0)
    comm.Abort(status)


def configure_logging(
    comm: MPI.Comm = MPI.COMM_WORLD, *, level: int = logging.INFO, logfiles: Sequence = ()
) -> None:
    """Log ``level`` and above on rank 0 (console, and each of ``logfiles``, appended to);
    warnings elsewhere.

    Messages from ranks other than 0 are prefixed with their rank.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()  # a file handler's file; never the console's stream
    prefix = "" if comm.rank == 0 else f"[rank {comm.rank}] "
    fmt = logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    for logfile in logfiles if comm.rank == 0 else ():
        file_handler = logging.FileHandler(logfile)
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)
    root.setLevel(level if comm.rank == 0 else logging.WARNING)


def every_rank_arrives(comm: MPI.Comm, timeout: float) -> bool:
    """Whether every rank of ``comm`` calls this within ``timeout`` seconds of this rank's call
    (a nonblocking barrier, polled). False leaves the barrier pending: ``comm`` is unusable and
    the job must be aborted."""
    request = comm.Ibarrier()
    deadline = time.monotonic() + timeout
    while not request.Test():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


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
