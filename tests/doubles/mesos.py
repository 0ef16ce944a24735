"""The Mesos master double's first name, kept for the tests and benchmarks written against it
(tests/test_mesos_e2e.py, bench). The double itself is tests/doubles/mesos_master.py; this
only keeps the first version's defaults (kill grace 1 s, updates re-sent after 2 s)."""

from __future__ import annotations

from .mesos_master import LABEL, TERMINAL, AgentSpec, MesosMasterDouble

__all__ = ["LABEL", "TERMINAL", "AgentSpec", "MesosDouble", "MesosMasterDouble"]


class MesosDouble(MesosMasterDouble):
    def __init__(self, agents, heartbeat_seconds: float = 15.0, kill_grace: float = 1.0,
                 update_retry_seconds: float = 2.0, port: int = 0, **options):
        super().__init__(agents, heartbeat_seconds=heartbeat_seconds, kill_grace=kill_grace,
                         update_retry_seconds=update_retry_seconds, port=port, **options)
