"""The table of which build state may follow which (states.COMES_FROM), as a real store enforces
it: each pair of states is tried on a real build in a real Redis, and the record says what
happened. The expected table is written out here, apart from the code's, so a change to the
code's table shows up as a row that fails."""

from __future__ import annotations

import itertools

import pytest
import redis

from buildfarm.records import BuildStore
from buildfarm.spec import BuildSpec
from buildfarm.states import State

Q, L, R = State.QUEUED, State.LAUNCHING, State.RUNNING
S, F, T, C, E = State.SUCCEEDED, State.FAILED, State.TIMED_OUT, State.CANCELLED, State.ERROR

# to: the states a build may come from
EXPECTED = {Q: {L, R}, L: {Q}, R: {L}, S: {L, R}, F: {L, R}, T: {R}, C: {Q, L, R}, E: {Q, L, R}}
# how a build is walked to each state first
PATH = {Q: [], L: [L], R: [L, R], **{end: [L, R, end] for end in (S, F, T, C, E)}}


@pytest.fixture
def store(redis_url):
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.flushdb()
    return BuildStore(r)


def build_in(store: BuildStore, state: State) -> str:
    record, _token = store.create(BuildSpec(repo="/tmp/repo", image="img", steps=["true"]))
    for step in PATH[state]:
        assert store.transition(record["id"], step, f"walked to {step.value}")
    assert store.state(record["id"]) == state.value
    return record["id"]


@pytest.mark.parametrize("before,after", list(itertools.product(State, State)),
                         ids=lambda s: s.value)
def test_a_state_follows_only_the_states_the_table_names(store, before, after):
    bid = build_in(store, before)
    moved = store.transition(bid, after, "tried")
    assert moved == (before in EXPECTED[after])
    assert store.state(bid) == (after if moved else before).value
    assert store.history(bid)[-1]["reason"] == ("tried" if moved else f"walked to {before.value}"
                                                if PATH[before] else "submitted")


def test_a_caller_may_narrow_the_table_but_not_widen_it(store):
    queued = build_in(store, Q)
    assert not store.transition(queued, E, "only a launched build", allowed_from=[L, R])
    assert store.state(queued) == "queued"
    with pytest.raises(ValueError, match="succeeded never follows queued"):
        store.transition(queued, S, "widened", allowed_from=[Q, R])
    assert store.state(queued) == "queued"
