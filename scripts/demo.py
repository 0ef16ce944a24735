"""`make run`: start a single-machine farm on its embedded default, serve a small demo repository
with `git daemon` on 127.0.0.1, submit a build of it and show its live log. The farm keeps
running afterwards for you to use from another shell; Ctrl-C stops it. Its pipelines are the
examples in pipelines/, pointed at a sample release repository the demo serves too."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from buildfarm import samples

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BUILDFARM = str(BIN / "buildfarm")
EXAMPLE_REPO = "git://127.0.0.1/cmssw.git"  # the default repository of pipelines/nightly-ib.yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_repos(root: Path) -> Path:
    """The demo's repositories: hello.git (a C program) and cmssw.git (a release in the layout of
    pipelines/nightly-ib.yaml), made once under the data directory."""
    repos = root / "demo-repos"
    for name, files in (("hello", samples.HELLO), ("cmssw", samples.RELEASE)):
        if not (repos / f"{name}.git" / "HEAD").exists():
            samples.make_bare_repo(repos / f"{name}.git", files, f"{name}: demo")
    return repos


def demo_pipelines(root: Path, git_url: str) -> Path:
    """A copy of pipelines/ whose example repository is the demo's, so the scheduled nightly-ib
    (and `buildfarm pipeline run nightly-ib`) builds something that exists."""
    out = root / "pipelines"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.yaml"):
        old.unlink()
    for f in (ROOT / "pipelines").glob("*.yaml"):
        (out / f.name).write_text(f.read_text().replace(EXAMPLE_REPO, f"{git_url}/cmssw.git"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--data-dir", type=Path, default=ROOT / ".buildfarm")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    data = args.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}"
    try:
        if httpx.get(url + "/readyz", timeout=1).status_code == 200:
            print(f"a farm already answers on {url}; stop it or use `make run PORT=...`", file=sys.stderr)
            return 1
    except httpx.HTTPError:
        pass

    git_port = free_port()
    git_url = f"git://127.0.0.1:{git_port}"
    repos = demo_repos(data)
    env = {**os.environ, "BUILDFARM_PIPELINES": str(demo_pipelines(data, git_url))}
    farm = subprocess.Popen([BUILDFARM, "up", "--port", str(args.port), "--data-dir", str(data)], env=env)
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={repos}",
                               "--listen=127.0.0.1", f"--port={git_port}", str(repos)],
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            if farm.poll() is not None:
                print("buildfarm up exited; see the messages above", file=sys.stderr)
                return farm.returncode or 1
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                print("the farm did not become ready within 60 s", file=sys.stderr)
                return 1
            time.sleep(0.2)
        repo = f"{git_url}/hello.git"
        print(f"\n== demo build of {repo} in buildfarm/builder ==\n", flush=True)
        token = (data / "admin.token").read_text().strip()
        rc = subprocess.call([BUILDFARM, "--server", url, "--token", token, "submit", "--repo", repo, "--image", "buildfarm/builder",
                              "--cpus", "1", "--mem", "512", "--artifact", "dist/*.tar.gz", "--wait", "--follow",
                              "--", "make", "dist"])
        print(f"\n== the demo build exited {rc} ==")
        print(f"The farm keeps running on {url} (data in {data}). From another shell:")
        print(f"Dashboard: {url}/#token={token}  (signs this browser in as admin)")
        print(f"  export BUILDFARM_URL={url} BUILDFARM_TOKEN=$(cat {data}/admin.token)")
        print("  .venv/bin/buildfarm list")
        print(f"  .venv/bin/buildfarm submit --repo {repo} --image buildfarm/builder --wait --follow -- make test")
        print("  .venv/bin/buildfarm pipeline run nightly-ib --wait   # also scheduled at 11:00 and 23:00")
        print("Ctrl-C stops the farm.", flush=True)
        farm.wait()
    except KeyboardInterrupt:
        pass
    finally:
        daemon.terminate()
        if farm.poll() is None:
            farm.send_signal(signal.SIGTERM)
            try:
                farm.wait(15)
            except subprocess.TimeoutExpired:
                farm.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
