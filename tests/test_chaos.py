"""The chaos suite's short version (bench/chaos.py; `make chaos` runs the full one): each fault of
its registry injected once during a real build (then a probe build placed after it), on the local
Docker backend and on the Mesos backend with the master double (the dockerd restart on a local farm
of its own, on a private dockerd with live-restore). No build may be lost, run twice or left
non-terminal, and the farm must leave no container behind. (Recovery times are figures, in
`make chaos`, not asserted.)"""

from __future__ import annotations

import os

import pytest

from bench.chaos import FAULTS, QUICK, failures, run, table

from .conftest import need

pytestmark = pytest.mark.docker


def test_each_fault_once_during_builds_loses_none_runs_none_twice_leaves_none_stuck(tmp_path, docker_engine,
                                                                                   redis_binary):
    need(os.geteuid() == 0, "root (the disk-full fault mounts a small tmpfs)")
    tallies = run(["local", "mesos"], list(FAULTS), rounds=1, builds=1, seed=11, tmp=tmp_path, pace=QUICK)
    injected = {(t.backend, t.fault.name) for t in tallies if t.injections}
    assert ("local", "farm-sigkill") in injected and ("mesos", "mesos-master-restart") in injected, table(tallies)
    assert all(t.injections == 1 for t in tallies if t.fault.inject is not None), table(tallies)
    assert failures(tallies, timings=False) == [], table(tallies)
