"""A full disk under the farm's logs and artifacts: small tmpfs mounts (as root) on DATA/logs and
DATA/artifacts. The build that cannot write ends `error` with the reason, the farm keeps serving,
what was stored stays whole, and writes resume once there is space again.

The embedded Redis keeps its AOF in DATA/redis, on the data directory's own disk: these tests fill
only the logs and artifacts mounts (README, "Disk full", says what a full Redis disk does)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from buildfarm.diskspace import DiskFull
from buildfarm.logs import LogStore

from .conftest import FarmProcess, need

pytestmark = pytest.mark.docker


def mount_tmpfs(path: Path, size: str) -> None:
    need(os.geteuid() == 0, "root (to mount a small tmpfs)")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; return it (deleting it gives the space back)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        block = b"\0" * 65536
        try:
            while True:
                f.write(block)
        except OSError:
            pass
    small = b"\0" * 512
    with open(filler, "ab", buffering=0) as f:  # the last few pages, too
        try:
            while True:
                f.write(small)
        except OSError:
            pass
    return filler


@pytest.fixture
def small_disks(tmp_path):
    mounts = []

    def make(data: Path, **sizes: str) -> Path:
        for name, size in sizes.items():
            mount_tmpfs(data / name, size)
            mounts.append(data / name)
        return data

    yield make
    for m in reversed(mounts):
        unmount(m)


def test_a_log_chunk_is_stored_whole_or_not_at_all_when_the_disk_fills(tmp_path, small_disks):
    root = small_disks(tmp_path, logs="1m") / "logs"
    filler = root / "filler"
    filler.write_bytes(b"\0" * 600_000)
    store = LogStore(root)
    chunk = bytes(range(256)) * 400  # 102,400 bytes
    seq = 0
    with pytest.raises(DiskFull) as full:
        while True:
            store.append_chunk("b1", seq + 1, chunk)
            seq += 1
    assert str(full.value) == "no space left on the farm's disk (logs)"
    assert seq >= 1  # some fitted before the disk filled
    # What is stored is exactly the chunks that fitted, and the next number expected is the failed one.
    assert store.path("b1").read_bytes() == chunk * seq
    assert store.expected_seq("b1") == seq + 1
    # Space comes back: the agent's retry of the failed chunk is appended once, a second retry is a duplicate.
    filler.unlink()
    assert store.append_chunk("b1", seq + 1, chunk) == "appended"
    assert store.append_chunk("b1", seq + 1, chunk) == "duplicate"
    assert store.path("b1").read_bytes() == chunk * (seq + 1)


def test_full_logs_disk_ends_the_build_with_the_reason_and_the_farm_keeps_serving(tmp_path, small_disks, git_server,
                                                                                  docker_engine, redis_binary):
    repo = git_server.make_repo("diskfull", {"README": "x\n"})
    data = small_disks(tmp_path / "data", logs="2m", artifacts="2m")
    farm = FarmProcess(data)
    try:
        before = farm.submit(repo, "sh", "-c", "echo stored-before")
        assert farm.wait_done(before)["state"] == "succeeded"
        stored = farm.log_text(before)

        filler = fill(data / "logs")
        starved = farm.submit(repo, "sh", "-c", "echo cannot-be-written; sleep 60")
        rec = farm.wait_done(starved, 90)
        assert rec["state"] == "error"
        assert rec["reason"].startswith("no space left on the farm's disk (logs); free space (`buildfarm gc`")
        # The farm kept serving: the API answers, the earlier build's log is whole.
        assert farm.api("GET", "/readyz").status_code == 200
        assert farm.log_text(before) == stored
        assert "no space left on the farm's disk (logs)" in farm.up_log()

        filler.unlink()  # space is back: the next build writes its log as usual
        after = farm.submit(repo, "sh", "-c", "echo written-after")
        assert farm.wait_done(after)["state"] == "succeeded"
        assert b"written-after" in farm.log_text(after)
    finally:
        farm.stop()


def test_full_artifacts_disk_ends_the_build_and_records_no_partial_artifact(tmp_path, small_disks, git_server,
                                                                            docker_engine, redis_binary):
    repo = git_server.make_repo("diskfull-art", {"README": "x\n"})
    data = small_disks(tmp_path / "data", artifacts="1m")
    farm = FarmProcess(data)
    try:
        big = farm.submit(repo, "sh", "-c", "echo small > a-small.txt; head -c 3000000 /dev/urandom > z-big.bin",
                          options=("--artifact", "a-small.txt", "--artifact", "z-big.bin"))
        rec = farm.wait_done(big, 90)
        assert rec["state"] == "error"
        assert rec["reason"].startswith("no space left on the farm's disk (artifacts)")
        # a-small.txt (uploaded first, whole) is kept; z-big.bin was not recorded and left no partial file.
        assert [a["path"] for a in rec["artifacts"]] == ["a-small.txt"]
        left = sorted(p.name for p in (data / "artifacts").rglob("*") if p.is_file())
        assert left == ["a-small.txt"], left
        assert farm.api("GET", f"/api/v1/builds/{big}/artifacts/a-small.txt").text == "small\n"
    finally:
        farm.stop()
