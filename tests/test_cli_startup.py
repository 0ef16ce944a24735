"""The CLI starts fast because it imports only what a command uses: `import buildfarm.cli`, and
`buildfarm --help`, must not load the farm's heavy modules (each costs tens of milliseconds of
every `buildfarm status`). A guard, not a timing: it fails when a top-level import comes back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import BUILDFARM, ROOT

HEAVY = ["pydantic", "redis", "cryptography", "fastapi", "uvicorn", "rq", "git", "httpx", "yaml", "docker",
         "jenkins", "croniter", "buildfarm.server", "buildfarm.service", "buildfarm.spec", "buildfarm.auth",
         "buildfarm.triggers.dispatch", "buildfarm.pipelines.model", "buildfarm.jenkins.bridge"]

# Runs the command in-process, then prints which heavy modules it loaded and its exit code.
PROBE = """
import json, sys
heavy, code = json.loads(sys.argv[1]), 0
try:
    {run}
except SystemExit as e:
    code = e.code
print(json.dumps([sorted(m for m in heavy if m in sys.modules), code]), file=sys.stderr)
"""


def loaded_by(run: str, *args: str, heavy: list[str] = HEAVY, exit_code: int = 0) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(run=run), json.dumps(heavy), *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    loaded, code = json.loads(out.stderr.strip().splitlines()[-1])
    assert code == exit_code, out.stderr
    return loaded


def test_importing_the_cli_loads_no_heavy_module():
    # Not even the HTTP client's transport: it is loaded at the first request.
    assert loaded_by("import buildfarm.cli", heavy=HEAVY + ["http.client"]) == []


@pytest.mark.parametrize("argv", [["--help"], ["submit", "--help"], ["status", "--help"], ["pipeline", "--help"]])
def test_help_loads_no_heavy_module(argv):
    run = "from buildfarm.cli import main; main(sys.argv[2:], prog_name='buildfarm')"
    assert loaded_by(run, *argv, heavy=HEAVY + ["http.client"]) == []


@pytest.mark.parametrize("argv", [["status", "abc123"], ["list"], ["pipeline", "run", "nightly-ib", "--wait"],
                                  ["submit", "--repo", "git://127.0.0.1/app.git", "--image", "img", "--wait", "--",
                                   "true"]])
def test_commands_go_as_far_as_the_farm_with_light_modules_only(argv):
    """Each command goes as far as its HTTP call (the farm does not answer: exit 125) without the
    farm's modules: the API validates a spec, the CLI shows its answer."""
    run = "from buildfarm.cli import main; main(sys.argv[2:], prog_name='buildfarm')"
    assert loaded_by(run, "--server", "http://127.0.0.1:9", *argv, exit_code=125) == []


def test_the_installed_command_shows_its_help():
    out = subprocess.run([BUILDFARM, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "submit" in out.stdout and "pipeline" in out.stdout
