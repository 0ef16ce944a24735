#!/bin/sh
# Install what buildfarm needs from Debian's packages (when missing) and make sure a Docker
# engine answers. Idempotent: a machine that has everything returns in a second.
set -eu
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
missing=""
for pkg in docker.io redis-server redis-sentinel git debootstrap ca-certificates \
           chromium; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
exec "$(dirname "$0")/ensure-docker.sh"
