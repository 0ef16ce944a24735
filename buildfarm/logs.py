"""Build logs on the filesystem: one append-only file per build, bytes as the build wrote them
(so binary and non-UTF-8 output survive), range reads, and wake-ups for live followers.

The agent sends numbered chunks; a chunk whose number was already appended is a retry and is
ignored, so a log is complete and in order even when the network or the farm hiccups.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from .notify import Notifier


class LogStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.notifier = Notifier()

    def path(self, build_id: str) -> Path:
        return self.root / f"{build_id}.log"

    @contextmanager
    def _locked(self, build_id: str):
        with open(self.root / f"{build_id}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _last_seq(self, build_id: str) -> int:
        try:
            return int((self.root / f"{build_id}.seq").read_text() or 0)
        except FileNotFoundError:
            return 0

    def append_chunk(self, build_id: str, seq: int, data: bytes) -> str:
        """Append chunk number `seq` (1, 2, ...). Returns 'appended', 'duplicate' or 'gap'."""
        with self._locked(build_id):
            last = self._last_seq(build_id)
            if seq <= last:
                return "duplicate"
            if seq != last + 1:
                return "gap"
            with open(self.path(build_id), "ab") as f:
                f.write(data)
            (self.root / f"{build_id}.seq").write_text(str(seq))
        self.notifier.notify(build_id)
        return "appended"

    def expected_seq(self, build_id: str) -> int:
        return self._last_seq(build_id) + 1

    def append_system(self, build_id: str, text: str) -> None:
        """A line from the farm itself, e.g. why a build was stopped."""
        with self._locked(build_id), open(self.path(build_id), "ab") as f:
            f.write(f"[buildfarm] {text}\n".encode())
        self.notifier.notify(build_id)

    def close(self, build_id: str) -> None:
        """No more output will come: followers may stop once they have read everything."""
        (self.root / f"{build_id}.closed").touch()
        self.notifier.notify(build_id)

    def is_closed(self, build_id: str) -> bool:
        return (self.root / f"{build_id}.closed").exists()

    def size(self, build_id: str) -> int:
        try:
            return self.path(build_id).stat().st_size
        except FileNotFoundError:
            return 0

    def read(self, build_id: str, offset: int, length: int) -> bytes:
        try:
            with open(self.path(build_id), "rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            return b""


def remove_build_files(root: Path, build_id: str) -> None:
    for suffix in (".log", ".seq", ".lock", ".closed"):
        try:
            os.unlink(Path(root) / f"{build_id}{suffix}")
        except FileNotFoundError:
            pass
