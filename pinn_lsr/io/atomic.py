"""Atomic file output: write beside the target, then rename, so a crash never leaves a
half-written file under the final name."""

import json
import math
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: str | Path, suffix: str | None = None):
    """Yield a temporary path in ``target``'s folder; rename it to ``target`` if the block succeeds.

    Local (call it on the rank that writes). On an exception the temporary file is removed and
    ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix or target.suffix, dir=target.parent
    )
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the final file the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(target: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``target`` atomically. Local."""
    with atomic_path(target) as tmp:
        write(tmp)


def write_json(target: str | Path, data) -> None:
    """Write ``data`` as indented, strict JSON, atomically: a NaN or infinite float (an error
    that could not be measured) is written as ``null``, which every JSON reader accepts. Local."""
    text = json.dumps(strict_json(data), indent=2, sort_keys=True, allow_nan=False)
    write_atomic(target, lambda tmp: tmp.write_text(text + "\n"))


def strict_json(data):
    """``data`` with every non-finite float (NaN, ±inf) replaced by None, containers copied."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: strict_json(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [strict_json(value) for value in data]
    return data
