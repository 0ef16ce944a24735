#!/bin/sh
# Build buildfarm's images with no registry: the debootstrap base, then each image FROM it.
# Docker's layer cache makes a rebuild with unchanged Dockerfiles take a second.
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
BASE="${BASE:-buildfarm/base:bookworm}"
"$HERE/make-base.sh" "$BASE"
for dir in builder; do
    echo "images: buildfarm/$dir:latest"
    log="$(mktemp)"
    if ! docker build -q --build-arg "BASE=$BASE" -t "buildfarm/$dir:latest" "$HERE/$dir" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
done
