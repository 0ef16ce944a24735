"""The farm and the in-container agent agree on what a backend hands the agent.

The agent (executors/buildfarm_agent.py) runs alone in the build container and cannot import
buildfarm/agent_contract.py, so it repeats the names; this test keeps the two in step."""

from __future__ import annotations

import importlib.util

from buildfarm import agent_bundle, agent_contract as contract

SHARED = ("ENV_API", "ENV_BUILD_ID", "ENV_TOKEN", "ENV_CACHE", "ENV_CACHE_READONLY", "ENV_WORKSPACE",
          "ENV_BUILD_USER", "ENV_HOME", "ENV_ON_HOST",
          "CACHE_MOUNT", "WARM_FLAG", "ASSIGNMENT_FILE", "ASSIGNMENT_KEYS")


def _agent():
    spec = importlib.util.spec_from_file_location("buildfarm_agent_under_test", agent_bundle.AGENT_SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_agent_declares_the_contracts_names():
    agent = _agent()
    differ = {name: (getattr(contract, name), getattr(agent, name, None)) for name in SHARED
              if getattr(agent, name, None) != getattr(contract, name)}
    assert not differ, f"farm and agent disagree (farm, agent): {differ}"
    assert agent.WORKSPACE_DEFAULT == contract.WORKSPACE


def test_agent_env_and_assignment_carry_what_the_agent_reads(monkeypatch):
    env = contract.agent_env("http://127.0.0.1:1/", "b1", "t1")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    agent = _agent()  # reads its environment at import, as in a container
    assert (agent.API, agent.BUILD_ID, agent.TOKEN) == ("http://127.0.0.1:1", "b1", "t1")
    assert (agent.CACHE, agent.WORKSPACE) == (contract.CACHE_MOUNT, contract.WORKSPACE)
    assert set(contract.assignment("a", "b", "c")) == set(agent.ASSIGNMENT_KEYS)


def test_the_bundle_holds_the_agent_under_the_contracts_name():
    assert agent_bundle.AGENT_SOURCE.name == contract.AGENT_SCRIPT
