"""Redis without a single point of failure: Debian's real redis-sentinel watching a primary and a
replica on loopback; an API replica and a scheduler on `redis+sentinel://`; the primary killed
during builds. The farm follows the promoted replica, and every build ends once."""

from __future__ import annotations

import shutil

import httpx
import pytest
import redis

from .conftest import need, wait_until
from .ha_support import Cluster, SentinelRedis, redis_client

pytestmark = pytest.mark.docker


@pytest.fixture
def sentinel(tmp_path, redis_binary):
    need(shutil.which("redis-sentinel") is not None, "redis-sentinel (apt-get install redis-sentinel)")
    s = SentinelRedis(redis_binary, shutil.which("redis-sentinel"), tmp_path / "redis")
    yield s
    s.stop()


def test_the_farm_follows_the_promoted_replica_when_the_primary_dies(sentinel, tmp_path, docker_engine, git_server,
                                                                     counter):
    repo = git_server.make_repo("sentinel", {"f": "x\n"})
    cluster = Cluster(tmp_path, sentinel.url)
    try:
        cluster.add_api()
        scheduler = cluster.add_scheduler()
        gate = f"curl -fsS {counter.url}/hit/$BUILDFARM_BUILD_ID && echo started && {counter.wait_for_gate()}"
        running = [cluster.submit(repo, "sh", "-c", gate) for _ in range(3)]
        wait_until(lambda: all(counter.hits[b] == 1 for b in running), 90, what="three builds to start")
        old = sentinel.primary_port()

        sentinel.kill_primary()
        wait_until(lambda: sentinel.primary_port() != old, 30, 0.2, what="the sentinel to promote the replica")
        wait_until(lambda: _ready(cluster), 30, 0.2, what="the API on the new primary")
        later = [cluster.submit(repo, "sh", "-c", gate) for _ in range(2)]
        counter.open_gate()
        records = [cluster.wait_done(b, 120) for b in running + later]
        assert [r["state"] for r in records] == ["succeeded"] * 5, [(r["id"], r["reason"]) for r in records]
        assert all(counter.hits[b] == 1 for b in running + later), counter.hits  # none ran twice
        assert [r["attempt"] for r in records[:3]] == [1, 1, 1]  # adopted after the failover, not re-run
        log = scheduler.log()
        assert "Redis's primary changed" in log and log.count("leads (fence") >= 1
        # The records are on the promoted server: it is the one the URL now leads to.
        r = redis_client(sentinel.url)
        assert r.connection_pool.get_master_address()[1] == sentinel.primary_port()
        assert r.hget(f"bf:build:{running[0]}", "state") == "succeeded"
    finally:
        cluster.stop()


def test_an_unreachable_sentinel_is_a_clear_error_at_start(tmp_path):
    from buildfarm.redis_url import client

    r = client(f"redis+sentinel://127.0.0.1:{_closed_port()}/buildfarm")
    with pytest.raises(redis.ConnectionError, match="No master found for 'buildfarm'"):
        r.ping()


def _ready(cluster: Cluster) -> bool:
    try:
        return httpx.get(cluster.url() + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _closed_port() -> int:
    from .conftest import free_port

    return free_port()
