"""Peak resident memory of a process, and of the processes of a communicator.

On Linux the peak is the kernel's high-water mark (``VmHWM``), which :func:`reset_peak_memory`
restarts, so that runs following each other in one process (the points of a sweep) each report
their own peak. Elsewhere it is ``ru_maxrss``: the peak since the process started.
"""

import resource
import sys
from pathlib import Path

from mpi4py import MPI

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory() -> bool:
    """Restart this process's peak at its current resident memory; False where the system cannot
    (the peak then counts from the process's start). Local."""
    try:
        _CLEAR_REFS.write_text("5")  # 5: reset the high-water mark (proc(5))
    except OSError:
        return False
    return True


def local_peak_memory_mb() -> float:
    """This process's peak resident memory since its start or the last reset, MB. Local."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


def peak_memory_mb(comm: MPI.Comm) -> float:
    """The largest :func:`local_peak_memory_mb` over ``comm``. Collective."""
    return comm.allreduce(local_peak_memory_mb(), op=MPI.MAX)
