"""Small sample repositories: what `make run` serves to its demo builds and pipelines, and what the
tests build. Each is a dict of path -> text, written as one commit on `main` of a bare repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# A C program with a Makefile: `make dist` compiles, runs it and packs it.
HELLO = {
    "hello.c": '#include <stdio.h>\nint main(void) { printf("hello from a buildfarm build\\n"); return 0; }\n',
    "Makefile": "all: hello\n"
                "\t@echo \"compiling on $$(uname -m) with $$(gcc --version | head -1)\"\n"
                "hello: hello.c\n\tgcc -O2 -o $@ $<\n"
                "test: hello\n\t./hello\n"
                "dist: test\n\tmkdir -p dist && tar czf dist/hello.tar.gz hello\n",
}

# A release in the layout `pipelines/nightly-ib.yaml` expects: unit tests under tests/ (python3 -m
# unittest) and relval workflows as relval/*.sh.
RELEASE = {
    "core.py": "def add(a, b):\n    return a + b\n",
    "tests/__init__.py": "",
    "tests/test_core.py": "import unittest\nimport core\n\n\nclass T(unittest.TestCase):\n"
                          "    def test_add(self):\n        self.assertEqual(core.add(2, 3), 5)\n",
    **{f"relval/wf{i}.sh": f"echo relval workflow {i}: $(python3 -c 'import core; print(core.add({i}, {i}))')\n"
       for i in range(1, 6)},
}


def write_files(work: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        p = work / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        if path.endswith(".sh"):
            p.chmod(0o755)


def make_bare_repo(bare: Path, files: dict[str, str], message: str = "initial") -> None:
    """Create the bare repository `bare` holding `files` as one commit on main (replacing it)."""
    work = bare.with_name(bare.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(bare, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        write_files(work, files)
        git = ["git", "-C", str(work), "-c", "user.email=sample@buildfarm", "-c", "user.name=sample"]
        subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-qm", message], check=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
