"""Results reported back to Jenkins: when a buildfarm pipeline run ends, trigger a downstream
Jenkins job with the run's id and outcome (python-jenkins' build_job: POST
/job/NAME/buildWithParameters).

`notify_pipeline_end` is the one call; `PipelineWatcher` feeds it from the farm's
`GET /api/v1/pipeline-runs` for a bridge started with --on-pipeline-end JOB.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jenkins

from ..client import Client, ClientError
from ..states import TERMINAL_STATES as ENDED

WINDOW = 100  # the newest runs looked at on each check


def notify_pipeline_end(server: jenkins.Jenkins, job: str, run_id: str, outcome: str,
                        pipeline: str | None = None) -> int:
    """Queue Jenkins job `job` with parameters BUILDFARM_PIPELINE_RUN, BUILDFARM_PIPELINE_OUTCOME
    (and BUILDFARM_PIPELINE); returns Jenkins' queue item number."""
    params = {"BUILDFARM_PIPELINE_RUN": run_id, "BUILDFARM_PIPELINE_OUTCOME": outcome}
    if pipeline:
        params["BUILDFARM_PIPELINE"] = pipeline
    return server.build_job(job, params)


class StateFileError(ValueError):
    pass


class PipelineWatcher:
    """Triggers `job` once for every pipeline run that ends after the watcher first started (the
    runs that had ended before are its baseline).

    Without `state_file` that baseline is taken at every start, so runs that end while the bridge
    is down are never reported. With it, the runs already handled (reported, or in the first
    baseline) are kept in that file, and a restarted watcher reports the runs that ended meanwhile.
    The file is rewritten after each report; a crash between the two reports that run again."""

    def __init__(self, server: jenkins.Jenkins, farm: Client, job: str, emit, state_file: str | Path | None = None):
        self.server, self.farm, self.job, self.emit = server, farm, job, emit
        self.state_file = Path(state_file) if state_file else None
        self.seen: set[str] | None = self._load()
        self.disabled = False

    def _load(self) -> set[str] | None:
        f = self.state_file
        if f is None:
            return None
        if not f.parent.is_dir():
            raise StateFileError(f"{f}: its directory {f.parent} does not exist")
        if not f.exists():
            return None  # the first start: the baseline is taken on the first check
        try:
            data = json.loads(f.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("handled"), list):
                raise ValueError("no 'handled' list")
            return {str(x) for x in data["handled"]}
        except (OSError, ValueError) as e:
            raise StateFileError(f"{f} is not a state file of the bridge ({e}); remove it to start afresh "
                                 f"(runs that ended while the bridge was down are then not reported)") from None

    def _save(self, listed: set[str]) -> None:
        if self.state_file is None:
            return
        # Only runs still in the window: a run that left it (older than the newest WINDOW) never returns.
        handled = sorted(self.seen & listed)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps({"job": self.job, "handled": handled}) + "\n")
        os.replace(tmp, self.state_file)

    def check(self) -> None:
        if self.disabled:
            return
        try:
            runs = self.farm.runs(limit=WINDOW)
        except ClientError as e:
            if e.status == 404:
                self.disabled = True
                self.emit("error", message="this farm has no pipeline runs (GET /api/v1/pipeline-runs: 404); "
                                           "--on-pipeline-end is off")
                return
            raise
        ended = {r["id"]: r for r in runs if r.get("state") in ENDED}
        listed = {r["id"] for r in runs}
        if self.seen is None:
            self.seen = set(ended)
            self._save(listed)
            return
        for run_id, r in ended.items():
            if run_id in self.seen:
                continue
            item = notify_pipeline_end(self.server, self.job, run_id, r["state"], r.get("pipeline"))
            self.seen.add(run_id)
            self._save(listed)
            self.emit("downstream-triggered", job=self.job, run=run_id, outcome=r["state"], queue_item=item)
