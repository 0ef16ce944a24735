"""The farm's pipeline files: every *.yaml / *.yml in its pipelines directory
($BUILDFARM_PIPELINES, else ./pipelines where `buildfarm up` starts), re-read when they change.
A file that does not validate is listed with its problems, never silently left out."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .model import Pipeline, PipelineInvalid, Problem, parse_file


def default_dir() -> Path:
    return Path(os.environ.get("BUILDFARM_PIPELINES") or "pipelines").resolve()


class Catalog:
    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory) if directory else default_dir()
        self._cache: dict[Path, tuple[tuple[float, int], Pipeline | PipelineInvalid]] = {}
        self._lock = threading.Lock()

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())

    def load(self) -> tuple[list[Pipeline], list[PipelineInvalid]]:
        """The valid pipelines (by name) and the files that are not."""
        good: dict[str, Pipeline] = {}
        bad: list[PipelineInvalid] = []
        with self._lock:
            files = self._files()
            for path in files:
                try:
                    st = path.stat()
                except OSError:
                    continue
                stamp = (st.st_mtime, st.st_size)
                cached = self._cache.get(path)
                if cached is None or cached[0] != stamp:
                    try:
                        result: Pipeline | PipelineInvalid = parse_file(path)
                    except PipelineInvalid as e:
                        result = e
                    self._cache[path] = (stamp, result)
                result = self._cache[path][1]
                if isinstance(result, PipelineInvalid):
                    bad.append(result)
                elif result.name in good:
                    bad.append(PipelineInvalid([Problem(str(path), 1, "name", f"{result.name!r} is already the "
                                                                              f"name of {good[result.name].file}")]))
                else:
                    good[result.name] = result
            for gone in set(self._cache) - set(files):
                del self._cache[gone]
        return list(good.values()), bad

    def get(self, name: str) -> Pipeline | None:
        return next((p for p in self.load()[0] if p.name == name), None)
