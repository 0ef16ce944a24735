"""`make run`: start a single-machine farm on its embedded default, serve a small demo repository
with `git daemon` on 127.0.0.1, submit a build of it and show its live log. The farm keeps
running afterwards for you to use from another shell; Ctrl-C stops it."""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BUILDFARM = str(BIN / "buildfarm")

HELLO_C = r"""#include <stdio.h>
int main(void) { printf("hello from a buildfarm build\n"); return 0; }
"""
MAKEFILE = """all: hello
\t@echo "compiling on $$(uname -m) with $$(gcc --version | head -1)"
hello: hello.c
\tgcc -O2 -o $@ $<
test: hello
\t./hello
dist: test
\tmkdir -p dist && tar czf dist/hello.tar.gz hello
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_repo(root: Path) -> Path:
    repos = root / "demo-repos"
    bare = repos / "hello.git"
    if bare.exists():
        return repos
    work = root / "demo-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "hello.c").write_text(HELLO_C)
    (work / "Makefile").write_text(MAKEFILE)
    git = ["git", "-C", str(work), "-c", "user.email=demo@buildfarm", "-c", "user.name=demo"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "hello"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return repos


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

    farm = subprocess.Popen([BUILDFARM, "up", "--port", str(args.port), "--data-dir", str(data)])
    git_port = free_port()
    repos = demo_repo(data)
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
        repo = f"git://127.0.0.1:{git_port}/hello.git"
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
