"""How Mesos task states and offers map to buildfarm's terms (pure functions of the backend)."""

from __future__ import annotations

import pytest

from buildfarm.backends.base import EXITED, LAUNCH_FAILED, LOST
from buildfarm.backends.mesos import _attributes, _scalars, exit_for_status, parse_task_id, task_id_for


def status(state, reason="", message="", source="SOURCE_EXECUTOR"):
    s = {"task_id": {"value": "abc123-2"}, "state": state, "agent_id": {"value": "agent-1"}, "source": source}
    if reason:
        s["reason"] = reason
    if message:
        s["message"] = message
    return s


def test_task_ids_carry_build_and_attempt():
    assert task_id_for("abc123", 2) == "abc123-2"
    assert parse_task_id("abc123-2") == ("abc123", 2)


@pytest.mark.parametrize("state", ["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"])
def test_live_states_are_not_an_end(state):
    assert exit_for_status(status(state)) is None


def test_finished_is_a_normal_exit():
    ev = exit_for_status(status("TASK_FINISHED"))
    assert (ev.build_id, ev.attempt, ev.code, ev.kind) == ("abc123", 2, 0, EXITED)


def test_failed_carries_the_containers_exit_status_from_the_message():
    # As a Mesos 1.12 master reports a command that exits 3 (shared/mesos-v1 transcript).
    ev = exit_for_status(status("TASK_FAILED", "", "Container exited with status 3"))
    assert ev.code == 3 and ev.kind == EXITED


def test_a_missing_image_is_a_launch_failure_not_worth_a_retry():
    ev = exit_for_status(status("TASK_FAILED", "REASON_CONTAINER_LAUNCH_FAILED",
                                "Failed to launch container: Failed to run 'docker pull no/such': exited 1",
                                "SOURCE_AGENT"))
    assert ev.kind == LAUNCH_FAILED and "no/such" in ev.detail


def test_a_farm_that_did_not_serve_the_agent_is_a_loss_not_the_builds_failure():
    # The only URI of a task is the farm's agent bundle: a fetch failure is the farm restarting.
    ev = exit_for_status(status("TASK_FAILED", "REASON_CONTAINER_LAUNCH_FAILED",
                                "Failed to launch container: Failed to fetch all URIs for container 'c1': exited "
                                "with status 1 (Remote end closed connection without response)", "SOURCE_AGENT"))
    assert ev.kind == LOST and "could not be fetched from the farm" in ev.detail


@pytest.mark.parametrize("state", ["TASK_FAILED", "TASK_KILLED", "TASK_ERROR"])
def test_a_reconciliation_saying_a_task_ended_is_a_loss_not_the_builds_failure(state):
    # Mesos answers explicit reconciliation of a task whose end is not acknowledged yet with that
    # state and nothing of its cause (apache/mesos src/master/master.cpp, Master::reconcile, case 1);
    # the agent re-sends its own update, with the cause, only after its backoff.
    ev = exit_for_status(status(state, "REASON_RECONCILIATION", "Reconciliation: Latest task state", "SOURCE_MASTER"))
    assert (ev.build_id, ev.attempt, ev.kind) == ("abc123", 2, LOST)
    assert state in ev.detail and "does not say why" in ev.detail


def test_a_reconciliation_saying_a_task_finished_is_still_a_normal_exit():
    ev = exit_for_status(status("TASK_FINISHED", "REASON_RECONCILIATION", "Reconciliation: Latest task state",
                                "SOURCE_MASTER"))
    assert (ev.code, ev.kind) == (0, EXITED)


def test_out_of_memory_is_the_builds_failure():
    ev = exit_for_status(status("TASK_FAILED", "REASON_CONTAINER_LIMITATION_MEMORY", "Memory limit exceeded"))
    assert ev.code == 137 and "out of memory" in ev.detail


@pytest.mark.parametrize("state", ["TASK_LOST", "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR",
                                   "TASK_UNREACHABLE", "TASK_UNKNOWN"])
def test_infrastructure_losses_are_retried(state):
    ev = exit_for_status(status(state, "REASON_AGENT_REMOVED", source="SOURCE_MASTER"))
    assert ev.kind == LOST and state in ev.detail


def test_task_error_is_a_launch_failure():
    ev = exit_for_status(status("TASK_ERROR", "REASON_TASK_INVALID", "Task uses more resources than offered"))
    assert ev.kind == LAUNCH_FAILED and "more resources" in ev.detail


def test_offer_resources_and_attributes():
    resources = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}, "role": "*"},
                 {"name": "mem", "type": "SCALAR", "scalar": {"value": 7936.0}, "role": "*"},
                 {"name": "disk", "type": "SCALAR", "scalar": {"value": 1000.0}, "role": "*"},
                 {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 32000}]}},
                 {"name": "cpus", "type": "SCALAR", "scalar": {"value": 8.0}, "role": "other-team"}]
    r = _scalars(resources, "*")
    assert (r.cpus, r.mem, r.disk) == (4.0, 7936, 1000)
    attrs = [{"name": "arch", "type": "TEXT", "text": {"value": "aarch64"}},
             {"name": "rack", "type": "SCALAR", "scalar": {"value": 3.0}}]
    assert _attributes(attrs) == {"arch": "aarch64", "rack": "3"}
