"""The farm's first admin token (auth.py: TokenStore.bootstrap_admin) when several API replicas
start at once on one Redis and one data directory: real threads, each with its own connection to a
real redis-server, released together."""

from __future__ import annotations

import stat
import threading

import redis

from buildfarm.auth import Principal, TokenStore

STARTERS = 8


def start_together(redis_url: str, path) -> list[str]:
    """What bootstrap_admin returned to each of STARTERS processes started at the same moment."""
    barrier = threading.Barrier(STARTERS)
    got: list[str | BaseException | None] = [None] * STARTERS

    def start(i: int) -> None:
        store = TokenStore(redis.Redis.from_url(redis_url, decode_responses=True))
        barrier.wait()
        try:
            got[i] = store.bootstrap_admin(path)
        except BaseException as e:  # noqa: BLE001  (shown by the assertion below)
            got[i] = e

    threads = [threading.Thread(target=start, args=(i,)) for i in range(STARTERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(isinstance(g, str) for g in got), got
    return got


def admins(store: TokenStore) -> list[dict]:
    return [t for t in store.list() if t["user"] == "admin"]


def test_replicas_starting_at_once_make_one_admin_token_and_all_use_it(redis_url, tmp_path):
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.flushdb()
    store = TokenStore(r)
    path = tmp_path / "data" / "admin.token"

    # A new farm: one token is made, and every starter gets the one in the file.
    got = start_together(redis_url, path)
    token = path.read_text().strip()
    assert set(got) == {token}
    assert store.check(token) == Principal("admin", "admin")
    assert len(admins(store)) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["admin.token"]  # no temporary file left
    made = admins(store)[0]["created_at"]

    # Started again: the valid token is kept.
    assert set(start_together(redis_url, path)) == {token}
    assert admins(store) == [{**admins(store)[0], "created_at": made}]

    # The token in the file was revoked (or Redis lost it): exactly one starter replaces it.
    store.revoke("admin")
    got = start_together(redis_url, path)
    new = path.read_text().strip()
    assert new != token and set(got) == {new}
    assert store.check(token) is None and store.check(new) == Principal("admin", "admin")
    assert len(admins(store)) == 1
