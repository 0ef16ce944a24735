"""The pure placement core: feasibility, ranking and selection, each alone, then together."""

from __future__ import annotations

from buildfarm.placement import Agent, Offer, PendingBuild, Resources, constraints_met, plan, unmet_reason
from buildfarm.placement.rank import agent_rank, build_order


def agent(aid, cpus=4, mem=8192, **attrs):
    return Agent(aid, aid, Resources(cpus, mem), attrs)


def build(bid, cpus=1, mem=512, priority=1, seq=0, constraints=()):
    return PendingBuild(bid, Resources(cpus, mem), tuple(constraints), priority, seq)


def full_offers(agents):
    return [Offer(a.agent_id, a.capacity) for a in agents]


# -- feasibility ------------------------------------------------------------------------------

def test_constraints_equal_and_not_equal():
    attrs = {"arch": "x86_64", "os": "el9"}
    assert constraints_met(attrs, (("arch", "==", "x86_64"),))
    assert not constraints_met(attrs, (("arch", "==", "aarch64"),))
    assert constraints_met(attrs, (("os", "!=", "el7"),))
    assert not constraints_met(attrs, (("os", "!=", "el9"),))
    assert not constraints_met(attrs, (("gpu", "==", "yes"),))


def test_resources_cover_with_float_sums():
    assert Resources(0.3, 100).covers(Resources(0.1 + 0.2, 100))
    assert not Resources(1, 100).covers(Resources(1, 101))


def test_unmet_reason_names_the_missing_attribute_or_resource():
    agents = [agent("a", cpus=2, mem=1024, arch="x86_64")]
    assert "arch:aarch64" in unmet_reason(agents, build("b", constraints=[("arch", "==", "aarch64")]))
    assert "8 cpus (largest agent has 2)" in unmet_reason(agents, build("b", cpus=8))
    assert "4096 MB memory" in unmet_reason(agents, build("b", mem=4096))
    assert unmet_reason(agents, build("b")) is None
    assert unmet_reason([], build("b", cpus=999)) is None  # nothing known yet: cannot say never


# -- ranking ----------------------------------------------------------------------------------

def test_builds_are_ordered_by_priority_then_arrival():
    builds = [build("low", priority=2, seq=1), build("n2", seq=3), build("high", priority=0, seq=9), build("n1", seq=2)]
    assert [b.build_id for b in sorted(builds, key=build_order)] == ["high", "n1", "n2", "low"]


def test_agents_rank_tightest_fit_first():
    offers = [Offer("big", Resources(8, 16000)), Offer("small", Resources(2, 4000)), Offer("mid", Resources(4, 8000))]
    assert [o.agent_id for o in sorted(offers, key=agent_rank)] == ["small", "mid", "big"]


# -- selection --------------------------------------------------------------------------------

def test_best_fit_leaves_the_big_hole_for_a_big_build():
    agents = [agent("big", cpus=8), agent("small", cpus=2)]
    p = plan(agents, full_offers(agents), [build("s", cpus=1, seq=1), build("L", cpus=8, seq=2)])
    assert {(l.build_id, l.agent_id) for l in p.launches} == {("s", "small"), ("L", "big")}


def test_constraints_steer_builds_to_matching_agents():
    agents = [agent("x1", arch="x86_64"), agent("arm", arch="aarch64"), agent("x2", arch="x86_64", os="el9")]
    pending = [build("a", seq=1, constraints=[("arch", "==", "aarch64")]),
               build("e", seq=2, constraints=[("os", "==", "el9")]),
               build("x", seq=3, constraints=[("arch", "!=", "aarch64")])]
    got = {l.build_id: l.agent_id for l in plan(agents, full_offers(agents), pending).launches}
    assert got["a"] == "arm" and got["e"] == "x2" and got["x"] in ("x1", "x2")


def test_fifo_within_a_priority_when_capacity_is_short():
    agents = [agent("a", cpus=2)]
    pending = [build(f"b{i}", cpus=1, seq=i) for i in (3, 1, 2)]
    assert [l.build_id for l in plan(agents, full_offers(agents), pending).launches] == ["b1", "b2"]


def test_high_priority_goes_first():
    agents = [agent("a", cpus=1)]
    pending = [build("normal", seq=1), build("high", priority=0, seq=2)]
    assert [l.build_id for l in plan(agents, full_offers(agents), pending).launches] == ["high"]


def test_builds_no_agent_can_ever_run_are_reported_not_left_waiting():
    agents = [agent("a", cpus=2, arch="x86_64")]
    pending = [build("huge", cpus=16, seq=1), build("arm", seq=2, constraints=[("arch", "==", "aarch64")]),
               build("ok", seq=3)]
    p = plan(agents, full_offers(agents), pending)
    assert set(p.impossible) == {"huge", "arm"}
    assert [l.build_id for l in p.launches] == ["ok"]


def test_no_offer_no_launch_but_no_error_either():
    agents = [agent("a", cpus=2)]
    p = plan(agents, [], [build("b", seq=1)])
    assert p.launches == [] and p.impossible == {}


def test_a_large_build_is_not_starved_by_a_stream_of_small_ones():
    """Simulate rounds: small builds keep arriving and finishing; the large one must get its turn."""
    agents = [agent("a", cpus=4)]
    running: dict[str, int] = {}  # build id -> rounds left
    pending = [build("large", cpus=4, seq=0)]
    seq = 1
    for i in range(3):  # the agent is busy with small builds when the large one arrives
        running[f"pre{i}"] = i + 1
    placed_large_at = None
    for rnd in range(50):
        # two new small builds arrive every round, forever
        pending += [build(f"s{seq}", cpus=1, seq=seq), build(f"s{seq + 1}", cpus=1, seq=seq + 1)]
        seq += 2
        used = sum(1 if not b.startswith("large") else 4 for b in running)
        offers = [Offer("a", Resources(4 - used, 8192))]
        p = plan(agents, offers, pending)
        for launch in p.launches:
            running[launch.build_id] = 3
            pending = [b for b in pending if b.build_id != launch.build_id]
            if launch.build_id == "large":
                placed_large_at = rnd
        running = {b: left - 1 for b, left in running.items() if left > 1}
        if placed_large_at is not None:
            break
    assert placed_large_at is not None and placed_large_at <= 5


def test_the_reserved_agent_still_backfills_elsewhere():
    agents = [agent("big", cpus=4), agent("other", cpus=2)]
    offers = [Offer("big", Resources(1, 8192)), Offer("other", Resources(2, 8192))]
    p = plan(agents, offers, [build("large", cpus=4, seq=1), build("small", cpus=1, seq=2)])
    assert p.reserved == {"big": "large"}
    assert [(l.build_id, l.agent_id) for l in p.launches] == [("small", "other")]


def test_plan_is_deterministic_and_never_overcommits():
    agents = [agent(f"a{i}", cpus=4, mem=4096) for i in range(10)]
    pending = [build(f"b{i}", cpus=(i % 3) + 0.5, mem=256 * ((i % 4) + 1), seq=i) for i in range(200)]
    p1 = plan(agents, full_offers(agents), pending)
    p2 = plan(agents, full_offers(agents), list(reversed(pending)))
    assert p1.launches == p2.launches
    used: dict[str, list[float]] = {}
    req = {b.build_id: b.request for b in pending}
    for l in p1.launches:
        u = used.setdefault(l.agent_id, [0.0, 0])
        u[0] += req[l.build_id].cpus
        u[1] += req[l.build_id].mem
    assert all(c <= 4 + 1e-9 and m <= 4096 for c, m in used.values())
    assert len(p1.launches) >= 10
