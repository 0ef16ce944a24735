"""Accounting: what builds used, summed by team, user, pipeline or trigger.

A build's reserved use is its request held for as long as its attempts held it: cpu-seconds =
cpus x seconds from each attempt's launch to its end (a preempted attempt counts too), memory-
seconds = MB x seconds. The farm records an attempt's use when it ends (`Farm._charge_attempt`);
a build still running counts its current attempt up to `now`. Pure: the records come in, the
sums go out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

BY = ("team", "user", "pipeline", "trigger")
_SINCE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>[smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> float:
    """'7d', '12h', '30m' as seconds."""
    m = _SINCE.match(text.strip())
    if not m:
        raise ValueError(f"since {text!r}: write a number and a unit (s, m, h, d, w), e.g. 7d or 12h")
    return float(m["n"]) * _SECONDS[m["unit"]]


def key_of(rec: dict[str, Any], by: str) -> str:
    spec = rec["spec"]
    if by == "team":
        return spec.get("team") or "(no team)"
    if by == "user":
        return rec.get("submitted_by") or (spec.get("trigger") or {}).get("user") or "(nobody)"
    if by == "pipeline":
        return ((spec.get("trigger") or {}).get("detail") or {}).get("pipeline") or "(no pipeline)"
    return (spec.get("trigger") or {}).get("kind") or "api"


def reserved(rec: dict[str, Any], now: float) -> tuple[float, float, float]:
    """(seconds held, cpu-seconds, memory MB-seconds) the build held its request for."""
    done = rec.get("reserved") or {}
    seconds, cpu_s, mem_s = done.get("seconds", 0.0), done.get("cpu_seconds", 0.0), done.get("mem_mb_seconds", 0.0)
    if rec.get("state") in ("launching", "running") and rec.get("launched_at"):  # the attempt holding it now
        res = rec["spec"].get("resources") or {}
        held = max(0.0, now - rec["launched_at"])
        seconds, cpu_s = seconds + held, cpu_s + held * float(res.get("cpus", 1.0))
        mem_s += held * float(res.get("mem", 1024))
    return seconds, cpu_s, mem_s


def summarize(records: Iterable[dict[str, Any]], by: str, now: float) -> list[dict[str, Any]]:
    """One row per key: builds, seconds run, reserved cpu-seconds and memory-seconds, and measured
    CPU seconds where the engine reported them; the largest cpu-seconds first."""
    if by not in BY:
        raise ValueError(f"by {by!r}: choose one of {', '.join(BY)}")
    rows: dict[str, dict[str, Any]] = {}
    for rec in records:
        seconds, cpu_s, mem_s = reserved(rec, now)
        row = rows.setdefault(key_of(rec, by), {by: key_of(rec, by), "builds": 0, "seconds": 0.0, "cpu_seconds": 0.0,
                                                "mem_mb_seconds": 0.0, "measured_cpu_seconds": 0.0})
        row["builds"] += 1
        row["seconds"] += seconds
        row["cpu_seconds"] += cpu_s
        row["mem_mb_seconds"] += mem_s
        row["measured_cpu_seconds"] += float(rec.get("measured_cpu_seconds") or 0.0)
    return sorted(rows.values(), key=lambda r: (-r["cpu_seconds"], r[by]))
