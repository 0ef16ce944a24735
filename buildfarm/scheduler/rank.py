"""Ranking: the order in which builds are considered, and agents are preferred.

Builds: priority first (0 = high), then arrival order (FIFO within a priority).
Agents: best fit -- the agent with the least free room that still fits is preferred, so large
holes stay open for large builds (bin packing, as Nomad's default does).
"""

from __future__ import annotations

from .feasible import Offer, PendingBuild


def build_order(build: PendingBuild) -> tuple[int, int]:
    return (build.priority, build.seq)


def agent_rank(offer: Offer) -> tuple[float, int, int, str]:
    """Lower ranks first: the tightest fit wins; the agent id breaks ties deterministically."""
    f = offer.free
    return (f.cpus, f.mem, f.disk, offer.agent_id)
