#!/bin/sh
# Build buildfarm/base:bookworm with debootstrap + docker import, because no
# image registry is reachable. Does nothing when the image already exists.
set -eu
NAME="${1:-buildfarm/base:bookworm}"
if docker image inspect "$NAME" >/dev/null 2>&1; then
    echo "images: $NAME present"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "images: debootstrap missing (make deps)" >&2; exit 1; }
ROOT="$(mktemp -d /tmp/buildfarm-base.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
echo "images: debootstrap bookworm into $ROOT (about 30 s)"
debootstrap --variant=minbase bookworm "$ROOT" >"$ROOT.log" 2>&1 \
    || { tail -20 "$ROOT.log" >&2; exit 1; }
rm -f "$ROOT.log"
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
tar -C "$ROOT" -c . | docker import - "$NAME" >/dev/null
echo "images: built $NAME"
