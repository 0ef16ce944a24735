"""The build agent as the farm injects it: executors/buildfarm_agent.py plus GitPython and its
pure-Python dependencies, in one directory (bind-mounted read-only into build containers) and
as a tarball (for a Mesos fetcher URI). Images need only `git` and `python3`."""

from __future__ import annotations

import compileall
import hashlib
import importlib.util
import io
import shutil
import tarfile
from pathlib import Path

AGENT_SOURCE = Path(__file__).resolve().parent.parent / "executors" / "buildfarm_agent.py"
PACKAGES = ("git", "gitdb", "smmap")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the agent needs the Python package {name!r} (pip install GitPython)")
    return Path(list(spec.submodule_search_locations)[0])


def build_bundle(dest: Path) -> Path:
    """(Re)create the agent directory under `dest`; returns its path. Idempotent and atomic."""
    if not AGENT_SOURCE.exists():
        raise RuntimeError(f"agent source missing: {AGENT_SOURCE} (install buildfarm from its source tree)")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shutil.copy2(AGENT_SOURCE, tmp / "buildfarm_agent.py")
    for name in PACKAGES:
        shutil.copytree(_package_dir(name), tmp / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # Bytecode, since containers mount the bundle read-only: without it every build would
    # recompile GitPython (0.4 s). Used by images whose python3 has this interpreter's version.
    compileall.compile_dir(tmp, quiet=1, workers=1)
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def bundle_tarball(bundle: Path) -> tuple[bytes, str]:
    """The bundle as a .tar.gz (for the Mesos fetcher) and its sha256."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(bundle, arcname="buildfarm-agent")
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()
