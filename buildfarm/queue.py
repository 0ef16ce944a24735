"""Builds as RQ jobs: one RQ queue per priority, so `rq info` shows what waits, and RQ's
registries (started, finished, failed, canceled) show what ran. buildfarm's scheduler is the
only consumer: it takes the builds that fit the offers it holds, rather than an RQ worker
popping the head of a queue.
"""

from __future__ import annotations

import redis
from rq import Queue
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.registry import CanceledJobRegistry, FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from .spec import PRIORITIES
from .states import State

RESULT_TTL = 7 * 24 * 3600


def run_build(build_id: str) -> None:  # pragma: no cover - guard only
    """The RQ job function. Builds are run by the buildfarm scheduler, never by an `rq worker`."""
    raise RuntimeError("buildfarm builds are placed by `buildfarm scheduler`, not executed by rq workers")


def queue_name(priority: str) -> str:
    return f"buildfarm-{priority}"


class BuildQueue:
    def __init__(self, rq_conn: redis.Redis):
        self.conn = rq_conn
        self.queues = {p: Queue(queue_name(p), connection=rq_conn) for p in PRIORITIES}

    def enqueue(self, build_id: str, priority: str, description: str) -> None:
        self.queues[priority].enqueue(run_build, build_id, job_id=build_id, description=description,
                                      result_ttl=RESULT_TTL, failure_ttl=RESULT_TTL, job_timeout=-1)

    def pending(self) -> list[tuple[str, str]]:
        """(priority, build id) of every queued build, in queue order, highest priority first."""
        out = []
        for p in PRIORITIES:
            out += [(p, i) for i in self.queues[p].get_job_ids()]
        return out

    def depth(self) -> dict[str, int]:
        return {p: self.queues[p].count for p in PRIORITIES}

    def drop(self, build_id: str, priority: str) -> None:
        """Take a build out of its queue without a trace in RQ's registries (its record is gone)."""
        self.queues[priority].remove(build_id)

    def mark_started(self, build_id: str, priority: str, timeout: int) -> None:
        """Move the job from its queue to RQ's started registry, for as long as the build may run."""
        q = self.queues[priority]
        job = Job.fetch(build_id, connection=self.conn)
        with self.conn.pipeline() as pipe:
            q.remove(build_id, pipeline=pipe)
            Execution.create(job, ttl=timeout + 24 * 3600, pipeline=pipe)
            job.set_status(JobStatus.STARTED, pipeline=pipe)
            pipe.execute()

    def requeue(self, build_id: str, priority: str) -> None:
        """Put a launched build back at the front of its queue (its launch was lost)."""
        q = self.queues[priority]
        job = Job.fetch(build_id, connection=self.conn)
        with self.conn.pipeline() as pipe:
            StartedJobRegistry(queue=q).remove_executions(job, pipeline=pipe)
            q.remove(build_id, pipeline=pipe)
            job.set_status(JobStatus.QUEUED, pipeline=pipe)
            q.push_job_id(build_id, pipeline=pipe, at_front=True)
            pipe.execute()

    def restore(self, build_id: str, priority: str, description: str) -> None:
        """Queue a build whose record says queued but which no queue holds (its job or its place in
        the queue was lost, e.g. with writes a Redis failover did not replicate)."""
        try:
            Job.fetch(build_id, connection=self.conn)
        except Exception:
            self.enqueue(build_id, priority, description)
            return
        self.requeue(build_id, priority)

    def mark_ended(self, build_id: str, priority: str, state: State) -> None:
        """Move the RQ job to the registry matching the build's final state."""
        q = self.queues[priority]
        try:
            job = Job.fetch(build_id, connection=self.conn)
        except Exception:
            return
        with self.conn.pipeline() as pipe:
            q.remove(build_id, pipeline=pipe)
            StartedJobRegistry(queue=q).remove_executions(job, pipeline=pipe)
            if state is State.SUCCEEDED:
                FinishedJobRegistry(queue=q).add(job, RESULT_TTL, pipeline=pipe)
                job.set_status(JobStatus.FINISHED, pipeline=pipe)
            elif state is State.CANCELLED:
                CanceledJobRegistry(queue=q).add(job, RESULT_TTL, pipeline=pipe)
                job.set_status(JobStatus.CANCELED, pipeline=pipe)
            else:
                FailedJobRegistry(queue=q).add(job, RESULT_TTL, exc_string=f"build {state.value}", pipeline=pipe)
                job.set_status(JobStatus.FAILED, pipeline=pipe)
            pipe.execute()
