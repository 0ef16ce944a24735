"""The build agent as the farm injects it: executors/buildfarm_agent.py plus GitPython and its
pure-Python dependencies, in one directory (bind-mounted read-only into build containers) and
as a tarball (for a Mesos fetcher URI). Images need only `git` and `python3`."""

from __future__ import annotations

import compileall
import hashlib
import importlib.util
import io
import os
import shutil
import sys
import time
import tarfile
from pathlib import Path

from .agent_contract import AGENT_SCRIPT, BUNDLE_DIR

AGENT_SOURCE = Path(__file__).resolve().parent.parent / "executors" / AGENT_SCRIPT
PACKAGES = ("git", "gitdb", "smmap")


KEEP_OLD_BUNDLES = 8 * 24 * 3600  # seconds: longer than the longest build timeout (7 days)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the agent needs the Python package {name!r} (pip install GitPython)")
    return Path(list(spec.submodule_search_locations)[0])


def bundle_key() -> str:
    """Identifies the bundle's content: the agent's source, the packages' versions, the Python."""
    from importlib.metadata import version

    h = hashlib.sha256(AGENT_SOURCE.read_bytes())
    for name in ("GitPython", "gitdb", "smmap"):
        h.update(f"{name}={version(name)};".encode())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def build_bundle(root: Path) -> Path:
    """The agent directory for this code under `root` (root/KEY), built if missing.

    Content-addressed and never replaced: containers that outlive a farm restart keep the
    bundle they mounted (rebuilding it in place once broke a surviving build's imports)."""
    if not AGENT_SOURCE.exists():
        raise RuntimeError(f"agent source missing: {AGENT_SOURCE} (install buildfarm from its source tree)")
    dest = Path(root) / bundle_key()
    if (dest / AGENT_SCRIPT).exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    prune_old_bundles(Path(root), keep=dest.name)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shutil.copy2(AGENT_SOURCE, tmp / "buildfarm_agent.py")
    for name in PACKAGES:
        shutil.copytree(_package_dir(name), tmp / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # Bytecode, since containers mount the bundle read-only: without it every build would
    # recompile GitPython (0.4 s). Used by images whose python3 has this interpreter's version.
    compileall.compile_dir(tmp, quiet=1, workers=1)
    try:
        tmp.rename(dest)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def prune_old_bundles(root: Path, keep: str, older_than: float = KEEP_OLD_BUNDLES) -> list[str]:
    """Remove bundles of earlier versions once no build can still use them. The local backend
    touches a bundle at each launch, and a build runs at most 7 days (its longest timeout), so a
    bundle untouched for longer is nobody's."""
    removed = []
    for d in root.iterdir():
        if d.name != keep and d.is_dir() and time.time() - d.stat().st_mtime > older_than:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    return removed


def bundle_tarball(bundle: Path) -> tuple[bytes, str]:
    """The bundle as a .tar.gz (for the Mesos fetcher) and its sha256."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(bundle, arcname=BUNDLE_DIR)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()
