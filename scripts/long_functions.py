"""List the functions over LIMIT lines (default 80) in the given files or folders, longest first,
and whether their docstring gives a reason (a line starting "Long:")."""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def long_functions(paths: list[str], limit: int = 80):
    files = [f for p in paths for f in (sorted(Path(p).rglob("*.py")) if Path(p).is_dir() else [Path(p)])]
    for f in files:
        tree = ast.parse(f.read_text(), str(f))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    doc = ast.get_docstring(node) or ""
                    yield n, f"{f}:{node.lineno}", node.name, "Long:" in doc


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--limit=")]
    limit = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--limit=")), 80)
    for n, where, name, reasoned in sorted(long_functions(args or ["buildfarm", "executors"], limit), reverse=True):
        print(f"{n:5d}  {where}  {name}{'  (reason given)' if reasoned else ''}")
