"""The API client the CLI uses (and scripts, the hook and the Jenkins bridge may): its public methods
are the farm's routes, its errors are messages for a person.

It speaks HTTP with the standard library's http.client, one connection per request (so one Client
may be shared between threads): a `buildfarm status` starts in tens of milliseconds, where httpx
alone takes over 100 ms to import. http.client itself (with the email parser and ssl it brings,
~20 ms) is imported at the first request, so `buildfarm --help` does not pay for it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote, urlencode, urlsplit

from .states import TERMINAL_STATES, UNFINISHED_STATES

if TYPE_CHECKING:
    import http.client

DEFAULT_URL = "http://127.0.0.1:8080"
CHUNK = 64 * 1024
LONG_POLL = 25.0  # seconds one waiting request may be held by the farm (below proxies' idle timeouts)


class ClientError(Exception):
    """A message for the user; `infrastructure` when the farm itself could not be reached."""

    def __init__(self, message: str, status: int | None = None, infrastructure: bool = False,
                 field: str | None = None):
        super().__init__(message)
        self.status = status
        self.infrastructure = infrastructure
        self.field = field  # the request field the farm's answer blames first, if it named one
        self.refused = False  # the farm refused the connection: nothing was sent


# How long a call waits out a farm that answers 503 (its Redis restarting) or refuses connections
# (the farm restarting), retrying and saying so on stderr. BUILDFARM_RETRY_SECONDS=0 fails at once.
RETRY_SECONDS = 30.0
CONNECT_RETRY_SECONDS = 10.0  # shorter: a farm that is not running at all is said so soon


class Client:
    """`token` None: BUILDFARM_TOKEN, else a farm's admin token on this machine (`find_token`),
    unless `local_token` is False (the git hook uses only the token it was given). `retry_seconds`
    None: BUILDFARM_RETRY_SECONDS, else RETRY_SECONDS."""

    def __init__(self, base_url: str | None = None, token: str | None = None, timeout: float = 30.0, *,
                 local_token: bool = True, retry_seconds: float | None = None):
        self.base = (base_url or os.environ.get("BUILDFARM_URL") or DEFAULT_URL).rstrip("/")
        url = urlsplit(self.base)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ClientError(f"--server {self.base!r}: give an http:// or https:// URL, e.g. {DEFAULT_URL}")
        self._https = url.scheme == "https"
        self._host, self._port, self._prefix = url.hostname, url.port, url.path.rstrip("/")
        self.timeout = timeout
        token = token or (find_token() if local_token else None)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        if retry_seconds is None:
            retry_seconds = float(os.environ.get("BUILDFARM_RETRY_SECONDS", RETRY_SECONDS))
        self.retry_seconds = retry_seconds

    # -- transport --------------------------------------------------------------------------------
    def _unreachable(self, e: Exception) -> ClientError:
        err = ClientError(f"cannot reach the farm at {self.base} ({type(e).__name__}); is `buildfarm up` "
                          f"running? Point --server or BUILDFARM_URL at it.", infrastructure=True)
        err.refused = isinstance(e, ConnectionRefusedError)
        return err

    def _open(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
              timeout: float | None = None, read_timeout: float | None = -1.0) -> http.client.HTTPResponse:
        """Send one request; the response is open (its body unread). A status >= 400 raises
        ClientError with the farm's message. `read_timeout` None: wait for the body forever."""
        hc = _http()
        target = self._prefix + quote(path)
        if params:
            target += "?" + urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        cls = hc.HTTPSConnection if self._https else hc.HTTPConnection
        conn = cls(self._host, self._port, timeout=timeout or self.timeout)
        try:
            conn.request(method, target, body=data, headers=headers)
            if read_timeout != -1.0:
                conn.sock.settimeout(read_timeout)
            resp = conn.getresponse()
        except (OSError, hc.HTTPException) as e:
            conn.close()
            raise self._unreachable(e) from None
        if resp.status >= 400:
            try:
                text = self._read(resp)
            except ClientError:
                text = b""
            conn.close()
            raise ClientError(_error_message(resp.status, text), resp.status, infrastructure=resp.status >= 500,
                              field=_error_field(text))
        return resp

    def _read(self, resp: http.client.HTTPResponse, amount: int | None = None, some: bool = False) -> bytes:
        """The response's body (`amount` bytes of it; `some`: what has come, up to `amount`)."""
        try:
            return resp.read1(amount) if some else resp.read(amount)
        except (OSError, _http().HTTPException) as e:
            raise self._unreachable(e) from None

    def _request(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
                 timeout: float | None = None) -> Any:
        """One call. A farm that answers 503 or refuses the connection is waited for (see
        RETRY_SECONDS), once said on stderr."""
        start, said = time.monotonic(), False
        while True:
            try:
                return self._request_once(method, path, params, body, timeout)
            except ClientError as e:
                waited = time.monotonic() - start
                if waited >= self._retry_budget(e, method):
                    raise
                if not said:
                    why = str(e) if e.status == 503 else "connection refused" if e.refused else "no answer"
                    print(f"buildfarm: the farm at {self.base} is not available ({why}); retrying for up to "
                          f"{self._retry_budget(e, method):.0f} s", file=sys.stderr, flush=True)
                    said = True
                time.sleep(min(1.0, 0.2 * (1 + waited)))

    def _retry_budget(self, e: ClientError, method: str) -> float:
        if e.status == 503:  # the farm's Redis is away: nothing was done
            return self.retry_seconds
        if e.status is None and e.infrastructure:
            if e.refused:
                return min(self.retry_seconds, CONNECT_RETRY_SECONDS)
            if method == "GET":  # other errors may have reached the farm: only a read is repeated
                return self.retry_seconds
        return 0.0

    def _request_once(self, method: str, path: str, params: dict[str, Any] | None, body: Any,
                      timeout: float | None) -> Any:
        resp = self._open(method, path, params, body, timeout)
        try:
            return json.loads(self._read(resp))
        except ValueError:
            raise ClientError(f"the farm at {self.base} answered with something that is not JSON; is "
                              f"--server the farm's address?", resp.status, infrastructure=True) from None
        finally:
            resp.close()

    # -- builds ---------------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/api/v1/builds", body=spec)

    def get(self, build_id: str, wait: float | None = None, state_not: Iterable[str] = ()) -> dict[str, Any]:
        """The build's record. With `wait` and `state_not`, the farm answers as soon as the build's
        state is none of `state_not`, or after `wait` seconds (whichever first)."""
        params = {"wait": wait, "state_not": list(state_not)} if wait and state_not else None
        return self._request("GET", f"/api/v1/builds/{build_id}", params, timeout=self.timeout + (wait or 0))

    def wait(self, build_id: str, on_change: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """The build's record once it has ended, as soon as it has: the farm holds each request until
        the state changes. With `on_change`, each unfinished state is shown to it on the way."""
        if on_change is None:  # one request (a new one every LONG_POLL seconds)
            b = self.get(build_id, wait=LONG_POLL, state_not=UNFINISHED_STATES)
            while b["state"] not in TERMINAL_STATES:
                b = self.get(build_id, wait=LONG_POLL, state_not=UNFINISHED_STATES)
            return b
        b = self.get(build_id)
        while b["state"] not in TERMINAL_STATES:
            on_change(b)
            b = self.get(build_id, wait=LONG_POLL, state_not=[b["state"]])
        return b

    def list(self, limit: int = 50, offset: int = 0, **filters: str | None) -> list[dict[str, Any]]:
        """Builds, newest first; filters: state, repo, trigger, user."""
        params: dict[str, Any] = {"limit": limit, "offset": offset, **{k: v for k, v in filters.items() if v}}
        return self._request("GET", "/api/v1/builds", params)["builds"]

    def cancel(self, build_id: str) -> dict[str, Any]:
        return self._request("POST", f"/api/v1/builds/{build_id}/cancel")

    def rebuild(self, build_id: str) -> dict[str, Any]:
        return self._request("POST", f"/api/v1/builds/{build_id}/rebuild")

    def artifacts(self, build_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/v1/builds/{build_id}/artifacts")["artifacts"]

    # -- pipelines ---------------------------------------------------------------------------------
    def pipelines(self) -> dict[str, Any]:
        """The farm's pipelines (`pipelines`), its directory and the files that are not valid."""
        return self._request("GET", "/api/v1/pipelines")

    def start_run(self, body: dict[str, Any]) -> dict[str, Any]:
        """Start a pipeline run: {"pipeline", "parameters"} and, for a file's text, "source", "file"."""
        return self._request("POST", "/api/v1/pipeline-runs", body=body)

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Recent pipeline runs, newest first (without their jobs)."""
        return self._request("GET", "/api/v1/pipeline-runs", {"limit": limit})["runs"]

    def run(self, run_id: str, wait: float | None = None, version_not: int | None = None) -> dict[str, Any]:
        """A pipeline run with its jobs. With `wait` and `version_not`, the farm answers when the run
        changed (its `version` is not `version_not`), or after `wait` seconds."""
        params = {"wait": wait, "version_not": version_not} if wait and version_not is not None else None
        return self._request("GET", f"/api/v1/pipeline-runs/{run_id}", params, timeout=self.timeout + (wait or 0))

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return self._request("POST", f"/api/v1/pipeline-runs/{run_id}/cancel")

    # -- retention: keep or delete a build's files ----------------------------------------------
    def pin(self, build_id: str) -> dict[str, Any]:
        return self._request("POST", f"/api/v1/builds/{build_id}/pin")

    def unpin(self, build_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/api/v1/builds/{build_id}/pin")

    def gc(self, dry_run: bool) -> dict[str, Any]:
        return self._request("POST", "/api/v1/gc", params={"dry_run": str(dry_run).lower()})

    # -- access ---------------------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        return self._request("GET", "/api/v1/whoami")

    def create_token(self, user: str, role: str, hook: bool = False) -> dict[str, Any]:
        return self._request("POST", "/api/v1/tokens", body={"user": user, "role": role, "hook": hook})

    def tokens(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v1/tokens")["tokens"]

    def revoke_token(self, user: str) -> dict[str, Any]:
        return self._request("DELETE", f"/api/v1/tokens/{user}")

    def set_secret(self, name: str, value: str, scope: dict[str, list[str]] | None = None) -> dict[str, Any]:
        """Store a value; `scope` replaces the secret's scope, None keeps it."""
        body: dict[str, Any] = {"value": value, **({"scope": scope} if scope is not None else {})}
        return self._request("PUT", f"/api/v1/secrets/{name}", body=body)

    def set_secret_scope(self, name: str, scope: dict[str, list[str]]) -> dict[str, Any]:
        return self._request("PUT", f"/api/v1/secrets/{name}/scope", body=scope)

    def secrets(self) -> list[dict[str, Any]]:
        """[{name, scope (None: unscoped), usable (the scope in words)}], never a value."""
        return self._request("GET", "/api/v1/secrets")["secrets"]

    def delete_secret(self, name: str) -> dict[str, Any]:
        return self._request("DELETE", f"/api/v1/secrets/{name}")

    # -- teams and usage -----------------------------------------------------------------------------
    def create_team(self, team: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/api/v1/teams", body=team)

    def teams(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v1/teams")["teams"]

    def delete_team(self, team: str, force: bool = False) -> dict[str, Any]:
        """{deleted, cancelled: its queued builds' ids, running: its running builds' ids}."""
        return self._request("DELETE", f"/api/v1/teams/{team}", {"force": "true"} if force else None)

    def add_member(self, team: str, user: str) -> dict[str, Any]:
        return self._request("PUT", f"/api/v1/teams/{team}/members/{user}")

    def remove_member(self, team: str, user: str) -> dict[str, Any]:
        return self._request("DELETE", f"/api/v1/teams/{team}/members/{user}")

    def lend(self, team: str, loan: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", f"/api/v1/teams/{team}/loans", body=loan)

    def ledger(self, team: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/teams/{team}/ledger")

    def usage(self, since: str = "7d", by: str = "team", team: str | None = None) -> dict[str, Any]:
        params = {"since": since, "by": by, **({"team": team} if team else {})}
        return self._request("GET", "/api/v1/usage", params)

    # -- streams --------------------------------------------------------------------------------
    def log_chunks(self, build_id: str, follow: bool, offset: int = 0) -> Iterator[bytes]:
        """The log's bytes as they come; when following, until the build has ended and its log is
        complete (the farm closes the stream then), reconnecting from where it was if the farm
        restarts."""
        pos = offset
        failures = 0
        while True:
            try:
                resp = self._open("GET", f"/api/v1/builds/{build_id}/log",
                                  {"offset": pos, "follow": str(follow).lower()}, read_timeout=None)
                try:
                    while chunk := self._read(resp, CHUNK, some=True):
                        pos += len(chunk)
                        failures = 0
                        yield chunk
                finally:
                    resp.close()
                if not follow or self.get(build_id)["state"] in TERMINAL_STATES:
                    return
            except ClientError as e:
                if not e.infrastructure:
                    raise
                failures += 1
                if not follow or failures > 60:
                    raise
                time.sleep(min(0.5 * failures, 5))

    def download(self, build_id: str, path: str, dest_dir: Path, expected_sha256: str) -> Path:
        """Download one artifact under dest_dir, verifying its sha256."""
        rel = PurePosixPath(path)
        if rel.is_absolute() or ".." in rel.parts:
            raise ClientError(f"refusing artifact path {path!r}: it would leave {dest_dir}")
        dest = Path(dest_dir) / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        import hashlib

        h = hashlib.sha256()
        resp = self._open("GET", f"/api/v1/builds/{build_id}/artifacts/{path}", read_timeout=300.0)
        try:
            with open(tmp, "wb") as f:
                while chunk := self._read(resp, CHUNK):
                    h.update(chunk)
                    f.write(chunk)
        except ClientError:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            resp.close()
        if h.hexdigest() != expected_sha256:
            tmp.unlink(missing_ok=True)
            raise ClientError(f"artifact {path}: sha256 mismatch (got {h.hexdigest()}, expected {expected_sha256})")
        tmp.replace(dest)
        return dest


def _http():
    """http.client, imported at the first request (see the module's docstring)."""
    import http.client

    return http.client


def find_token() -> str | None:
    """BUILDFARM_TOKEN, else the admin token a farm on this machine wrote into its data directory
    (readable only by the user who runs it)."""
    if os.environ.get("BUILDFARM_TOKEN"):
        return os.environ["BUILDFARM_TOKEN"].strip()
    dirs = [os.environ.get("BUILDFARM_DATA"), str(Path.home() / ".buildfarm")]
    for d in filter(None, dirs):
        try:
            return (Path(d) / "admin.token").read_text().strip() or None
        except OSError:
            continue
    return None


def _error_message(status: int, text: bytes) -> str:
    try:
        body = json.loads(text)
        return body.get("error") or body.get("detail") or text.decode(errors="replace")
    except (ValueError, AttributeError):
        return f"HTTP {status}: {text[:300].decode(errors='replace')}"


def _error_field(text: bytes) -> str | None:
    try:
        details = json.loads(text).get("details") or []
        return details[0].get("field") if isinstance(details[0], dict) else None
    except (ValueError, AttributeError, IndexError):
        return None


def write_stream(chunks: Iterator[bytes], out: BinaryIO) -> None:
    for chunk in chunks:
        out.write(chunk)
        out.flush()
