"""What the git post-receive hook does with a push (`buildfarm hook post-receive`, run by git): for
each pushed branch, read the pushed commit's .buildfarm.yml in the repository itself and submit
what it asks for through the farm's API. Every line it says reaches the pusher as `remote:
buildfarm: ...`. It never fails a push: an unreachable farm or a broken build file is a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..client import Client, ClientError
from .buildfile import FILENAME, ZERO, BuildFileError, Event
from .dispatch import UNFINISHED, Refused, Skipped, dispatch
from .gitrepo import GitRepo


class ClientSink:
    """Submits and cancels through the farm's API (the hook's side of `dispatch`)."""

    def __init__(self, client: Client):
        self.client = client

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.client.submit(spec)
        except ClientError as e:
            if e.status == 403 and e.field == "secrets":  # a secret it asks for is not for this branch
                raise Skipped(str(e)) from None
            if e.infrastructure or e.status in (401, 403):
                raise
            raise Refused(str(e)) from None

    def unfinished(self, repo: str) -> list[dict[str, Any]]:
        return [b for state in UNFINISHED for b in self.client.list(limit=500, state=state, repo=repo)]

    def cancel(self, build_id: str, who: str) -> None:
        try:
            self.client.cancel(build_id)
        except ClientError as e:
            if e.status != 409:
                raise
            raise Refused(str(e)) from None


def handle_push(repo: GitRepo, client: Client, lines: Iterable[str], repo_url: str, user: str, server: str,
                say: Callable[[str], None]) -> None:
    """Dispatch each `OLD NEW REF` line git gives the hook, saying what became of it."""
    sink = ClientSink(client)
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue
        old, new, ref = parts
        try:
            _one(repo, sink, repo_url, user, old, new, ref, say)
        except ClientError as e:
            problem = f"cannot reach the farm at {server}" if e.infrastructure and e.status is None else str(e)
            say(f"warning: {problem}: nothing queued for {ref} (the push itself succeeded)")
        except Exception as e:  # never fail or garble a push
            say(f"warning: {type(e).__name__}: {e}; nothing queued for {ref}")


def _one(repo: GitRepo, sink: ClientSink, repo_url: str, user: str, old: str, new: str, ref: str,
         say: Callable[[str], None]) -> None:
    if not ref.startswith("refs/heads/"):
        say(f"{ref}: only branch pushes are built")
        return
    branch = ref.removeprefix("refs/heads/")
    if new == ZERO:
        say(f"{ref} deleted: nothing to build")
        return
    detail = {"provider": "git", "event": "push", "branch": branch, "before": old, "after": new}
    ev = Event(repo=repo_url, commit=new, kind="hook", branch=branch, user=user, detail=detail,
               changed=repo.changed_paths(old, new))
    try:
        out = dispatch(repo.read(new, FILENAME), ev, sink)
    except BuildFileError as e:
        say(f"nothing queued for {ref}: {e}")
        return
    for b in out.queued:
        say(f"queued build {b['id']} ({b['name']}) for {branch} at {new[:12]}; follow it: buildfarm logs -f {b['id']}")
    for s in out.skipped if out.queued else []:
        say(f"skipped {s['name']}: {s['reason']}")
    for r in out.refused:
        say(f"refused {r['name']}: {r['reason']}")
    for c in out.cancelled:
        say(f"cancelled build {c}: superseded by {new[:12]}")
    if not out.queued:
        say(f"nothing to build for {ref}: {out.reason}")
