#!/bin/sh
# Build buildfarm's images with no registry: the debootstrap base, then each image FROM it.
# Docker's layer cache makes a rebuild with unchanged Dockerfiles take a second.
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
BASE="${BASE:-buildfarm/base:bookworm}"
"$HERE/make-base.sh" "$BASE"
for dir in builder; do
    echo "images: buildfarm/$dir:latest"
    docker build -q --build-arg "BASE=$BASE" -t "buildfarm/$dir:latest" "$HERE/$dir" >/dev/null
done
