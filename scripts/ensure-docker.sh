#!/bin/sh
# Start dockerd in the background when no Docker engine answers (machines without systemd).
set -eu
if docker info >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    $SUDO systemctl start docker || true
fi
if ! docker info >/dev/null 2>&1; then
    echo "deps: starting dockerd (log: /var/log/buildfarm-dockerd.log)"
    $SUDO sh -c 'nohup dockerd >/var/log/buildfarm-dockerd.log 2>&1 &'
fi
i=0
until docker info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 60 ]; then
        echo "deps: the Docker engine did not come up; see /var/log/buildfarm-dockerd.log" >&2
        exit 1
    fi
    sleep 0.5
done
