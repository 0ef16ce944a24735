"""One farm per data directory: `buildfarm up` holds an exclusive lock (flock) on DATA/farm.lock for
as long as it runs. The kernel releases it when the process ends in any way, SIGKILL included, so
there is never a stale lock to remove by hand. The file says who holds it (pid and URL)."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

LOCK_FILE = "farm.lock"


class DataDirBusy(RuntimeError):
    """Another live farm holds the data directory."""


class DataDirLock:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self, url: str) -> None:
        """Take the lock or fail at once, saying who holds it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by children (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise DataDirBusy(f"a farm (pid {holder.get('pid', '?')}, {holder.get('url', '?')}) already runs on "
                              f"{self.data_dir}; stop it first, or give this one another --data-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "url": url}).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = None


def _holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # the holder is writing it this very moment
        return {}
