"""/readyz in process: ready while Redis answers; when it does not, the same 503 (with Retry-After
and the same words) that every other route of the API gives for Redis away."""

from __future__ import annotations

import socket

from fastapi.testclient import TestClient

from buildfarm.api import create_app
from buildfarm.config import Settings
from buildfarm.service import Farm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ready_while_redis_answers(redis_url, tmp_path):
    app = create_app(Farm(Settings(data_dir=tmp_path / "data"), redis_url))
    ready = TestClient(app).get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_not_ready_without_redis_says_so_as_every_route_does(tmp_path):
    app = create_app(Farm(Settings(data_dir=tmp_path / "data"), f"redis://127.0.0.1:{free_port()}/0"))
    client = TestClient(app, raise_server_exceptions=False)
    ready, other = client.get("/readyz"), client.get("/api/v1/queue", headers={"Authorization": "Bearer some-token"})
    assert ready.status_code == 503 and other.status_code == 503
    assert "the farm's Redis is not answering" in ready.json()["error"]
    assert ready.json().keys() == other.json().keys() == {"error", "details"}
    assert ready.headers["Retry-After"] == other.headers["Retry-After"]
