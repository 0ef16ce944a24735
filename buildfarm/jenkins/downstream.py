"""Results reported back to Jenkins: when a buildfarm pipeline run ends, trigger a downstream
Jenkins job with the run's id and outcome (python-jenkins' build_job: POST
/job/NAME/buildWithParameters).

`notify_pipeline_end` is the one call; `PipelineWatcher` feeds it from the farm's
`GET /api/v1/pipeline-runs` for a bridge started with --on-pipeline-end JOB.
"""

from __future__ import annotations

import jenkins

from ..client import Client, ClientError

ENDED = {"succeeded", "failed", "cancelled", "error", "timed_out"}


def notify_pipeline_end(server: jenkins.Jenkins, job: str, run_id: str, outcome: str,
                        pipeline: str | None = None) -> int:
    """Queue Jenkins job `job` with parameters BUILDFARM_PIPELINE_RUN, BUILDFARM_PIPELINE_OUTCOME
    (and BUILDFARM_PIPELINE); returns Jenkins' queue item number."""
    params = {"BUILDFARM_PIPELINE_RUN": run_id, "BUILDFARM_PIPELINE_OUTCOME": outcome}
    if pipeline:
        params["BUILDFARM_PIPELINE"] = pipeline
    return server.build_job(job, params)


class PipelineWatcher:
    """Triggers `job` once for every pipeline run that ends after the watcher started (the runs
    that had ended before are its baseline)."""

    def __init__(self, server: jenkins.Jenkins, farm: Client, job: str, emit):
        self.server, self.farm, self.job, self.emit = server, farm, job, emit
        self.seen: set[str] | None = None
        self.disabled = False

    def check(self) -> None:
        if self.disabled:
            return
        try:
            runs = self.farm._request("GET", "/api/v1/pipeline-runs", params={"limit": 100})["runs"]
        except ClientError as e:
            if e.status == 404:
                self.disabled = True
                self.emit("error", message="this farm has no pipeline runs (GET /api/v1/pipeline-runs: 404); "
                                           "--on-pipeline-end is off")
                return
            raise
        ended = {r["id"]: r for r in runs if r.get("state") in ENDED}
        if self.seen is None:
            self.seen = set(ended)
            return
        for run_id, r in ended.items():
            if run_id in self.seen:
                continue
            item = notify_pipeline_end(self.server, self.job, run_id, r["state"], r.get("pipeline"))
            self.seen.add(run_id)
            self.emit("downstream-triggered", job=self.job, run=run_id, outcome=r["state"], queue_item=item)
