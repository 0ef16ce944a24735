#!/bin/sh
# Build buildfarm's images with no registry: the debootstrap base, then each image FROM it.
# Docker's layer cache makes a rebuild with unchanged Dockerfiles take a second.
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
BASE="${BASE:-buildfarm/base:bookworm}"
"$HERE/make-base.sh" "$BASE"

build() {  # build TAG DIR [docker build args...]
    tag="$1" dir="$2"
    shift 2
    echo "images: $tag"
    log="$(mktemp)"
    if ! docker build -q "$@" -t "$tag" "$dir" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
}

for dir in builder; do
    build "buildfarm/$dir:latest" "$HERE/$dir" --build-arg "BASE=$BASE"
done

# The Jenkins agent: the stand-in (tests) always; the real one (a JRE and Jenkins' agent.jar) when
# JENKINS_AGENT_JAR names an agent.jar fetched from JENKINS_URL/jnlpJars/agent.jar, or one was
# put at images/jenkins-agent/agent.jar.
build buildfarm/jenkins-agent:standin "$HERE/jenkins-agent" --build-arg BASE=buildfarm/builder:latest \
    --build-arg JAVA=standin --build-arg AGENT_JAR=standin/agent.py
if [ -n "${JENKINS_AGENT_JAR:-}" ]; then
    cp "$JENKINS_AGENT_JAR" "$HERE/jenkins-agent/agent.jar"
fi
if [ -f "$HERE/jenkins-agent/agent.jar" ]; then
    build buildfarm/jenkins-agent:latest "$HERE/jenkins-agent" --build-arg BASE=buildfarm/builder:latest
fi
