"""Jenkins, both ways, against a real farm (`buildfarm up`), real containers and the Jenkins double
(tests/doubles/jenkins.py), driven through python-jenkins and the real `buildfarm` CLI:

- a Jenkins shell step runs `buildfarm submit --wait --follow`: its exit code for each outcome,
  the trigger recorded from BUILD_URL/JOB_NAME/BUILD_NUMBER, JUnit XML fetched for the publisher;
- `buildfarm jenkins-bridge`: queued items get ephemeral agents (the real image with the stand-in
  agent.jar), within limits, cleaned up when they never connect, and across a bridge restart.
"""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET

import httpx
import jenkins
import pytest
import requests

from buildfarm.jenkins.bridge import node_secret, waiting_label
from buildfarm.jenkins.downstream import notify_pipeline_end
from tests.conftest import BUILDFARM, IMAGE, ROOT, wait_until

from tests.jenkins_support import (AGENT_IMAGE, BIG_IMAGE, farm_env, write_label_map, linux, assert_clean, shell_step, build_id_from, assert_jenkins_trigger)


@pytest.fixture(scope="module")
def repo(git_server):
    return git_server.make_repo("jenkins-tools", {"README": "checked out into each agent's workspace\n"})


def test_shell_step_exit_codes_and_trigger(farm, git_server, tmp_path):
    url = git_server.make_repo("jenkins-step", {"README": "x\n"})
    submit = f"buildfarm submit --repo {url} --image {IMAGE} --wait --follow"
    ok = shell_step(farm, tmp_path, f"{submit} -- sh -c 'echo hello from the farm'")
    assert ok.returncode == 0, ok.stderr.decode()
    assert b"hello from the farm" in ok.stdout  # the log, live, in the Jenkins console
    assert_jenkins_trigger(farm, build_id_from(ok.stderr))

    failed = shell_step(farm, tmp_path, f"{submit} -- sh -c 'exit 7'")
    assert failed.returncode == 7
    assert_jenkins_trigger(farm, build_id_from(failed.stderr))

    timed_out = shell_step(farm, tmp_path, f"{submit} --timeout 2 -- sleep 60")
    assert timed_out.returncode == 124
    assert farm.build(build_id_from(timed_out.stderr))["state"] == "timed_out"

    infra = shell_step(farm, tmp_path, f"{submit} --commit deadbeefdeadbeef -- true")
    assert infra.returncode == 125  # the farm could not run it: an infrastructure error, not a test failure
    assert farm.build(build_id_from(infra.stderr))["state"] == "error"
    unreachable = shell_step(farm, tmp_path, f"buildfarm --server http://127.0.0.1:1 submit --repo {url} "
                                             f"--image {IMAGE} --wait -- true")
    assert unreachable.returncode == 125
    assert b"cannot reach the farm" in unreachable.stderr

    step = shell_step(farm, tmp_path, f"{submit} -- sleep 60", background=True)
    err = b""
    while b" queued" not in err:  # read stderr up to "build ID queued"
        chunk = step.stderr.readline()
        assert chunk, "the step ended before its build was queued"
        err += chunk
    bid = build_id_from(err)
    assert farm.cli("cancel", bid).returncode == 0
    assert step.wait(60) == 130
    assert_jenkins_trigger(farm, bid)


def test_junit_xml_fetched_for_the_publisher(farm, git_server, tmp_path):
    url = git_server.make_repo("jenkins-junit", {"README": "x\n"})
    junit = ('<testsuite name="unit" tests="2" failures="0"><testcase classname="t" name="a"/>'
             '<testcase classname="t" name="b"/></testsuite>')
    out = farm.cli("submit", "--repo", url, "--image", IMAGE, "--artifact", "reports/*.xml", "--artifact",
                   "dist/*", "--wait", "--step", f"mkdir -p reports dist && echo '{junit}' > reports/junit.xml",
                   "--step", "echo not a report > dist/app.txt")
    assert out.returncode == 0, out.stderr.decode()
    bid = out.stdout.decode().strip() or build_id_from(out.stderr)
    workspace = tmp_path / "workspace"
    got = farm.cli("artifacts", bid, "--download", str(workspace), "--glob", "*.xml")
    assert got.returncode == 0, got.stderr.decode()
    files = sorted(str(p.relative_to(workspace)) for p in workspace.rglob("*") if p.is_file())
    assert files == ["reports/junit.xml"]
    suite = ET.parse(workspace / "reports" / "junit.xml").getroot()
    assert suite.tag == "testsuite" and suite.get("tests") == "2"


def test_examples_are_well_formed():
    config = ET.parse(ROOT / "examples" / "jenkins" / "freestyle-config.xml").getroot()
    assert config.tag == "project"
    shell = config.find("./builders/hudson.tasks.Shell/command").text
    assert "buildfarm submit" in shell and "--wait" in shell and "--follow" in shell
    assert "buildfarm artifacts" in shell and "--glob" in shell
    assert config.find("./publishers/hudson.tasks.junit.JUnitResultArchiver/testResults") is not None
    jenkinsfile = (ROOT / "examples" / "jenkins" / "Jenkinsfile").read_text()
    assert "buildfarm submit" in jenkinsfile and "junit" in jenkinsfile


# -- the double speaks Jenkins' remote API as python-jenkins expects ------------------------------------

def test_double_speaks_jenkins_remote_api(double):
    server = jenkins.Jenkins(double.url, username=double.user, password=double.token)
    assert server.get_queue_info() == []
    assert server.get_version() == "2.462.3"
    bad = jenkins.Jenkins(double.url, username=double.user, password="wrong")
    with pytest.raises(jenkins.JenkinsException, match="401"):
        bad.get_queue_info()
    no_crumb = requests.post(double.url + "computer/doCreateItem", auth=(double.user, double.token),
                             data={"name": "x", "type": "hudson.slaves.DumbSlave$DescriptorImpl", "json": "{}"})
    assert no_crumb.status_code == 403
    item = double.enqueue("app", "linux")
    (q,) = server.get_queue_info()
    assert q["id"] == item and q["task"]["name"] == "app" and q["buildable"]
    assert q["why"] == "There are no nodes with the label ‘linux’"
    assert waiting_label(q, {"linux"}) == "linux" and waiting_label(q, {"windows"}) is None
    server.create_node("bf-linux-t", numExecutors=1, labels="linux", exclusive=True,
                       launcher=jenkins.LAUNCHER_JNLP, launcher_params={})
    info = server.get_node_info("bf-linux-t")
    assert info["offline"] and info["idle"] and info["numExecutors"] == 1 and info["jnlpAgent"]
    assert server.get_queue_info()[0]["why"] == "All nodes of label ‘linux’ are offline"
    assert node_secret(server, "bf-linux-t") == double.node("bf-linux-t").secret
    with pytest.raises(jenkins.JenkinsException):
        server.create_node("bf-linux-t", launcher=jenkins.LAUNCHER_JNLP, launcher_params={})
    server.delete_node("bf-linux-t")
    assert not server.node_exists("bf-linux-t")
    queue_item = notify_pipeline_end(server, "nightly-report", "run-17", "failed", "nightly")
    assert double.triggered == [{"job": "nightly-report", "item": queue_item, "params": {
        "BUILDFARM_PIPELINE_RUN": "run-17", "BUILDFARM_PIPELINE_OUTCOME": "failed", "BUILDFARM_PIPELINE": "nightly"}}]


def test_bridge_refuses_bad_configuration(farm, double, repo, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels:\n  linux:\n    image: x\n    cpus: -1\n")
    out = subprocess.run([BUILDFARM, "--server", farm.url, "jenkins-bridge", "--url", double.url, "--user", "u",
                          "--token", "t", "--label-map", str(bad)], capture_output=True, text=True, env=farm_env(farm))
    assert out.returncode == 2 and "labels.linux.cpus" in out.stderr and "Traceback" not in out.stderr
    good = write_label_map(tmp_path / "good.yaml", repo, {"linux": linux()})
    out = subprocess.run([BUILDFARM, "--server", farm.url, "jenkins-bridge", "--url", double.url, "--user",
                          double.user, "--token", "wrong", "--label-map", str(good)], capture_output=True, text=True,
                         env=farm_env(farm))
    assert out.returncode == 2 and "refused user" in out.stderr and "Traceback" not in out.stderr


# -- buildfarm as Jenkins' agent cloud ----------------------------------------------------------------------

def test_queued_item_gets_exactly_one_agent(farm, agent_image, double, repo, tmp_path, bridges):
    lm = write_label_map(tmp_path / "labels.yaml", repo, {"linux": linux()})
    bridge = bridges(farm, double, lm)
    item = double.enqueue("app", "linux", duration=1.0)
    wait_until(lambda: double.completed, 90, what="the Jenkins build to run on an agent")
    builds = assert_clean(farm, double)
    (done,) = double.completed
    assert done["job"] == "app" and done["item"] == item and done["result"] == "SUCCESS"
    assert double.created == [done["node"]] and double.deleted == [done["node"]]
    assert len(builds) == 1 and builds[0]["state"] == "succeeded"
    b = builds[0]
    assert b["spec"]["image"] == AGENT_IMAGE and b["spec"]["trigger"]["kind"] == "jenkins"
    assert b["spec"]["trigger"]["detail"]["node"] == done["node"]
    assert b["spec"]["trigger"]["detail"]["item"] == str(item)
    log = farm.log_text(b["id"])
    assert b"Building app #1" in log and b"Terminated" in log
    # The node's secret reached the agent (it connected) but is in neither the record nor the log.
    b = farm.build(b["id"])  # the whole record (lists carry a summary of the spec)
    node_secret_value = double.secrets_issued[done["node"]]
    assert b["spec"]["secret_env"] == {"JENKINS_SECRET": "***"} and "JENKINS_SECRET" not in b["spec"]["env"]
    assert node_secret_value not in json.dumps(b) and node_secret_value.encode() not in log
    assert [e["node"] for e in bridge.of("agent-created")] == [done["node"]]
    assert bridge.of("agent-busy", node=done["node"])  # seen busy, then taken offline: one build only


def test_two_labels_two_images(farm, agent_image, double, repo, tmp_path, bridges):
    lm = write_label_map(tmp_path / "labels.yaml", repo, {
        "linux": linux(),
        "big": {"image": BIG_IMAGE, "cpus": 1.0, "mem": 512, "max_agents": 1, "constraints": ["os:linux"]}})
    bridges(farm, double, lm)
    double.enqueue("small-job", "linux", duration=0.5)
    double.enqueue("big-job", "big", duration=0.5)
    other = double.enqueue("other", "windows")  # not served: left alone
    wait_until(lambda: len(double.completed) == 2, 90, what="both builds")
    builds = assert_clean(farm, double)
    by_job = {c["job"]: c for c in double.completed}
    spec = {b["spec"]["trigger"]["detail"]["node"]: b["spec"] for b in builds}
    small, big = spec[by_job["small-job"]["node"]], spec[by_job["big-job"]["node"]]
    assert (small["image"], small["resources"]["cpus"], small["resources"]["mem"]) == (AGENT_IMAGE, 0.5, 256)
    assert (big["image"], big["resources"]["cpus"], big["resources"]["mem"]) == (BIG_IMAGE, 1.0, 512)
    assert big["constraints"] == ["os:linux"]
    assert by_job["big-job"]["node"].startswith("bf-big-") and by_job["small-job"]["node"].startswith("bf-linux-")
    assert len(builds) == 2 and double.queued() == [other]  # the windows item: nobody serves it


def test_limits_hold_under_a_burst_of_50(farm, agent_image, double, repo, tmp_path, bridges):
    lm = write_label_map(tmp_path / "labels.yaml", repo, {"linux": linux(3), "big": linux(2)})
    bridges(farm, double, lm, "--max-total", "4")
    # Each build lasts until the bridge has taken its node offline (the double's until_offline), so
    # none starts and ends between two polls: the window in which the bridge documents that a second
    # build can follow on one node (bridge.py) is kept out, and one build per agent holds however
    # slow the machine. What holds for any build: every item built once, the limits never exceeded.
    items = [double.enqueue(f"job{i}", "big" if i % 5 == 0 else "linux", duration=0, until_offline=True)
             for i in range(50)]
    wait_until(lambda: len(double.completed) == 50, 170, 0.5,
               what=f"all 50 items built ({len(double.completed)} done)")
    assert_clean(farm, double)
    assert sorted(c["item"] for c in double.completed) == items
    assert all(c["result"] == "SUCCESS" for c in double.completed)
    assert double.peak_nodes["linux"] <= 3 and double.peak_nodes["big"] <= 2 and double.peak_nodes["*"] <= 4
    nodes = [c["node"] for c in double.completed]
    assert len(set(nodes)) == 50  # one build per agent: a node seen busy is taken offline at once


def test_agent_that_never_connects_is_cleaned(farm, agent_image, double, repo, tmp_path, bridges):
    double.accept_agents = False  # as if a firewall kept the agents from Jenkins
    lm = write_label_map(tmp_path / "labels.yaml", repo, {"linux": linux()})
    bridge = bridges(farm, double, lm, "--connect-timeout", "8")
    # 1. Its queue item goes away before the agent connects.
    first = double.enqueue("gone-soon", "linux")
    (created,) = wait_until(lambda: bridge.of("agent-created", item=first), 30, what="an agent")
    wait_until(lambda: farm.build(created["build"])["state"] == "running", 60, what="the agent build to run")
    double.cancel(first)
    (removed,) = wait_until(lambda: bridge.of("agent-removed", node=created["node"]), 30, what="its removal")
    assert "left the queue" in removed["reason"] and removed["cancelled"]
    # 2. Its item stays, but the agent never connects.
    second = double.enqueue("never", "linux")
    (created2,) = wait_until(lambda: bridge.of("agent-created", item=second), 30, what="a second agent")
    (removed2,) = wait_until(lambda: bridge.of("agent-removed", node=created2["node"]), 60, what="the timeout")
    assert "did not connect within 8 s" in removed2["reason"] and removed2["cancelled"]
    double.cancel(second)
    builds = assert_clean(farm, double)
    assert {created["build"], created2["build"]} <= {b["id"] for b in builds}
    assert [b["state"] for b in builds] == ["cancelled"] * len(builds), [(b["id"], b["state"], b["reason"]) for b in builds]
    assert not double.completed


def test_bridge_restart_leaves_no_orphans(farm, agent_image, double, repo, tmp_path, bridges):
    lm = write_label_map(tmp_path / "labels.yaml", repo, {"linux": linux(3)})
    bridge = bridges(farm, double, lm)
    items = [double.enqueue(f"job{i}", "linux", duration=4.0) for i in range(4)]
    wait_until(lambda: len(bridge.of("agent-busy")) >= 2, 90, what="two agents busy")
    bridge.kill9()
    # Left-overs a crash could also leave: a node whose build was never submitted, and an agent
    # build whose node is gone.
    server = jenkins.Jenkins(double.url, username=double.user, password=double.token)
    server.create_node("bf-linux-orphan", numExecutors=1, labels="linux", exclusive=True,
                       launcher=jenkins.LAUNCHER_JNLP, launcher_params={})
    url = double.url.rstrip("/")
    headers = getattr(farm, "headers", None) or {}
    r = httpx.post(farm.url + "/api/v1/builds", headers=headers, json={
        "repo": repo, "image": IMAGE, "command": ["sleep", "300"], "resources": {"cpus": 0.25, "mem": 128},
        "trigger": {"kind": "jenkins", "detail": {"bridge": url, "node": "bf-linux-ghost", "label": "linux",
                                                  "item": "1"}}})
    assert r.status_code == 201, r.text
    ghost = r.json()["id"]
    # Builds another farm user crafted to look like the bridge's (same trigger kind and detail): one
    # claims a live agent's node, one a node that does not exist. They never run (no capacity).
    made = httpx.post(farm.url + "/api/v1/tokens", headers=headers, json={"user": "mallory", "role": "submitter"})
    assert made.status_code == 201, made.text
    live = bridge.of("agent-busy")[0]
    crafted = {}
    for node in (live["node"], "bf-linux-crafted"):
        r = httpx.post(farm.url + "/api/v1/builds", headers={"Authorization": f"Bearer {made.json()['token']}"}, json={
            "repo": repo, "image": IMAGE, "command": ["sleep", "300"], "resources": {"cpus": 1000},
            "wait_for_capacity": True, "trigger": {"kind": "jenkins", "user": double.user, "detail": {
                "bridge": url, "node": node, "label": "linux", "item": "1"}}})
        assert r.status_code == 201, r.text
        crafted[node] = r.json()["id"]
    restarted = bridges(farm, double, lm)
    assert restarted.of("orphan-node-deleted", node="bf-linux-orphan")
    assert restarted.of("orphan-build-cancelled", build=ghost)
    (adopted,) = restarted.of("agent-adopted", node=live["node"])
    assert adopted["build"] == live["build"]  # its own build, not the one that claims its node
    assert not [e for e in restarted.events if e.get("build") in crafted.values()], restarted.events
    assert {farm.build(b)["state"] for b in crafted.values()} == {"queued"}  # neither adopted nor cancelled
    for b in crafted.values():
        assert httpx.post(f"{farm.url}/api/v1/builds/{b}/cancel", headers=headers).status_code == 200
    wait_until(lambda: len(double.completed) == 4, 120, 0.5, what="all four items built")
    builds = assert_clean(farm, double)
    assert sorted(c["item"] for c in double.completed) == items
    assert len({c["node"] for c in double.completed}) == 4
    assert farm.build(ghost)["state"] == "cancelled"
    assert all(b["state"] in ("succeeded", "cancelled") for b in builds)
