"""The farm's disk: telling a full disk from other write errors, and how much the data directory
holds (for /metrics and the collector's report)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """A write of the farm's own files failed because their filesystem is full (or over quota).
    `what` names the files (logs, artifacts); the message is what the build's reason says."""

    def __init__(self, what: str, cause: OSError):
        super().__init__(cause.errno, f"no space left on the farm's disk ({what})")
        self.what = what

    def __str__(self) -> str:
        return self.strerror


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in FULL_ERRNOS


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (0 when it does not exist); symlinks not followed."""
    total = 0
    stack = [str(path)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except (FileNotFoundError, NotADirectoryError):
            continue
        with entries:
            for e in entries:
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_size
                except FileNotFoundError:  # deleted meanwhile
                    pass
    return total


def free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except FileNotFoundError:
        return 0
