"""What the scheduler loop needs from a backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..placement import Agent, Offer
from ..spec import BuildSpec


class LaunchError(RuntimeError):
    """The build could not be started; the message says why and what to do."""


EXITED = "exited"  # the container ended; `code` is its status
LAUNCH_FAILED = "launch_failed"  # it never started (missing image, invalid task): not worth a retry
LOST = "lost"  # the agent or the task was lost: retried elsewhere when the build allows


@dataclass(frozen=True)
class Exit:
    """A build's container (or process) ended, or was lost."""

    build_id: str
    attempt: int
    code: int
    detail: str = ""  # e.g. "out of memory (limit 512 MB)", the agent's last diagnostics
    kind: str = EXITED
    ack: Callable[[], Any] | None = field(default=None, compare=False)  # once the end is recorded


@dataclass(frozen=True)
class Found:
    """What a backend found of a build after a restart."""

    build_id: str
    attempt: int
    running: bool
    code: int | None = None


ExitListener = Callable[[Exit], None]


class Backend(Protocol):
    """Every backend has every member (a no-op where it does not apply): callers never probe."""

    name: str
    fatal: str | None  # set when the backend cannot go on (Mesos refused the framework): the loop stops with it

    def agents(self) -> list[Agent]: ...

    def offers(self) -> list[Offer]: ...

    def check_image(self, image: str) -> str | None: ...

    def launch(self, build_id: str, attempt: int, spec: BuildSpec, token: str, agent_id: str) -> None: ...

    def kill(self, build_id: str) -> None: ...

    def cleanup(self, build_id: str) -> None: ...

    def recover(self) -> dict[str, Found] | None:
        """What runs now, by build id; None when the backend learns it later (Mesos reconciles)."""

    def adopt(self, build_id: str, spec: BuildSpec) -> None: ...

    def settle(self, pending: int) -> None:
        """End of a round: answer offers not used, suppress or revive them."""

    def teardown(self) -> None:
        """End what the backend registered outside the farm (the Mesos framework); a LaunchError
        saying why when there is nothing to end."""

    def close(self) -> None: ...
