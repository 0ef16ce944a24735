"""Artifacts on the filesystem: stored under ROOT/BUILD/PATH, checked against the sha256 the
agent computed, and refused when a path would leave the build's directory. An upload is written
to a temporary file and given its name only when whole: a full disk leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .diskspace import DiskFull, dir_bytes, is_disk_full


MAX_PATH = 1024  # bytes of an artifact's relative path (the farm's directories come on top of it)
MAX_PART = 255  # bytes of one path component: NAME_MAX of Linux filesystems


class ArtifactPathError(ValueError):
    pass


class ChecksumMismatch(ValueError):
    pass


def safe_relpath(path: str) -> str:
    """A normalised relative path, or ArtifactPathError saying why it is refused."""
    if not path:
        raise ArtifactPathError("empty artifact path")
    if "\x00" in path:
        raise ArtifactPathError("an artifact path cannot contain a NUL byte")
    p = PurePosixPath(path)
    if p.is_absolute():
        raise ArtifactPathError(f"artifact path {_short(path)} is absolute; it must be relative to the workspace")
    if any(part == ".." for part in p.parts):
        raise ArtifactPathError(f"artifact path {_short(path)} points outside the workspace")
    parts = [x for x in p.parts if x not in (".", "")]
    if not parts:
        raise ArtifactPathError(f"artifact path {_short(path)} names no file")
    rel = "/".join(parts)
    if len(rel.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise ArtifactPathError(f"artifact path {_short(rel)} is longer than {MAX_PATH} bytes; "
                                f"give it a shorter path in the workspace")
    long = next((x for x in parts if len(x.encode("utf-8", "surrogateescape")) > MAX_PART), None)
    if long:
        raise ArtifactPathError(f"artifact path {_short(rel)}: the name {_short(long)} is longer than "
                                f"{MAX_PART} bytes, which no filesystem here stores")
    return rel


def _short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, build_id: str, relpath: str) -> Path:
        rel = safe_relpath(relpath)
        base = (self.root / build_id).resolve()
        full = (base / rel).resolve()
        if base not in full.parents:
            raise ArtifactPathError(f"artifact path {relpath!r} points outside the build's directory")
        return full

    async def put(self, build_id: str, relpath: str, chunks: AsyncIterator[bytes], expected_sha256: str | None,
                  max_bytes: int) -> tuple[int, str]:
        """Stream an upload to disk; keep it only if its sha256 matches. Returns (size, sha256)."""
        staged = await self.stage(build_id, relpath, chunks, expected_sha256, max_bytes)
        staged.keep()
        return staged.size, staged.sha256

    async def stage(self, build_id: str, relpath: str, chunks: AsyncIterator[bytes], expected_sha256: str | None,
                    max_bytes: int) -> StagedArtifact:
        """Stream an upload into a file beside its place, checked against its sha256; the caller
        keeps it (puts it in place) or discards it."""
        dest = self.path(build_id, relpath)
        try:
            return await self._stage(dest, relpath, chunks, expected_sha256, max_bytes)
        except OSError as e:
            if is_disk_full(e):
                raise DiskFull("artifacts", e) from None
            raise

    async def _stage(self, dest: Path, relpath: str, chunks: AsyncIterator[bytes], expected_sha256: str | None,
                     max_bytes: int) -> StagedArtifact:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ArtifactPathError(f"artifact path {_short(relpath)} goes through a file this build uploaded "
                                    f"before; a path cannot be both a file and a directory") from None
        if dest.is_dir():
            raise ArtifactPathError(f"artifact path {_short(relpath)} is a directory of artifacts this build "
                                    f"uploaded before; a path cannot be both a file and a directory")
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise ArtifactPathError(f"artifact {relpath!r} is larger than the limit of {max_bytes} bytes")
                    digest.update(chunk)
                    f.write(chunk)
            sha = digest.hexdigest()
            if expected_sha256 and expected_sha256.lower() != sha:
                raise ChecksumMismatch(f"artifact {relpath!r}: sha256 {sha} does not match the agent's {expected_sha256}")
            return StagedArtifact(safe_relpath(relpath), size, sha, Path(tmp), dest)
        except BaseException:
            os.unlink(tmp)
            raise

    def size(self, build_id: str) -> int:
        return dir_bytes(self.root / build_id)

    def remove(self, build_id: str) -> int:
        """Delete the build's artifacts (retention); returns the bytes freed."""
        freed = self.size(build_id)
        shutil.rmtree(self.root / build_id, ignore_errors=True)
        return freed


@dataclass
class StagedArtifact:
    """An upload on disk, checked, not yet in its place."""

    path: str  # relative to the workspace, normalised
    size: int
    sha256: str
    tmp: Path
    dest: Path

    def record(self) -> dict[str, Any]:
        """What the build's artifact index keeps of it."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    def keep(self) -> None:
        os.replace(self.tmp, self.dest)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)
