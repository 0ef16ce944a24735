"""The API client the CLI uses (and scripts may): httpx, with errors turned into messages."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


class ClientError(Exception):
    """A message for the user; `infrastructure` when the farm itself could not be reached."""

    def __init__(self, message: str, status: int | None = None, infrastructure: bool = False,
                 field: str | None = None):
        super().__init__(message)
        self.status = status
        self.infrastructure = infrastructure
        self.field = field  # the request field the farm's answer blames first, if it named one


class Client:
    def __init__(self, base_url: str | None = None, token: str | None = None, timeout: float = 30.0):
        self.base = (base_url or os.environ.get("BUILDFARM_URL") or DEFAULT_URL).rstrip("/")
        token = token or find_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base, timeout=timeout, headers=headers)

    def _unreachable(self, e: Exception) -> ClientError:
        return ClientError(f"cannot reach the farm at {self.base} ({type(e).__name__}); is `buildfarm up` "
                           f"running? Point --server or BUILDFARM_URL at it.", infrastructure=True)

    def _request(self, method: str, path: str, **kw) -> Any:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise self._unreachable(e) from None
        if resp.status_code >= 400:
            raise ClientError(_error_message(resp), resp.status_code, infrastructure=resp.status_code >= 500,
                              field=_error_field(resp))
        return resp.json()

    # -- builds ---------------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/api/v1/builds", json=spec)

    def get(self, build_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/builds/{build_id}")

    def list(self, limit: int = 50, offset: int = 0, **filters: str | None) -> list[dict[str, Any]]:
        """Builds, newest first; filters: state, repo, trigger, user."""
        params: dict[str, Any] = {"limit": limit, "offset": offset, **{k: v for k, v in filters.items() if v}}
        return self._request("GET", "/api/v1/builds", params=params)["builds"]

    def cancel(self, build_id: str) -> dict[str, Any]:
        return self._request("POST", f"/api/v1/builds/{build_id}/cancel")

    def rebuild(self, build_id: str) -> dict[str, Any]:
        return self._request("POST", f"/api/v1/builds/{build_id}/rebuild")

    # -- access ---------------------------------------------------------------------------------
    def pin(self, build_id: str) -> dict[str, Any]:
        return self._request("POST", f"/api/v1/builds/{build_id}/pin")

    def unpin(self, build_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/api/v1/builds/{build_id}/pin")

    def gc(self, dry_run: bool) -> dict[str, Any]:
        return self._request("POST", "/api/v1/gc", params={"dry_run": str(dry_run).lower()})

    def whoami(self) -> dict[str, Any]:
        return self._request("GET", "/api/v1/whoami")

    def create_token(self, user: str, role: str) -> dict[str, Any]:
        return self._request("POST", "/api/v1/tokens", json={"user": user, "role": role})

    def tokens(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v1/tokens")["tokens"]

    def revoke_token(self, user: str) -> dict[str, Any]:
        return self._request("DELETE", f"/api/v1/tokens/{user}")

    def set_secret(self, name: str, value: str, scope: dict[str, list[str]] | None = None) -> dict[str, Any]:
        """Store a value; `scope` replaces the secret's scope, None keeps it."""
        body: dict[str, Any] = {"value": value, **({"scope": scope} if scope is not None else {})}
        return self._request("PUT", f"/api/v1/secrets/{name}", json=body)

    def set_secret_scope(self, name: str, scope: dict[str, list[str]]) -> dict[str, Any]:
        return self._request("PUT", f"/api/v1/secrets/{name}/scope", json=scope)

    def secrets(self) -> list[dict[str, Any]]:
        """[{name, scope (None: unscoped), usable (the scope in words)}], never a value."""
        return self._request("GET", "/api/v1/secrets")["secrets"]

    def delete_secret(self, name: str) -> dict[str, Any]:
        return self._request("DELETE", f"/api/v1/secrets/{name}")

    def artifacts(self, build_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/v1/builds/{build_id}/artifacts")["artifacts"]

    # -- streams --------------------------------------------------------------------------------
    def log_chunks(self, build_id: str, follow: bool, offset: int = 0) -> Iterator[bytes]:
        """The log's bytes; when following, reconnects (from where it was) if the farm restarts,
        until the build has ended and its log is complete."""
        pos = offset
        failures = 0
        while True:
            try:
                with self.http.stream("GET", f"/api/v1/builds/{build_id}/log",
                                      params={"offset": pos, "follow": str(follow).lower()},
                                      timeout=httpx.Timeout(30.0, read=None)) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        raise ClientError(_error_message(resp), resp.status_code)
                    for chunk in resp.iter_raw():
                        pos += len(chunk)
                        failures = 0
                        yield chunk
                if not follow or self.get(build_id)["state"] in TERMINAL_STATES:
                    return
            except (httpx.TransportError, ClientError) as e:
                if isinstance(e, ClientError) and not e.infrastructure:
                    raise
                failures += 1
                if not follow or failures > 60:
                    raise self._unreachable(e) from None
                time.sleep(min(0.5 * failures, 5))

    def download(self, build_id: str, path: str, dest_dir: Path, expected_sha256: str) -> Path:
        """Download one artifact under dest_dir, verifying its sha256."""
        rel = PurePosixPath(path)
        if rel.is_absolute() or ".." in rel.parts:
            raise ClientError(f"refusing artifact path {path!r}: it would leave {dest_dir}")
        dest = Path(dest_dir) / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        h = hashlib.sha256()
        try:
            with self.http.stream("GET", f"/api/v1/builds/{build_id}/artifacts/{path}",
                                  timeout=httpx.Timeout(30.0, read=300.0)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise ClientError(_error_message(resp), resp.status_code)
                with open(tmp, "wb") as f:
                    for chunk in resp.iter_bytes():
                        h.update(chunk)
                        f.write(chunk)
        except httpx.TransportError as e:
            raise self._unreachable(e) from None
        if h.hexdigest() != expected_sha256:
            tmp.unlink(missing_ok=True)
            raise ClientError(f"artifact {path}: sha256 mismatch (got {h.hexdigest()}, expected {expected_sha256})")
        tmp.replace(dest)
        return dest


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


TERMINAL_STATES = {"succeeded", "failed", "timed_out", "cancelled", "error"}


def _error_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        return body.get("error") or body.get("detail") or resp.text
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:300]}"


def _error_field(resp: httpx.Response) -> str | None:
    try:
        details = resp.json().get("details") or []
        return details[0].get("field") if isinstance(details[0], dict) else None
    except (ValueError, AttributeError, IndexError):
        return None


def write_stream(chunks: Iterator[bytes], out: BinaryIO) -> None:
    for chunk in chunks:
        out.write(chunk)
        out.flush()
