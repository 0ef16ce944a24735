"""buildfarm and Jenkins: the jenkins-bridge that gives Jenkins ephemeral agents run as buildfarm
builds (`bridge.py`, configured by a label map, `labelmap.py`), and the downstream job triggered
when a pipeline run ends (`downstream.py`). The other direction (a Jenkins `sh` step running
`buildfarm submit --wait --follow`) needs nothing here: see examples/jenkins/."""
