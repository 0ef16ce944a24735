"""Every Redis key the farm writes, in one place (RQ's own keys aside: queue.py leaves them to RQ).

All start with "bf:". A module that owns a kind of record (records.py builds, auth.py tokens and
secrets, pipelines/store.py runs, ...) reads and writes its keys through its own methods; this
module only names them, so two modules never spell one key two ways.
"""

from __future__ import annotations

P = "bf:"

# Builds (records.py)
BUILDS = P + "builds"  # zset: id -> created_at
ACTIVE_SET = P + "active"  # ids launched and not yet cleaned up by the scheduler
AGENTS = P + "agents"  # hash: agent id -> json
WAKEUP = P + "wakeup"  # list: the scheduler blocks on it
STATE_CHANNEL = P + "state"  # pub/sub: a build's id at each of its state changes (long polls wake on it)
SEQ = P + "seq"
INDEX = P + "idx:"  # sets of build ids: idx:state:S, idx:repo:R, idx:trigger:K, idx:user:U, idx:team:T
TMP = P + "tmp:"  # short-lived results of set operations


def build(build_id: str) -> str:
    """hash: the build's record (spec, state, attempt, token digest, timestamps, ...)."""
    return f"{P}build:{build_id}"


def history(build_id: str) -> str:
    """list: the build's state changes, as JSON."""
    return build(build_id) + ":history"


# The farm
FARM_ID = P + "farm-id"  # this farm's id: its containers' label (agent_contract.LABEL_FARM)
MESOS_FRAMEWORK_ID = P + "mesos:framework-id"  # a restarted scheduler re-subscribes as the same framework

# Access (auth.py)
TOKENS = P + "tokens"  # hash: sha256(token) -> {"user", "role", "created_at", "hook"}
TOKEN_NAMES = P + "token-names"  # hash: user -> sha256(token)
SECRETS = P + "secrets"  # hash: name -> SEALED + Fernet token of the value
SECRET_SCOPES = P + "secret-scopes"  # hash: name -> its scope as JSON (scopes.py); none: unscoped

# Counters (stats.py)
STATS_ENDED = P + "stats:ended:"  # + bucket start: hash state -> count
STATS_LATENCY = P + "stats:start-latency"  # hash: upper bound ("+Inf" last) -> count, plus "sum" and "count"


# Retention (retention.py)
def expire_due(kind: str) -> str:
    """zset: build id -> when its files of `kind` ("log", "artifacts") expire."""
    return f"{P}expire:{kind}"


# Webhook deliveries (triggers/webhooks.py)
def hook_delivery(provider: str, delivery: str) -> str:
    """string: "processing" or "done" (turns a redelivery into a duplicate)."""
    return f"{P}hooks:delivery:{provider}:{delivery}"


def hook_body(provider: str, digest: str) -> str:
    """string: the delivery id that first brought a body (by its sha256): a replay is a duplicate."""
    return f"{P}hooks:body:{provider}:{digest}"


def hook_outcome(provider: str, delivery: str) -> str:
    """string: the delivery's outcome as JSON."""
    return f"{P}hooks:outcome:{provider}:{delivery}"


# Pipeline runs (pipelines/store.py)
RUN_P = P + "pipeline-"
RUNS = RUN_P + "runs"  # zset: run id -> started_at (and RUNS:PIPELINE per pipeline)
RUNS_ACTIVE = RUN_P + "runs:active"  # set: runs not finished
RUN_WAKEUP = RUN_P + "wakeup"  # list: the pipeline daemon blocks on it
RUN_CHANGED = RUN_P + "changed"  # pub/sub: a run's id at each change
RUN_CURSOR = RUN_P + "cursor"  # hash: pipeline -> the last schedule tick handled
RUN_EVENTS = RUN_P + "schedule-events"  # list: ticks started, missed or failed, as JSON


def run(run_id: str) -> str:
    return f"{RUN_P}run:{run_id}"


def run_tick(pipeline: str, tick: int) -> str:
    """string: who started this schedule tick (one run per tick across daemons)."""
    return f"{RUN_P}tick:{pipeline}:{tick}"
