"""The label map: which Jenkins labels buildfarm serves, and with what agent.

    # label-map.yaml
    repo: git://git.example/ci-tools.git     # checked out into each agent's workspace (default)
    labels:
      linux:
        image: buildfarm/jenkins-agent       # built from images/jenkins-agent
        cpus: 2
        mem: 4096
        max_agents: 4                        # at most 4 agents of this label at once
        constraints: ["arch:x86_64"]
      el9-big:
        image: registry.example/cms/el9-jenkins-agent
        cpus: 8
        mem: 16384
        max_agents: 2
        constraints: ["os:el9"]

Each agent is a buildfarm build, so every label is checked here against the same BuildSpec the
farm validates (image, resources, constraints, timeout), with errors naming the label and field.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..spec import BuildSpec, describe_errors

_LABEL = re.compile(r"^[A-Za-z0-9_.\-]+$")


class LabelMapError(ValueError):
    """The label map cannot be used; the message says where and how to fix it."""


class LabelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(..., min_length=1, description="Docker image of the agent (images/jenkins-agent)")
    cpus: float = Field(1.0, gt=0, description="CPU cores of each agent")
    mem: int = Field(1024, ge=16, description="memory of each agent in MB")
    disk: int = Field(0, ge=0, description="scratch disk in MB (placement)")
    max_agents: int = Field(2, ge=1, le=1000, description="agents of this label at once")
    constraints: list[str] = Field(default_factory=list, description="agent attributes, e.g. arch:x86_64")
    repo: str | None = Field(None, description="repository checked out into the agent's workspace")
    timeout: int = Field(4 * 3600, ge=60, description="seconds an agent (its one Jenkins build) may run")
    workdir: str = Field("/tmp/jenkins-agent", description="the agent's work directory (the node's remoteFS)")
    websocket: bool = Field(False, description="connect over WebSocket instead of the TCP agent port")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment of the agent")
    priority: str = "normal"
    team: str | None = Field(None, description="the team this label's agents are charged to")

    def spec(self, repo: str, env: dict[str, str], trigger: dict) -> dict:
        """The buildfarm build that runs one agent of this label."""
        return {"repo": repo, "image": self.image, "command": ["jenkins-agent"],
                "env": {**self.env, **env}, "resources": {"cpus": self.cpus, "mem": self.mem, "disk": self.disk},
                "constraints": list(self.constraints), "timeout": self.timeout, "priority": self.priority,
                "trigger": trigger, **({"team": self.team} if self.team else {})}


class LabelMap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: str | None = Field(None, description="default repository for labels without their own")
    labels: dict[str, LabelSettings]

    def repo_of(self, label: str) -> str:
        return self.labels[label].repo or self.repo or ""


def load_label_map(path: str | Path, default_repo: str | None = None) -> LabelMap:
    """Read and check a label map; raise LabelMapError with a message a person can act on."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as e:
        raise LabelMapError(f"cannot read the label map {p}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise LabelMapError(f"{p} is not valid YAML: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("labels"), dict) or not raw["labels"]:
        raise LabelMapError(f"{p}: expected a mapping with `labels:` (label -> image, cpus, mem, max_agents, "
                            f"constraints), e.g.\n  labels:\n    linux:\n      image: buildfarm/jenkins-agent\n"
                            f"      max_agents: 4")
    try:
        lm = LabelMap.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{d['field']}: {d['message']}" for d in describe_errors(e))
        raise LabelMapError(f"{p}: {problems}") from None
    if default_repo and not lm.repo:
        lm.repo = default_repo
    for label, s in lm.labels.items():
        where = f"{p}: labels.{label}"
        if not _LABEL.match(label):
            raise LabelMapError(f"{where}: a label served by the bridge is one Jenkins label (letters, digits, "
                                f"'_', '.', '-'), not an expression")
        if not lm.repo_of(label):
            raise LabelMapError(f"{where}: no repository to check out into the agent's workspace; set `repo:` "
                                f"(top level or per label) or pass --repo")
        try:  # the farm's own schema: the same errors a submit would give, found at start
            BuildSpec.model_validate(s.spec(lm.repo_of(label), {"JENKINS_URL": "x"}, {"kind": "jenkins"}))
        except ValidationError as e:
            problems = "; ".join(f"{d['field']}: {d['message']}" for d in describe_errors(e))
            raise LabelMapError(f"{where}: {problems}") from None
    return lm
