"""What a backend hands the build agent (executors/buildfarm_agent.py), said once.

Every backend (local Docker, local processes, Mesos) starts the agent with the environment
below, or, for a warm container started before its build existed, with `--warm ASSIGN_MOUNT`
and later an assignment file there. The agent runs alone inside the build container (stdlib and
GitPython only), so it cannot import this module: it declares the same names at its top, and
tests/test_agent_contract.py checks the two against each other.
"""

from __future__ import annotations

# The environment the agent reads.
ENV_API = "BUILDFARM_API"  # the farm's API as the container reaches it
ENV_BUILD_ID = "BUILDFARM_BUILD_ID"
ENV_TOKEN = "BUILDFARM_TOKEN"  # scoped to this one build; the agent does not pass it on to the steps
ENV_CACHE = "BUILDFARM_CACHE"  # the mirror cache's directory
ENV_CACHE_READONLY = "BUILDFARM_CACHE_READONLY"  # "1": the farm keeps the mirrors, the agent only reads them
ENV_WORKSPACE = "BUILDFARM_WORKSPACE"
ENV_BUILD_USER = "BUILDFARM_BUILD_USER"  # who runs the build's commands when the agent is root (a name or uid)
ENV_HOME = "BUILDFARM_HOME"  # their HOME, when not their passwd entry's
ENV_ON_HOST = "BUILDFARM_ON_HOST"  # "1": `--isolation process`, the agent shares the host

# Where things are inside a build container.
CACHE_MOUNT = "/buildfarm-cache"  # the mirror cache (the agent's default for ENV_CACHE)
WORKSPACE = "/workspace"  # the checkout (the agent's default for ENV_WORKSPACE)
AGENT_MOUNT = "/buildfarm/agent"  # the agent bundle, bind-mounted read-only (local Docker)
ASSIGN_MOUNT = "/buildfarm/assignment"  # a warm container's assignment directory (local Docker)

# The agent bundle (buildfarm/agent_bundle.py) and how it is started.
AGENT_SCRIPT = "buildfarm_agent.py"
BUNDLE_DIR = "buildfarm-agent"  # the tarball's top directory (the Mesos fetcher extracts it)
WARM_FLAG = "--warm"  # `buildfarm_agent.py --warm DIR`: wait for DIR/ASSIGNMENT_FILE

# A warm container's assignment: a JSON object with these keys, written once, atomically.
ASSIGNMENT_FILE = "assignment.json"
ASSIGNMENT_KEYS = ("api", "build_id", "token")

# Labels on build containers (Docker) and tasks (Mesos).
LABEL_FARM = "buildfarm.farm"  # which farm made the container (tests and cleanup filter on it)
LABEL_BUILD = "buildfarm.build-id"
LABEL_ATTEMPT = "buildfarm.attempt"
LABEL_WARM = "buildfarm.warm"  # an idle warm container, not yet handed a build


def agent_env(api: str, build_id: str, token: str, cache: str = CACHE_MOUNT, workspace: str = WORKSPACE) -> dict[str, str]:
    """The environment that starts the agent on one build."""
    return {ENV_API: api, ENV_BUILD_ID: build_id, ENV_TOKEN: token, ENV_CACHE: cache, ENV_WORKSPACE: workspace}


def assignment(api: str, build_id: str, token: str) -> dict[str, str]:
    """The content of a warm container's ASSIGNMENT_FILE."""
    return dict(zip(ASSIGNMENT_KEYS, (api, build_id, token)))


def build_labels(build_id: str, attempt: int) -> dict[str, str]:
    return {LABEL_BUILD: build_id, LABEL_ATTEMPT: str(attempt)}
