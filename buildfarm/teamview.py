"""What the dashboard's Teams page shows, read from Redis: each team's guarantee and share of the
pool now and over time, who borrows from whom, what waits and for how long, and the balances."""

from __future__ import annotations

import time
from typing import Any

from .loans import with_loans
from .market import lending
from .placement import Resources
from .placement.feasible import NOTHING, total
from .placement.rank import dominant_share


def overview(farm, hours: float = 6.0) -> dict[str, Any]:
    now = time.time()
    teams = with_loans(farm.teams.core_teams(), farm.loans.all(now), now)
    pool = total(Resources(a["capacity"]["cpus"], a["capacity"]["mem"]) for a in farm.builds.agents())
    used: dict[str | None, Resources] = {}
    for b in farm.builds.get_many(farm.builds.active_ids()):
        if b["state"] in ("launching", "running"):
            r = b["spec"].get("resources") or {}
            used[b["team"]] = used.get(b["team"], NOTHING).plus(Resources(r.get("cpus", 1.0), r.get("mem", 1024)))
    waiting: dict[str | None, list[float]] = {}
    for b in farm.builds.get_many(bid for _, bid in farm.queue.pending()):
        if b["state"] == "queued":
            waiting.setdefault(b["team"], []).append(b["created_at"])
    balances = farm.ledger.balances()
    rows = []
    for name, t in sorted(teams.items()):
        u = used.get(name, NOTHING)
        rows.append({"name": name, "guarantee": {"cpus": t.guarantee.cpus, "mem": t.guarantee.mem},
                     "guarantee_share": round(dominant_share(t.guarantee, pool), 4),
                     "used": {"cpus": u.cpus, "mem": u.mem}, "share": round(dominant_share(u, pool), 4),
                     "waiting": len(waiting.get(name, [])),
                     "oldest_wait": round(now - min(waiting[name]), 1) if waiting.get(name) else None,
                     "balance": round(balances.get(name, 0.0), 3)})
    return {"now": now, "pool": {"cpus": pool.cpus, "mem": pool.mem}, "teams": rows,
            "borrowing": lending(teams, used), "history": farm.stats.shares(now - hours * 3600)}
