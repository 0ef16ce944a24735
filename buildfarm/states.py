"""The words of the farm's records that clients need without its models (this module imports
nothing heavy, so the CLI starts fast): build states, which of them are final, the exit codes the
CLI maps them to, what may start a build, and the roles of API tokens."""

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
TERMINAL_STATES = frozenset(s.value for s in TERMINAL)  # as plain strings, the way records carry them
UNFINISHED_STATES = tuple(s.value for s in State if s not in TERMINAL)
UNFINISHED = frozenset({State.QUEUED}) | ACTIVE

# Which state may follow which, and why: each state, the states a build may reach it from. Every
# change of a build's state goes through records.BuildStore.transition, which checks this table in
# the same atomic step as the write (a caller may narrow it, never widen it). A final state is
# followed by nothing: a build ends once.
COMES_FROM: dict[State, frozenset[State]] = {
    # its attempt is over without a result of its own: lost before it ran, or preempted
    State.QUEUED: ACTIVE,
    # placed on a node by the leading scheduler (recorded before the backend is asked to launch)
    State.LAUNCHING: frozenset({State.QUEUED}),
    # its agent started (with the token of this attempt)
    State.RUNNING: frozenset({State.LAUNCHING}),
    # the agent reported its steps' result (or the container ran out of memory: failed)
    State.SUCCEEDED: ACTIVE,
    State.FAILED: ACTIVE,
    # its time counts from its start, so only a running build times out
    State.TIMED_OUT: frozenset({State.RUNNING}),
    # a person (or a pipeline, a superseding push) stops it, whatever it is doing
    State.CANCELLED: UNFINISHED,
    # the farm gives up on it: it can never fit, its spec is unreadable, it did not start, it was lost
    State.ERROR: UNFINISHED,
}

TRIGGER_KINDS = ("cli", "api", "hook", "webhook", "pipeline", "jenkins", "rebuild")
# Kinds the farm records itself (a webhook, a pipeline run, a rebuild); the post-receive hook's
# token may record `hook` (a token with the hook flag). Any other caller names cli, api or jenkins.
FARM_KINDS = ("hook", "webhook", "pipeline", "rebuild")
# A pipeline run's jobs and the run itself (plain strings: a job may also be pending or skipped).
JOB_FINAL = frozenset({"succeeded", "failed", "cancelled", "skipped", "error", "timed_out"})
JOB_FAILED = frozenset({"failed", "error", "timed_out"})
RUN_FINAL = frozenset({"succeeded", "failed", "cancelled"})

ROLES = ("viewer", "submitter", "admin")  # each may do what the one before it may, and more

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
