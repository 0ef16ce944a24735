"""Placement: the pure core that says which build runs where (feasible -> rank -> select, then reclaim)."""

from .feasible import Agent, Offer, PendingBuild, Resources, Running, Team, constraints_met, unmet_reason
from .reclaim import Kill
from .select import Launch, Placement, Policy, plan

__all__ = ["Agent", "Kill", "Launch", "Offer", "PendingBuild", "Placement", "Policy", "Resources", "Running", "Team",
           "constraints_met", "plan", "unmet_reason"]
