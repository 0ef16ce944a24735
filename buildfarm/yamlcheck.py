"""Limits on YAML that users hand the farm (.buildfarm.yml from any pusher, pipeline files):
bounded size and no anchors or aliases, so a few hundred bytes cannot expand into gigabytes
(a "billion laughs" document) while the farm reads them."""

from __future__ import annotations

import yaml

MAX_BYTES = 256 * 1024


def refusal(text: str) -> tuple[int, str] | None:
    """(line, why) when the text must not be loaded, else None (syntax errors are left to the loader)."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        return 0, f"the file is larger than {MAX_BYTES // 1024} KB"
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                return event.start_mark.line + 1, ("YAML anchors and aliases (&name, *name) are not accepted; "
                                                   "write the values out")
    except yaml.YAMLError:
        return None
    return None
