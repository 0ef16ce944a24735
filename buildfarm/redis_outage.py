"""Redis away for a while (restarting, stopped, unreachable): the errors that mean it, and the
one-line notices a loop gives when it goes away and when it is back, instead of a traceback a
round."""

from __future__ import annotations

import logging

import redis

# What redis-py raises while Redis cannot answer (BusyLoadingError, a Redis still reading its AOF,
# is a ConnectionError).
UNAVAILABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)

RETRY_AFTER_SECONDS = 2


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except UNAVAILABLE:
        return False


class OutageLog:
    """What one loop says about Redis: one warning when it goes away, one line when it is back."""

    def __init__(self, logger: logging.Logger, who: str):
        self.log, self.who = logger, who
        self.down = False

    def away(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            self.log.warning("%s: Redis is not answering (%s); waiting for it", self.who, describe(exc))

    def ok(self) -> None:
        if self.down:
            self.down = False
            self.log.info("%s: Redis is back; carrying on", self.who)
