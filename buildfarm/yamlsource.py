"""YAML that users hand the farm (.buildfarm.yml from any pusher, pipeline files), read in one way.

Limits first (`refusal`), checked before it is loaded: at most MAX_BYTES, lists and mappings
nested at most MAX_DEPTH deep, and no anchors or aliases. A few hundred bytes cannot then expand
into gigabytes (a "billion laughs" document), and 100 KB of `[[[[...` is refused in milliseconds:
PyYAML's scanner slows down quadratically with the nesting depth, and its composer recurses once
per level. Then `load`: YAML
that remembers where things are: mappings and lists carry the line of each key or item, so a
validation error can point at `file:line` and the field (`line_of`). Build files
(triggers/buildfile.py) and pipelines (pipelines/model.py) both read through here.
"""

from __future__ import annotations

import re
from typing import Any

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


class LineDict(dict):
    """A mapping with `line` (its own) and `lines[key]` (each key's)."""

    line: int = 0

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.lines: dict[Any, int] = {}


class LineList(list):
    """A list with `line` (its own) and `lines[i]` (each item's)."""

    line: int = 0

    def __init__(self, *a):
        super().__init__(*a)
        self.lines: list[int] = []


class SourceError(ValueError):
    """Where (`line`, 0 when unknown) and why a document cannot be read."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


class SyntaxProblem(SourceError):
    """Not YAML at all; `problem` is the parser's own words."""

    def __init__(self, line: int, message: str, problem: str):
        super().__init__(line, message)
        self.problem = problem


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    for k, v in node.value:
        key = loader.construct_object(k, deep=True)
        if not isinstance(key, str | int | float | bool) or key is None:
            raise SourceError(k.start_mark.line + 1, f"a key must be a plain name, not {key!r}")
        if key in out:
            raise SourceError(k.start_mark.line + 1, f"duplicate key {key!r} (first on line {out.lines[key]})")
        out[key] = loader.construct_object(v, deep=True)
        out.lines[key] = k.start_mark.line + 1
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList()
    out.line = node.start_mark.line + 1
    for item in node.value:
        out.append(loader.construct_object(item, deep=True))
        out.lines.append(item.start_mark.line + 1)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def load(text: str) -> Any:
    """Parse one YAML document; SourceError(line, message) for a syntax error."""
    refused = refusal(text)
    if refused:
        raise SourceError(*refused)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except SourceError:
        raise
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        problem = " ".join(x for x in (e.context, e.problem) if x)
        hint = ""
        if "alias" in problem or "'*'" in problem:
            hint = " (quote cron expressions that start with '*', e.g. \"*/5 * * * *\")"
        raise SyntaxProblem(line, f"YAML syntax: {problem}{hint}", problem) from None
    except yaml.YAMLError as e:
        raise SyntaxProblem(0, f"YAML syntax: {e}", str(e)) from None


def line_of(doc: Any, path: tuple, default: int = 0) -> int:
    """The line of the deepest element of `path` that exists in `doc`."""
    line = getattr(doc, "line", default) or default
    node = doc
    for part in path:
        if isinstance(node, LineDict) and part in node:
            line = node.lines.get(part, line)
            node = node[part]
        elif isinstance(node, LineList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lines[part]
            node = node[part]
        else:
            break
    return line
