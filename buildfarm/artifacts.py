"""Artifacts on the filesystem: stored under ROOT/BUILD/PATH, checked against the sha256 the
agent computed, and refused when a path would leave the build's directory."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath


class ArtifactPathError(ValueError):
    pass


class ChecksumMismatch(ValueError):
    pass


def safe_relpath(path: str) -> str:
    """A normalised relative path, or ArtifactPathError saying why it is refused."""
    if not path or "\x00" in path:
        raise ArtifactPathError("empty artifact path")
    p = PurePosixPath(path)
    if p.is_absolute():
        raise ArtifactPathError(f"artifact path {path!r} is absolute; it must be relative to the workspace")
    if any(part == ".." for part in p.parts):
        raise ArtifactPathError(f"artifact path {path!r} points outside the workspace")
    parts = [x for x in p.parts if x not in (".", "")]
    if not parts:
        raise ArtifactPathError(f"artifact path {path!r} names no file")
    return "/".join(parts)


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
        dest = self.path(build_id, relpath)
        dest.parent.mkdir(parents=True, exist_ok=True)
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
            os.replace(tmp, dest)
            return size, sha
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
