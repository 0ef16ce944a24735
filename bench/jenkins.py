"""Extra figure: a Jenkins queue item seen -> its agent container running, through the
jenkins-bridge (in this process, polling the Jenkins double every 0.1 s) and the farm, as a ratio
to submit -> first log line of a plain build measured in the same run.

"Running" is the agent build's `running` time in the farm's records: its container is up and the
agent in it has started (the stand-in agent.jar connects to Jenkins right after). The start is
the bridge's first poll that sees the item (the enqueue time plus at most one poll)."""

from __future__ import annotations

import threading
import time

from buildfarm.client import Client
from buildfarm.jenkins.bridge import Bridge
from buildfarm.jenkins.labelmap import LabelMap, LabelSettings
from tests.doubles.jenkins import JenkinsDouble

from .builds import _first_line
from .common import Api, Figure, median, quantile, say

AGENT_IMAGE = "buildfarm/jenkins-agent:standin"
POLL = 0.1


def bench_jenkins_agent(api: Api, n: int) -> Figure:
    import jenkins

    say(f"jenkins-agent: {n} queue items, each alone, served by the bridge with {AGENT_IMAGE}; "
        f"interleaved with {n} plain builds (submit -> first log line)")
    double = JenkinsDouble().start()
    client = Client(api.farm.url, getattr(api.farm, "token", None))
    lm = LabelMap(labels={"linux": LabelSettings(image=AGENT_IMAGE, cpus=1.0, mem=512, max_agents=1)}, repo=api.repo)
    seen: dict[int, float] = {}
    events: dict[str, dict] = {}

    def emit(event: str, **f) -> None:
        if event == "agent-created":
            events[f["node"]] = f

    server = jenkins.Jenkins(double.url, username=double.user, password=double.token)
    bridge = Bridge(server, client, lm, max_total=1, connect_timeout=120, emit=emit,
                    launch_server=jenkins.Jenkins(double.url, username=double.user, password=double.token))
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for item in server.get_queue_info():
                seen.setdefault(item["id"], time.time())
            bridge.poll()
            stop.wait(POLL)

    thread = threading.Thread(target=loop, daemon=True, name="bridge")
    thread.start()
    agent, plain, connect = [], [], []
    try:
        api.wait_end(api.submit(["true"]))  # warm-up: mirror cache, image layers
        for i in range(n + 1):  # the first agent is a warm-up too
            api.quiesce()
            item = double.enqueue(f"bench{i}", "linux", duration=0.0)
            end = time.monotonic() + 120
            while not any(e["item"] == item for e in events.values()) and time.monotonic() < end:
                time.sleep(0.02)
            (node,) = [k for k, e in events.items() if e["item"] == item]
            b = api.wait_end(events[node]["build"], timeout=120)
            assert b["state"] == "succeeded", b
            running = next(h["at"] for h in b["history"] if h["state"] == "running")
            start = double.started[-1]["at"]
            if i:
                agent.append(running - seen[item])
                connect.append(start - seen[item])
            api.quiesce()
            box: list = []
            took = _first_line(api, box)
            api.wait_end(box[0])
            if i:
                plain.append(took)
    finally:
        stop.set()
        thread.join(10)
        bridge.close()
        double.stop()
    m, base = median(agent), median(plain)
    say(f"  item seen -> agent running: median {m:.3f} s (p10 {quantile(agent, .1):.3f}, p90 "
        f"{quantile(agent, .9):.3f}); -> the agent took the Jenkins build: {median(connect):.3f} s; "
        f"plain build submit -> first line: {base:.3f} s")
    return Figure(
        key="jenkins-agent", name=f"Jenkins queue item seen -> agent container running, median of {n}", value=m,
        unit="s", baseline=base, baseline_what="submit -> first log line of a plain build", ratio=m / base,
        target="informational", ok=None, shown=f"{m:.3f} s",
        details={"agent_s": agent, "plain_s": plain, "item_to_build_started_s": connect, "poll_s": POLL},
        notes=[f"item seen -> the agent connected and started the Jenkins build: {median(connect):.3f} s"])
