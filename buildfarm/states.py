"""Build states, which of them are final, and the exit codes the CLI maps them to."""

from enum import Enum


class State(str, Enum):
    QUEUED = "queued"
    LAUNCHING = "launching"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    ERROR = "error"


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.TIMED_OUT, State.CANCELLED, State.ERROR})
ACTIVE = frozenset({State.LAUNCHING, State.RUNNING})

EXIT_TIMED_OUT = 124
EXIT_INFRA_ERROR = 125
EXIT_CANCELLED = 130


def exit_code_for(state: str, build_exit_code: int | None) -> int:
    """The exit code `buildfarm submit --wait` returns, so a Jenkins shell step can act on it."""
    state = State(state)
    if state is State.SUCCEEDED:
        return 0
    if state is State.FAILED:
        # The build command's own code; a failed build never maps to 0.
        return build_exit_code if build_exit_code and 0 < build_exit_code < 256 else 1
    if state is State.TIMED_OUT:
        return EXIT_TIMED_OUT
    if state is State.CANCELLED:
        return EXIT_CANCELLED
    return EXIT_INFRA_ERROR
