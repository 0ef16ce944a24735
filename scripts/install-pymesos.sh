#!/bin/sh
# Install pymesos 0.3.15 into the virtualenv VENV (default .venv).
#
# pymesos needs http-parser 0.9.0, whose generated C source (parser.c, made by an old Cython)
# does not compile on Python 3.11 (it includes longintrepr.h, which moved in 3.11). We rebuild
# it the way its authors would: regenerate parser.c from parser.pyx with Cython < 3 in a
# throwaway virtualenv, build a wheel, and keep the wheel in .cache/wheels so that later runs
# install it in a second. The result is the real C parser that pymesos uses, unmodified;
# nothing of pymesos itself is patched.
set -eu
VENV="${1:-.venv}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="$ROOT/.cache/wheels"
PY="$VENV/bin/python"
if "$PY" -c "import pymesos, http_parser.parser" 2>/dev/null; then
    exit 0
fi
mkdir -p "$CACHE"
TAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
WHEEL="$(ls "$CACHE"/http_parser-0.9.0-"$TAG"-*.whl 2>/dev/null | head -1 || true)"
if [ -z "$WHEEL" ]; then
    WORK="$(mktemp -d /tmp/buildfarm-http-parser.XXXXXX)"
    trap 'rm -rf "$WORK"' EXIT
    echo "pymesos: building http-parser 0.9.0 for $TAG (Cython < 3 regenerates parser.c)"
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: http-parser==0.9.0 -d "$WORK"
    tar -C "$WORK" -xzf "$WORK"/http-parser-0.9.0.tar.gz
    "$PY" -m venv "$WORK/cython"
    "$WORK/cython/bin/pip" install -q --disable-pip-version-check "Cython<3"
    "$WORK/cython/bin/cython" "$WORK/http-parser-0.9.0/http_parser/parser.pyx" \
        -o "$WORK/http-parser-0.9.0/http_parser/parser.c" >/dev/null 2>&1
    "$PY" -m pip wheel -q --disable-pip-version-check --no-deps "$WORK/http-parser-0.9.0" -w "$CACHE"
    WHEEL="$(ls "$CACHE"/http_parser-0.9.0-"$TAG"-*.whl | head -1)"
fi
"$PY" -m pip install -q --disable-pip-version-check "$WHEEL" "pymesos==0.3.15"
"$PY" -c "import pymesos, http_parser.parser" && echo "pymesos: installed (C http-parser)"
