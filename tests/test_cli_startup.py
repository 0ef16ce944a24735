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

# Runs the command in-process, then prints which heavy modules it loaded.
PROBE = """
import json, sys
heavy = json.loads(sys.argv[1])
try:
    {run}
except SystemExit:
    pass
print(json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)
"""


def loaded_by(run: str, *args: str, heavy: list[str] = HEAVY) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(run=run), json.dumps(heavy), *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    return json.loads(out.stderr.strip().splitlines()[-1])


def test_importing_the_cli_loads_no_heavy_module():
    # Not even the HTTP client's transport: it is loaded at the first request.
    assert loaded_by("import buildfarm.cli", heavy=HEAVY + ["http.client"]) == []


@pytest.mark.parametrize("argv", [["--help"], ["submit", "--help"], ["status", "--help"], ["pipeline", "--help"]])
def test_help_loads_no_heavy_module(argv):
    run = "from buildfarm.cli import main; main(sys.argv[2:], prog_name='buildfarm')"
    assert loaded_by(run, *argv, heavy=HEAVY + ["http.client"]) == []


def test_status_of_an_unreachable_farm_loads_no_heavy_module():
    """`status` goes as far as the HTTP call (the farm does not answer) with the light modules only."""
    run = "from buildfarm.cli import main; main(sys.argv[2:], prog_name='buildfarm')"
    assert loaded_by(run, "--server", "http://127.0.0.1:9", "status", "abc123") == []


def test_the_installed_command_shows_its_help():
    out = subprocess.run([BUILDFARM, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "submit" in out.stdout and "pipeline" in out.stdout
