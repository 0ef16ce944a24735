"""Schemathesis hooks for tests/test_api_fuzz.py (loaded through SCHEMATHESIS_HOOKS): besides what
the OpenAPI document allows, each generated request may carry hostile text in one of its strings
(a NUL byte, a lone surrogate, 200 KB, a 2,000-level path, a 300-character name), in place of the
string or after it (so a URL keeps the prefix the farm allows). Generated build specs are mostly
invalid, so POST /api/v1/builds also gets a valid spec (BF_FUZZ_REPO, BF_FUZZ_IMAGE) with hostile
text in one field: the inputs that once made the farm answer 500. With BF_FUZZ_BUILD set, the
agent routes are called for that build (the run's token is then its agent token)."""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

# In URLs (path parameters, query strings) neither a lone surrogate (no URL can carry it) nor 200 KB
# (the HTTP server refuses such request lines before the farm sees them). "out" and "out/x/y" make
# an artifact path under an earlier artifact file, or onto its directory.
IN_URLS = ["a\x00b", "n" * 300, "/".join(["d"] * 2000), "-rf", "../../etc/passwd", "[" * 5000, "\u202e\ufeff", "",
           "out", "out/x/y"]
HOSTILE = st.sampled_from(IN_URLS + ["echo \ud800", "x" * 200_000])


def _paths(value: Any, at: tuple = ()) -> list[tuple]:
    """Where the strings of a JSON value are (as paths of keys and indexes)."""
    if isinstance(value, str):
        return [at]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _paths(v, at + (k,))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _paths(v, at + (i,))]
    return []


def _replaced(value: Any, at: tuple, text: str, append: bool) -> Any:
    if not at:
        return value + text if append else text
    head, rest = at[0], at[1:]
    if isinstance(value, dict):
        return {**value, head: _replaced(value[head], rest, text, append)}
    return [_replaced(v, rest, text, append) if i == head else v for i, v in enumerate(value)]


def _hostile(value: Any, texts: st.SearchStrategy = HOSTILE) -> st.SearchStrategy:
    """`value` with hostile text in (or after) one of its strings."""
    paths = _paths(value)
    if not paths:
        return st.just(value)
    return st.tuples(st.sampled_from(paths), texts, st.booleans()).map(lambda p: _replaced(value, *p))


def _sometimes_hostile(value: Any, texts: st.SearchStrategy = HOSTILE) -> st.SearchStrategy:
    return st.one_of(st.just(value), _hostile(value, texts))


def _valid_spec() -> dict | None:
    repo, image = os.environ.get("BF_FUZZ_REPO"), os.environ.get("BF_FUZZ_IMAGE")
    if not repo or not image:
        return None
    return {"repo": repo, "ref": "main", "image": image, "steps": ["true"], "env": {"A": "1"},
            "artifacts": ["out/*"], "constraints": ["arch:x86_64"], "trigger": {"kind": "cli", "user": "u"}}


@schemathesis.hook
def flatmap_body(context, body):
    op = context.operation
    spec = _valid_spec()
    if spec and op is not None and op.method.upper() == "POST" and op.path == "/api/v1/builds":
        return st.one_of(_sometimes_hostile(body), _hostile(spec))
    return _sometimes_hostile(body)


@schemathesis.hook
def flatmap_query(context, query):
    return _sometimes_hostile(query or {}, st.sampled_from(IN_URLS))


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    build = os.environ.get("BF_FUZZ_BUILD")
    params = dict(path_parameters or {})
    if build and "build_id" in params:
        params["build_id"] = build  # the real build: the hostile text goes into the other parameters
    others = {k: v for k, v in params.items() if not (build and k == "build_id")}
    return _sometimes_hostile(others, st.sampled_from(IN_URLS)).map(lambda p: {**params, **p})
