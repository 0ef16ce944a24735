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


# Logs (logs.py)
LOG_CHANNEL = P + "log-grew"  # pub/sub: a build's id each time its log grows or closes

# The farm
FARM_ID = P + "farm-id"  # this farm's id: its containers' label (agent_contract.LABEL_FARM)
MESOS_FRAMEWORK_ID = P + "mesos:framework-id"  # a restarted scheduler re-subscribes as the same framework

# Access (auth.py)
TOKENS = P + "tokens"  # hash: sha256(token) -> {"user", "role", "created_at", "hook"}
TOKEN_NAMES = P + "token-names"  # hash: user -> sha256(token)
ADMIN_BOOTSTRAP = P + "admin-bootstrap"  # string: the process (re)making the admin token; expires
SECRETS = P + "secrets"  # hash: name -> SEALED + Fernet token of the value
SECRET_SCOPES = P + "secret-scopes"  # hash: name -> its scope as JSON (scopes.py); none: unscoped

# The schedulers' lease (lease.py)
LEASE = P + "scheduler:lease"  # "FENCE HOLDER", with a TTL
LEASE_FENCE = P + "scheduler:fence"  # the counter of terms
LEASE_LEADER = P + "scheduler:leader"  # hash: holder, fence, since (for display; the lease key decides)
SCHEDULERS = P + "schedulers"  # hash: holder -> json heartbeat
NO_LEASE = P + "no-lease"  # never written: the lease key a writer without a fence names (records.py)

# Counters (stats.py)
STATS_ENDED = P + "stats:ended:"  # + bucket start: hash state -> count
STATS_LATENCY = P + "stats:start-latency"  # hash: upper bound ("+Inf" last) -> count, plus "sum" and "count"
STATS_TEAM_USE = P + "stats:team-use:"  # + team ("" for builds without one): hash of counters (attempt_used)
STATS_TEAMS = P + "stats:teams"  # set: the teams with counters
STATS_SHARES = P + "stats:team-shares"  # list of json samples {at, shares: {team: dominant share}}, newest last
STATS_SHARES_NEXT = STATS_SHARES + ":next"  # string with a TTL: set while the next sample is not due

# Teams (teams.py), loans (loans.py) and the ledger of credits (market.py)
TEAMS = P + "teams"  # hash: name -> json (TeamSpec)
TEAM_MEMBERS = P + "team-members:"  # set per team: token names
USER_TEAMS = P + "user-teams:"  # set per user: team names
LOANS = P + "loans"  # hash: id -> json (Loan)
LEDGER = P + "ledger"  # list: every entry, oldest first
TEAM_LEDGER = P + "ledger:team:"  # list per team: its entries
BALANCES = P + "ledger:balance"  # hash: team -> the sum of its entries
CREDITS_ISSUED = P + "ledger:issued:"  # + period number: hash, the teams that period's credits went to
SETTLED_AT = P + "ledger:settled-at"  # when the last settlement ended


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
