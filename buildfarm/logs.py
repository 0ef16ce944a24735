"""Build logs on the filesystem: one append-only file per build, bytes as the build wrote them
(so binary and non-UTF-8 output survive), range reads, and wake-ups for live followers: each
growth is published on Redis (LOG_CHANNEL), so followers in every API replica wake, whichever
replica appended.

The agent sends numbered chunks; a chunk whose number was already appended is a retry and is
ignored, so a log is complete and in order even when the network or the farm hiccups. A chunk
is appended whole or not at all: a write that fails (a full disk) is cut back off the file, and
the chunk's number is recorded only after its bytes are written.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from .diskspace import DiskFull, is_disk_full
from .keys import LOG_CHANNEL
from .notify import Notifier, key

log = logging.getLogger("buildfarm.logs")



class LogStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.notifier = Notifier()  # this process's followers, under log_key(build id)
        self.publish: Callable[[str, str], object] | None = None  # Redis's publish, to wake other processes

    def _grew(self, build_id: str) -> None:
        self.notifier.notify(log_key(build_id))
        if self.publish is not None:
            try:
                self.publish(LOG_CHANNEL, build_id)
            except Exception:  # Redis away: followers elsewhere look at the file every second anyway
                pass

    async def wait(self, build_id: str, timeout: float) -> None:
        """Return when the build's log grows here or in another process, or after `timeout`."""
        await self.notifier.wait(log_key(build_id), timeout)

    def path(self, build_id: str) -> Path:
        return self.root / f"{build_id}.log"

    @contextmanager
    def locked(self, build_id: str):
        """The build's output lock. The farm's own lines (the closing one included) are written
        under it, so whatever an agent writes under it after checking that its build still runs
        lands before the closing line or not at all."""
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

    def append_chunk(self, build_id: str, seq: int, data: bytes, check: Callable[[], str] | None = None) -> str:
        """Append chunk number `seq` (1, 2, ...). Returns 'appended', 'duplicate' or 'gap'; or,
        when `check` (called under the lock) answers anything but 'ok', that answer."""
        with self.locked(build_id):
            verdict = check() if check else "ok"
            if verdict != "ok":
                return verdict
            last = self._last_seq(build_id)
            if seq <= last:
                return "duplicate"
            if seq != last + 1:
                return "gap"
            self._append_whole(build_id, data, seq)
        self._grew(build_id)
        return "appended"

    def _append_whole(self, build_id: str, data: bytes, seq: int | None = None) -> None:
        """Append `data` (and record `seq` as the last chunk) or nothing: on a failed write the file
        is cut back to its size before, so a retried chunk is neither doubled nor half there.
        Raises DiskFull when the disk is full."""
        with open(self.path(build_id), "ab", buffering=0) as f:
            before = f.seek(0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:  # a raw write may be partial just before the disk fills
                    view = view[f.write(view):]
                if seq is not None:  # the number last, replaced whole: a failure keeps the old one
                    tmp = self.root / f".{build_id}.seq.tmp"
                    tmp.write_text(str(seq))
                    os.replace(tmp, self.root / f"{build_id}.seq")
            except OSError as e:
                f.truncate(before)
                if is_disk_full(e):
                    raise DiskFull("logs", e) from None
                raise

    def expected_seq(self, build_id: str) -> int:
        return self._last_seq(build_id) + 1

    def append_system(self, build_id: str, text: str) -> None:
        """A line from the farm itself, e.g. why a build was stopped. On a full disk the line is
        left out (the build's record keeps the reason)."""
        try:
            with self.locked(build_id):
                self._append_whole(build_id, f"[buildfarm] {text}\n".encode())
        except DiskFull as e:
            log.warning("build %s: line not written to its log: %s", build_id, e)
        self._grew(build_id)

    def close(self, build_id: str) -> None:
        """No more output will come: followers may stop once they have read everything."""
        try:
            (self.root / f"{build_id}.closed").touch()
        except OSError as e:  # no inode left: followers stop once the build has ended for a while
            log.warning("build %s: log not marked closed: %s", build_id, e)
        self._grew(build_id)

    def remove(self, build_id: str) -> int:
        """Delete the build's log (retention); returns the bytes freed. The closed mark stays, so
        followers stop at once."""
        freed = self.size(build_id)
        for suffix in (".log", ".seq", ".lock"):
            try:
                os.unlink(self.root / f"{build_id}{suffix}")
            except FileNotFoundError:
                pass
        return freed

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


def log_key(build_id: str) -> str:
    """The Notifier key of a build's log growth (a Subscription to LOG_CHANNEL relays under it)."""
    return key(LOG_CHANNEL, build_id)
