"""REDIS_URL, plain or through Sentinel.

    redis://[:PASSWORD@]HOST:PORT/DB                      one Redis server
    redis+sentinel://[:PASSWORD@]H1:P1,H2:P2,.../SERVICE[/DB]   the primary Sentinel names SERVICE

With Sentinel, every connection asks the sentinels which server is the primary of SERVICE, and
asks again after a connection error, so the farm follows a failover. The password is the Redis
servers' (the sentinels are asked without one unless `?sentinel_password=` is given).
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

SCHEME = "redis+sentinel"


class BadRedisUrl(ValueError):
    pass


def parse_sentinel(url: str) -> dict:
    """The parts of a redis+sentinel:// URL: sentinels [(host, port)], service, db, password."""
    parts = urlsplit(url)
    where = parts.netloc.rsplit("@", 1)[-1]
    password = unquote(parts.netloc.rsplit("@", 1)[0].split(":", 1)[-1]) if "@" in parts.netloc else None
    sentinels = []
    for hp in filter(None, where.split(",")):
        host, _, port = hp.rpartition(":")
        if not host or not port.isdigit():
            raise BadRedisUrl(f"REDIS_URL {_hide(url)}: each sentinel is HOST:PORT, got {hp!r}")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not sentinels or not path:
        raise BadRedisUrl(f"REDIS_URL {_hide(url)}: write redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]"
                          f"/SERVICE[/DB], e.g. redis+sentinel://127.0.0.1:26379/buildfarm")
    if len(path) > 1 and not path[1].isdigit():
        raise BadRedisUrl(f"REDIS_URL {_hide(url)}: the database after the service name must be a number")
    query = parse_qs(parts.query)
    return {"sentinels": sentinels, "service": path[0], "db": int(path[1]) if len(path) > 1 else 0,
            "password": password or None, "sentinel_password": (query.get("sentinel_password") or [None])[0]}


def client(url: str, **kw) -> redis.Redis:
    """A client for REDIS_URL; `kw` are redis-py connection options (decode_responses, timeouts)."""
    if not url.startswith(SCHEME + "://"):
        return redis.Redis.from_url(url, **kw)
    p = parse_sentinel(url)
    sentinel_kw = {"socket_timeout": 2, "password": p["sentinel_password"]}
    kw.pop("health_check_interval", None)  # the Sentinel pool checks on each new connection
    sentinel = Sentinel(p["sentinels"], sentinel_kwargs=sentinel_kw, socket_connect_timeout=2)
    return sentinel.master_for(p["service"], db=p["db"], password=p["password"], **kw)


def _hide(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return url.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[1])
