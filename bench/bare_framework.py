"""The Mesos baseline: a bare pymesos framework that subscribes, launches one Docker task running
`true` on the first offer, and exits when the task has ended (0 when it finished). bench/cli.py
times this whole process against `buildfarm submit --wait -- true` on the same master double.

    python -m bench.bare_framework MASTER_ADDRESS IMAGE
"""

from __future__ import annotations

import sys
import threading

from pymesos import MesosSchedulerDriver, Scheduler

FINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR", "TASK_DROPPED", "TASK_GONE"}


class OneTask(Scheduler):
    def __init__(self, image: str):
        self.image = image
        self.launched = False
        self.state: str | None = None
        self.done = threading.Event()

    def resourceOffers(self, driver, offers):
        for offer in offers:
            if self.launched:
                driver.declineOffer(offer["id"], {"refuse_seconds": 60})
                continue
            self.launched = True
            task = {"name": "bare", "task_id": {"value": "bare-true"}, "agent_id": offer["agent_id"],
                    "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
                                  {"name": "mem", "type": "SCALAR", "scalar": {"value": 256}}],
                    "command": {"shell": True, "value": "true"},
                    "container": {"type": "DOCKER", "docker": {"image": self.image, "network": "HOST"}}}
            driver.launchTasks(offer["id"], [task], {"refuse_seconds": 60})

    def statusUpdate(self, driver, status):
        if status["state"] in FINAL:
            self.state = status["state"]
            self.done.set()


def main(master: str, image: str) -> int:
    sched = OneTask(image)
    driver = MesosSchedulerDriver(sched, {"user": "", "name": "bare-bench", "failover_timeout": 0}, master,
                                  use_addict=False)
    driver.start()
    ok = sched.done.wait(120)
    driver.stop(failover=False)  # TEARDOWN: the master forgets the framework
    driver.join()
    return 0 if ok and sched.state == "TASK_FINISHED" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
