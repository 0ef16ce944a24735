"""From an event to submitted builds, the same for the post-receive hook (through the API) and
the webhooks (inside the farm): plan the builds from the build file, submit them, and, when the
file asks for it, cancel the older unfinished builds of the same branch or pull request.

Superseded builds are found among the repository's unfinished builds (the farm's build index by
state and repository), by the branch or pull request recorded in their trigger; no index of its
own has to be kept in step with the builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..states import UNFINISHED_STATES as UNFINISHED
from .buildfile import Event, Matched, builds_for


class Refused(Exception):
    """The farm refused one build (e.g. its image is not on the host); the message says why."""


class Skipped(Refused):
    """The build may not run for this event (a secret it asks for is not for this branch); it is
    listed with the skipped builds, with the reason, as a filter that did not match is."""


class Sink(Protocol):
    def submit(self, spec: dict[str, Any]) -> dict[str, Any]: ...

    def unfinished(self, repo: str) -> list[dict[str, Any]]: ...

    def cancel(self, build_id: str, who: str) -> None: ...


@dataclass
class Outcome:
    queued: list[dict[str, Any]] = field(default_factory=list)  # {"id", "name", "number"}
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"name", "reason"}
    refused: list[dict[str, str]] = field(default_factory=list)  # {"name", "reason"}
    cancelled: list[str] = field(default_factory=list)
    reason: str | None = None  # why nothing was queued

    def as_json(self) -> dict[str, Any]:
        result = "queued" if self.queued else ("refused" if self.refused else "nothing to build")
        out: dict[str, Any] = {"result": result, "builds": self.queued, "skipped": self.skipped,
                               "refused": self.refused, "cancelled": self.cancelled}
        if self.reason:
            out["reason"] = self.reason
        return out


def same_line(record: dict[str, Any], event: Event) -> bool:
    """Whether a build record belongs to the event's branch or pull request in the same repository."""
    spec = record.get("spec") or {}
    trig = spec.get("trigger") or {}
    detail = trig.get("detail") or {}
    if spec.get("repo") != event.repo or trig.get("kind") not in ("hook", "webhook"):
        return False
    if event.pr:
        return detail.get("pr") == str(event.pr)
    return not detail.get("pr") and detail.get("branch") == event.branch


def superseded(records: list[dict[str, Any]], event: Event, newest: int) -> list[str]:
    """Unfinished builds of the event's branch or pull request submitted before build number
    `newest` (a concurrent, later delivery's builds are left alone)."""
    return [r["id"] for r in records
            if r["number"] < newest and r.get("state") in UNFINISHED and same_line(r, event)]


def dispatch(text: str | None, event: Event, sink: Sink) -> Outcome:
    """Submit what the build file asks for. Raises BuildFileError for a file that cannot be used."""
    p: Matched = builds_for(text, event)
    out = Outcome(skipped=[{"name": n, "reason": why} for n, why in p.skipped])
    for name, spec in p.specs:
        try:
            rec = sink.submit(spec.model_dump(mode="json"))
        except Skipped as e:
            out.skipped.append({"name": name, "reason": str(e)})
            continue
        except Refused as e:
            out.refused.append({"name": name, "reason": str(e)})
            continue
        out.queued.append({"id": rec["id"], "name": name, "number": rec["number"]})
    if not out.queued:
        refused = "; ".join(f"{r['name']}: refused: {r['reason']}" for r in out.refused)
        out.reason = refused or Matched([], [(s["name"], s["reason"]) for s in out.skipped]).reason
    if p.cancel_superseded and out.queued:
        for build_id in superseded(sink.unfinished(event.repo), event, min(b["number"] for b in out.queued)):
            try:
                sink.cancel(build_id, f"{event.commit[:12]}, which superseded it")
            except Refused:
                continue  # it ended meanwhile
            out.cancelled.append(build_id)
    return out
