"""What the scheduler loop needs from a backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from ..scheduler import Agent, Offer
from ..spec import BuildSpec


class LaunchError(RuntimeError):
    """The build could not be started; the message says why and what to do."""


@dataclass(frozen=True)
class Exit:
    """A build's container (or process) ended."""

    build_id: str
    attempt: int
    code: int
    detail: str = ""  # e.g. "out of memory (limit 512 MB)", the agent's last diagnostics


@dataclass(frozen=True)
class Found:
    """What a backend found of a build after a restart."""

    build_id: str
    attempt: int
    running: bool
    code: int | None = None


ExitListener = Callable[[Exit], None]


class Backend(Protocol):
    name: str

    def agents(self) -> list[Agent]: ...

    def offers(self) -> list[Offer]: ...

    def check_image(self, image: str) -> str | None: ...

    def launch(self, build_id: str, attempt: int, spec: BuildSpec, token: str, agent_id: str) -> None: ...

    def kill(self, build_id: str) -> None: ...

    def cleanup(self, build_id: str) -> None: ...

    def recover(self) -> dict[str, Found]: ...

    def close(self) -> None: ...
