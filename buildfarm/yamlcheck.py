"""Limits on YAML that users hand the farm (.buildfarm.yml from any pusher, pipeline files), checked
before it is loaded: at most MAX_BYTES, lists and mappings nested at most MAX_DEPTH deep, and no
anchors or aliases. A few hundred bytes cannot then expand into gigabytes (a "billion laughs"
document), and 100 KB of `[[[[...` is refused in milliseconds: PyYAML's scanner slows down
quadratically with the nesting depth, and its composer recurses once per level."""

from __future__ import annotations

import re

import yaml

MAX_BYTES = 256 * 1024
MAX_DEPTH = 32

# The C parser when PyYAML has it (it is fast, and stops by itself at 1,000 levels).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# What matters for the depth of flow collections: brackets, and the quoted scalars and comments
# whose brackets do not count (a quote or `#` starts one only after a space, a line start or an
# indicator; `it's` is a plain word).
_FLOW = re.compile(r"""(?:^|(?<=[\s\[\]{},:]))(?:"(?:[^"\\]|\\.)*"?|'(?:[^']|'')*'?|\#[^\n]*)|[\[\]{}]""",
                   re.MULTILINE)
_START = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_END = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def refusal(text: str) -> tuple[int, str] | None:
    """(line, why) when the text must not be loaded, else None (syntax errors are left to the loader)."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        return 0, f"the file is larger than {MAX_BYTES // 1024} KB"
    too_deep = f"lists and mappings are nested more than {MAX_DEPTH} levels deep; flatten the file"
    line = _flow_too_deep(text)
    if line:
        return line, too_deep
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                return event.start_mark.line + 1, ("YAML anchors and aliases (&name, *name) are not accepted; "
                                                   "write the values out")
            depth += isinstance(event, _START) - isinstance(event, _END)
            if depth > MAX_DEPTH:
                return event.start_mark.line + 1, too_deep
    except yaml.YAMLError:
        return None
    return None


def _flow_too_deep(text: str) -> int | None:
    """The line where `[`/`{` collections nest deeper than MAX_DEPTH, read from the text alone."""
    depth = 0
    for m in _FLOW.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return text.count("\n", 0, m.start()) + 1
        elif c in "]}":
            depth = max(depth - 1, 0)
    return None
