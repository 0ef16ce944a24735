"""The scheduler: a pure placement core (feasible -> rank -> select) and the loop that drives it."""

from .feasible import Agent, Offer, PendingBuild, Resources, constraints_met, unmet_reason
from .select import Launch, Plan, plan

__all__ = ["Agent", "Launch", "Offer", "PendingBuild", "Plan", "Resources", "constraints_met", "plan", "unmet_reason"]
