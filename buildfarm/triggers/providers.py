"""What GitHub, GitLab and Gitea send: how each signs a delivery, names it, and what its push and
pull/merge request payloads mean, turned into one `Announced` (or a reason to ignore it).

GitHub signs the body with HMAC-SHA256 (`X-Hub-Signature-256: sha256=HEX`), Gitea likewise
(`X-Gitea-Signature: HEX`); GitLab sends the secret itself (`X-Gitlab-Token`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from .buildfile import ZERO, Event


@dataclass
class Announced:
    """A push or pull request update to build: the event, and where to read its commit."""

    event: Event
    fetch_url: str
    before: str | None  # compare the changed paths against this commit or ref
    since_merge_base: bool = False  # a pull request: only what it changed since forking
    refs: list[str] = field(default_factory=list)  # refs that hold the commit, besides branches


class Ignored(Exception):
    """A delivery that asks for nothing to be built (the message says why)."""


class Ping(Exception):
    """The provider checking that the webhook answers."""


def _get(d: Any, *path: str) -> Any:
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return d


def _hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _branch(ref: str | None) -> str:
    if not ref or not ref.startswith("refs/heads/"):
        raise Ignored(f"{ref or 'no ref'}: only branch pushes are built (tags and other refs are not)")
    return ref.removeprefix("refs/heads/")


class Provider:
    name = ""
    event_header = ""
    delivery_header = ""
    signature_header = ""

    def verify(self, headers, body: bytes, secret: str) -> str | None:
        """None when the delivery is authentic, else what is wrong."""
        raise NotImplementedError

    def verify_headers(self, headers, secret: str) -> str | None:
        """What is wrong that the headers alone show (checked before the body is read), or None."""
        return self.verify(headers, b"", secret) if not headers.get(self.signature_header) else None

    def delivery(self, headers) -> str | None:
        return headers.get(self.delivery_header) or None

    def announced(self, headers, payload: dict) -> Announced:
        raise NotImplementedError

    def _push(self, payload: dict, delivery: str | None, event_name: str, *, url: str | None, after: str | None,
              user: str | None) -> Announced:
        branch = _branch(payload.get("ref"))
        before = payload.get("before") or ZERO
        if not after or after == ZERO:
            raise Ignored(f"branch {branch} was deleted: nothing to build")
        if not url:
            raise Ignored("the payload has no clone URL of the repository")
        detail = {"provider": self.name, "event": event_name, "branch": branch, "before": before, "after": after,
                  "delivery": delivery or ""}
        ev = Event(repo=url, commit=after, kind="webhook", branch=branch, user=user, detail=detail)
        return Announced(ev, url, before)

    def _pull(self, delivery: str | None, event_name: str, *, number: Any, head: str | None, target: str | None,
              base: str | None, url: str | None, user: str | None, ref: str, source: str | None,
              from_fork: bool) -> Announced:
        if not (number and head and url and target):
            raise Ignored("the pull request payload lacks its number, head commit, target branch or clone URL")
        detail = {"provider": self.name, "event": event_name, "branch": target, "before": base or "", "after": head,
                  "pr": str(number), "source_branch": source or "", "delivery": delivery or ""}
        ev = Event(repo=url, commit=head, kind="webhook", branch=target, pr=str(number), user=user, detail=detail,
                   trusted=not from_fork)
        return Announced(ev, url, base or f"refs/heads/{target}", since_merge_base=True, refs=[ref])


class GitHub(Provider):
    name = "github"
    event_header = "X-GitHub-Event"
    delivery_header = "X-GitHub-Delivery"
    signature_header = "X-Hub-Signature-256"
    pr_event = "pull_request"
    pr_actions = ("opened", "synchronize", "reopened", "ready_for_review")
    signature_prefix = "sha256="  # before the hex HMAC-SHA256 of the body

    def verify(self, headers, body: bytes, secret: str) -> str | None:
        got = headers.get(self.signature_header)
        if not got:
            return f"missing {self.signature_header} header: give the webhook the farm's secret"
        want = self.signature_prefix + _hmac_hex(secret, body)
        if not hmac.compare_digest(got.strip().lower().encode(), want.encode()):
            return f"{self.signature_header} does not match the body signed with the farm's webhook secret"
        return None

    def _pusher(self, payload: dict) -> str | None:
        return _get(payload, "pusher", "name") or _get(payload, "sender", "login")

    def announced(self, headers, payload: dict) -> Announced:
        event = headers.get(self.event_header) or ""
        delivery = self.delivery(headers)
        if event == "ping":
            raise Ping()
        if event == "push":
            return self._push(payload, delivery, event, url=_get(payload, "repository", "clone_url"),
                              after=payload.get("after"), user=self._pusher(payload))
        if event == self.pr_event:
            action = payload.get("action")
            if action not in self.pr_actions:
                raise Ignored(f"pull request action {action!r} builds nothing (built on: {', '.join(self.pr_actions)})")
            pr = payload.get("pull_request") or {}
            number = payload.get("number") or pr.get("number")
            head_repo = _get(pr, "head", "repo", "clone_url")
            return self._pull(delivery, event, number=number, head=_get(pr, "head", "sha"),
                              target=_get(pr, "base", "ref"), base=_get(pr, "base", "sha"),
                              url=_get(pr, "base", "repo", "clone_url") or _get(payload, "repository", "clone_url"),
                              user=_get(payload, "sender", "login"), ref=f"refs/pull/{number}/head",
                              source=_get(pr, "head", "ref"),
                              from_fork=head_repo != _get(pr, "base", "repo", "clone_url"))
        raise Ignored(f"{self.event_header} {event or '(none)'!r} builds nothing (built on: push, {self.pr_event})")


class Gitea(GitHub):
    name = "gitea"
    event_header = "X-Gitea-Event"
    delivery_header = "X-Gitea-Delivery"
    signature_header = "X-Gitea-Signature"
    pr_actions = ("opened", "synchronized", "reopened")
    signature_prefix = ""

    def _pusher(self, payload: dict) -> str | None:
        return (_get(payload, "pusher", "login") or _get(payload, "pusher", "username")
                or _get(payload, "sender", "login"))


class GitLab(Provider):
    name = "gitlab"
    event_header = "X-Gitlab-Event"
    delivery_header = "X-Gitlab-Event-UUID"
    signature_header = "X-Gitlab-Token"
    mr_actions = ("open", "reopen", "update")

    def verify(self, headers, body: bytes, secret: str) -> str | None:
        got = headers.get(self.signature_header)
        if not got:
            return f"missing {self.signature_header} header: set the webhook's secret token to the farm's secret"
        if not hmac.compare_digest(got.strip().encode(), secret.encode()):
            return f"{self.signature_header} is not the farm's webhook secret"
        return None

    def verify_headers(self, headers, secret: str) -> str | None:
        return self.verify(headers, b"", secret)  # the token is a header: the body does not matter

    def announced(self, headers, payload: dict) -> Announced:
        event = headers.get(self.event_header) or ""
        kind = payload.get("object_kind")
        delivery = self.delivery(headers)
        if kind == "push":
            return self._push(payload, delivery, "push", url=_get(payload, "project", "git_http_url"),
                              after=payload.get("checkout_sha") or payload.get("after"),
                              user=payload.get("user_username"))
        if kind == "merge_request":
            attrs = payload.get("object_attributes") or {}
            action = attrs.get("action")
            if action not in self.mr_actions:
                raise Ignored(f"merge request action {action!r} builds nothing (built on: {', '.join(self.mr_actions)})")
            if action == "update" and not attrs.get("oldrev"):
                raise Ignored("merge request updated without new commits: nothing to build")
            iid = attrs.get("iid")
            return self._pull(delivery, "merge_request", number=iid, head=_get(attrs, "last_commit", "id"),
                              target=attrs.get("target_branch"), base=None,
                              url=_get(attrs, "target", "git_http_url") or _get(payload, "project", "git_http_url"),
                              user=_get(payload, "user", "username"), ref=f"refs/merge-requests/{iid}/head",
                              source=attrs.get("source_branch"),
                              from_fork=attrs.get("source_project_id") != attrs.get("target_project_id"))
        raise Ignored(f"{self.event_header} {event or kind or '(none)'!r} builds nothing "
                      f"(built on: Push Hook, Merge Request Hook)")


PROVIDERS: dict[str, Provider] = {p.name: p for p in (GitHub(), GitLab(), Gitea())}
