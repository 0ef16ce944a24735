"""Globs over slash-separated names (branches, paths): `*` stays within one segment, `**` crosses
segments, `dir/` is everything below dir, and in a list a leading `!` excludes. Used by
.buildfarm.yml's `branches:` and `paths:` and by secrets' branch scopes, so both read alike."""

from __future__ import annotations

import re
from functools import lru_cache

@lru_cache(maxsize=512)
def _glob_regex(pattern: str) -> re.Pattern:
    if pattern.endswith("/"):
        pattern += "**"
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def glob_match(pattern: str, name: str) -> bool:
    """`*` matches within one path segment, `**` across segments, `dir/` everything below dir."""
    return bool(_glob_regex(pattern).match(name))


def selected(patterns: list[str], name: str) -> bool:
    """Whether `name` passes a filter: the last pattern that matches decides (`!` excludes);
    a filter made only of exclusions starts from "everything"."""
    verdict = all(p.startswith("!") for p in patterns)
    for p in patterns:
        if p.startswith("!"):
            if glob_match(p[1:], name):
                verdict = False
        elif glob_match(p, name):
            verdict = True
    return verdict
