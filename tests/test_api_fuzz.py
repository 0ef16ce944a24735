"""A schema-driven fuzz run (schemathesis) against the OpenAPI document of a running farm: no
request it generates may get a 5xx answer. Hooks (tests/fuzz_hooks.py) put hostile text into the
generated strings now and then (NUL bytes, lone surrogates, 200 KB values, 2,000-level paths). A
second run calls the agent's routes with a real build's agent token. The farm only builds
repositories of the test's git server (--allow-repo), so generated specs never make it reach
beyond 127.0.0.1.

BUILDFARM_FUZZ sets how many examples each run asks for: `quick` (the default, `make test`) or
`full` (`make chaos` runs this file so). The first and third runs' coverage phase is the same in
both; the fuzzing and stateful phases draw that many examples per operation."""

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


# Examples per operation of each run, and how many requests a run must at least have made (a real
# run, not an empty one): the API as a whole, POST /api/v1/builds alone, the agent's routes.
LEVELS = {"quick": {"api": (8, 500), "specs": (60, 200), "agent": (15, 100)},
          "full": {"api": (25, 500), "specs": (300, 1000), "agent": (40, 100)}}
LEVEL = os.environ.get("BUILDFARM_FUZZ", "quick")


def examples(run: str) -> tuple[str, int]:
    if LEVEL not in LEVELS:
        raise AssertionError(f"BUILDFARM_FUZZ={LEVEL!r}: use one of {', '.join(LEVELS)}")
    count, least = LEVELS[LEVEL][run]
    return str(count), least


def st_run(farm, tmp_path, token: str, run: str, *options: str, env: dict | None = None) -> str:
    """One schemathesis run; fails on any 5xx answer, or when it made fewer requests than the level asks."""
    tmp_path.mkdir(exist_ok=True)
    count, least = examples(run)
    # One worker: with two, CPython 3.11.7's ast.parse race (python/cpython#106905: its recursion
    # counter is shared by threads) kills hypothesis now and then while it describes a strategy.
    out = subprocess.run(
        [ST, "run", f"{farm.url}/openapi.json", "--checks", "not_a_server_error",
         "--header", f"Authorization: Bearer {token}", "--request-timeout", "60", "--workers", "1",
         "--generation-database", "none", "--seed", "1", "--report-dir", str(tmp_path), "--max-examples", count,
         *options],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": HOOKS, **(env or {})})
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    print(out.stdout)
    tested = re.search(r"(\d+) generated, (\d+) passed", out.stdout)
    assert tested and int(tested.group(2)) >= least, out.stdout[-3000:]
    return out.stdout


def test_no_generated_request_gets_a_server_error(fresh_farm, git_server, tmp_path):
    repo = git_server.make_repo("fuzzed", {"README": "fuzz\n"})
    farm = fresh_farm("--allow-repo", f"git://127.0.0.1:{git_server.port}/")
    specs = {"BF_FUZZ_REPO": repo, "BF_FUZZ_IMAGE": IMAGE}
    # Revoking the admin token would leave the rest of the run testing 401s only.
    st_run(farm, tmp_path, farm.token, "api", "--exclude-path-regex", "^/api/v1/tokens/", env=specs)
    # Build specs, many of them: a valid spec with hostile text in one field (fuzz_hooks.py).
    st_run(farm, tmp_path / "specs", farm.token, "specs", "--include-path-regex", "^/api/v1/builds$",
           "--include-method", "POST", env=specs)

    # The agent's routes, with the agent token of a build that waits (it never runs).
    made = farm.api("POST", "/api/v1/builds", json={"repo": repo, "image": IMAGE, "steps": ["true"],
                                                    "resources": {"cpus": 1000}, "wait_for_capacity": True})
    assert made.status_code == 201, made.text
    build_id = made.json()["id"]
    token = new_agent_token()  # as a launch gives one to the build's agent
    redis.Redis.from_url(farm.redis_url()).hset(build_key(build_id), "token_sha", token_digest(token))
    st_run(farm, tmp_path / "agent", token, "agent", "--include-path-regex", "^/api/v1/agent/builds/",
           env={"BF_FUZZ_BUILD": build_id})
