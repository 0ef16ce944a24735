"""A schema-driven fuzz run (schemathesis) against the OpenAPI document of a running farm: no
request it generates may get a 5xx answer. Hooks (tests/fuzz_hooks.py) put hostile text into the
generated strings now and then (NUL bytes, lone surrogates, 200 KB values, 2,000-level paths). A
second run calls the agent's routes with a real build's agent token. The farm only builds
repositories of the test's git server (--allow-repo), so generated specs never make it reach
beyond 127.0.0.1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import redis

from buildfarm.records import build_key, new_agent_token, token_digest
from tests.conftest import IMAGE

ST = str(Path(sys.executable).parent / "st")
HOOKS = str(Path(__file__).with_name("fuzz_hooks.py"))


# CPython before 3.11.8 keeps ast.parse's recursion counter in state shared by threads
# (python/cpython#106905): hypothesis, describing a strategy in one of schemathesis' two worker
# threads, can then die with this SystemError. It is the interpreter's race, not a farm's answer:
# such a run is made once more.
INTERPRETER_RACE = "AST constructor recursion depth mismatch"


def st_run(farm, tmp_path, token: str, *options: str, env: dict | None = None) -> str:
    tmp_path.mkdir(exist_ok=True)
    for _ in range(2):
        run = subprocess.run(
            [ST, "run", f"{farm.url}/openapi.json", "--checks", "not_a_server_error",
             "--header", f"Authorization: Bearer {token}", "--request-timeout", "20", "--workers", "2",
             "--generation-database", "none", "--seed", "1", "--report-dir", str(tmp_path), *options],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": HOOKS, **(env or {})})
        if run.returncode == 0 or INTERPRETER_RACE not in run.stdout + run.stderr:
            break
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    print(run.stdout)
    return run.stdout


def test_no_generated_request_gets_a_server_error(fresh_farm, git_server, tmp_path):
    repo = git_server.make_repo("fuzzed", {"README": "fuzz\n"})
    farm = fresh_farm("--allow-repo", f"git://127.0.0.1:{git_server.port}/")
    out = st_run(farm, tmp_path, farm.token, "--max-examples", "25",
                 # Revoking the admin token would leave the rest of the run testing 401s only.
                 "--exclude-path-regex", "^/api/v1/tokens/", env={"BF_FUZZ_REPO": repo, "BF_FUZZ_IMAGE": IMAGE})
    tested = re.search(r"(\d+) generated, (\d+) passed", out)
    assert tested and int(tested.group(2)) > 500, out[-3000:]  # a real run, not an empty one
    # Build specs, many of them: a valid spec with hostile text in one field (fuzz_hooks.py).
    out = st_run(farm, tmp_path / "specs", farm.token, "--max-examples", "300", "--include-path-regex",
                 "^/api/v1/builds$", "--include-method", "POST", env={"BF_FUZZ_REPO": repo, "BF_FUZZ_IMAGE": IMAGE})
    tested = re.search(r"(\d+) generated, (\d+) passed", out)
    assert tested and int(tested.group(2)) > 200, out[-3000:]

    # The agent's routes, with the agent token of a build that waits (it never runs).
    made = farm.api("POST", "/api/v1/builds", json={"repo": repo, "image": IMAGE, "steps": ["true"],
                                                    "resources": {"cpus": 1000}, "wait_for_capacity": True})
    assert made.status_code == 201, made.text
    build_id = made.json()["id"]
    token = new_agent_token()  # as a launch gives one to the build's agent
    redis.Redis.from_url(farm.redis_url()).hset(build_key(build_id), "token_sha", token_digest(token))
    out = st_run(farm, tmp_path / "agent", token, "--max-examples", "40", "--include-path-regex", "^/api/v1/agent/builds/",
                 env={"BF_FUZZ_BUILD": build_id})
    tested = re.search(r"(\d+) generated, (\d+) passed", out)
    assert tested and int(tested.group(2)) > 100, out[-3000:]
