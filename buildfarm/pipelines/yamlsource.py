"""YAML that remembers where things are: mappings and lists carry the line of each key or
item, so a validation error can point at `file:line` and the field."""

from __future__ import annotations

from typing import Any

import yaml

from ..yamlcheck import refusal


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
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


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
        raise SourceError(line, f"YAML syntax: {problem}{hint}") from None
    except yaml.YAMLError as e:
        raise SourceError(0, f"YAML syntax: {e}") from None


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
