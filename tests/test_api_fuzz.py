"""A schema-driven fuzz run (schemathesis) against the OpenAPI document of a running farm: no
request it generates may get a 5xx answer. The farm only builds repositories of the test's git
server (--allow-repo), so generated specs never make it reach beyond 127.0.0.1."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ST = str(Path(sys.executable).parent / "st")


def test_no_generated_request_gets_a_server_error(fresh_farm, git_server, tmp_path):
    farm = fresh_farm("--allow-repo", f"git://127.0.0.1:{git_server.port}/")
    run = subprocess.run(
        [ST, "run", f"{farm.url}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "25",
         "--header", f"Authorization: Bearer {farm.token}", "--request-timeout", "20", "--workers", "2",
         "--generation-database", "none", "--seed", "1",
         # Revoking the admin token would leave the rest of the run testing 401s only.
         "--exclude-path-regex", "^/api/v1/tokens/",
         "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    print(run.stdout)
    tested = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert tested and int(tested.group(2)) > 500, run.stdout[-3000:]  # a real run, not an empty one
