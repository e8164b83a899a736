"""Write a file or folder whole or not at all: stage it beside its place, then rename it there.

A staged entry is named ``.<target name>.partial-<pid>-<host>-<random>``. A process killed
while writing leaves its entry behind; the next writer beside it removes every leftover: an
entry whose process is gone (on this host), or any older than ``LEFTOVER_AFTER_S`` (a writer
on another host sharing the folder). Readers never trust a staged entry, only renamed ones.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

_MARK = ".partial-"
# No write here takes this long: an older staged entry is a leftover, whoever made it.
LEFTOVER_AFTER_S = 24 * 3600


def stage(target: Path, *, folder: bool = False) -> Path:
    """Create an empty staged file (or ``folder``) beside ``target`` and return its path.

    Leftovers of earlier writers beside ``target`` are removed first.

    Raises:
        OSError: The folder beside ``target`` cannot be written.
    """
    clear_leftovers(target.parent)
    prefix = f".{target.name}{_MARK}{os.getpid()}-{socket.gethostname()}-"
    if folder:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        path.chmod(0o755)  # mkdtemp makes it private; a shared cache is read by others
        return path
    fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
    os.close(fd)
    path = Path(name)
    path.chmod(0o644)  # mkstemp makes it private; a shared cache is read by others
    return path


def commit(staged: Path, target: Path) -> None:
    """Rename ``staged`` into place as ``target``, in one step, after syncing a file's bytes."""
    if staged.is_file():
        with staged.open("rb") as f:
            os.fsync(f.fileno())
    os.replace(staged, target)


def discard(staged: Path) -> None:
    """Remove a staged entry that is not to be used."""
    if staged.is_dir() and not staged.is_symlink():
        shutil.rmtree(staged, ignore_errors=True)
    else:
        staged.unlink(missing_ok=True)


def clear_leftovers(folder: Path) -> list[Path]:
    """Remove the staged entries in ``folder`` that killed writers left; return them."""
    removed = []
    for entry in folder.glob(f".*{_MARK}*"):
        if _abandoned(entry):
            discard(entry)
            removed.append(entry)
            logger.info("Removed %s, left by a write that did not finish", entry)
    return removed


def _abandoned(entry: Path) -> bool:
    try:
        if time.time() - entry.lstat().st_mtime > LEFTOVER_AFTER_S:
            return True
    except OSError:
        return False  # another process removed it first
    owner = entry.name.rpartition(_MARK)[2]
    pid, _, rest = owner.partition("-")
    host = rest.rpartition("-")[0]
    # os.kill(pid, 0) only asks on POSIX; on Windows it would end the process.
    if os.name != "posix" or not pid.isdigit() or host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by someone else
        return False
    return False  # alive
