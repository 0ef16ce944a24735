"""The BuildSpec's validation messages, and the log and artifact stores' guarantees."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from buildfarm.artifacts import ArtifactPathError, ArtifactStore, ChecksumMismatch, safe_relpath
from buildfarm.logs import LogStore
from buildfarm.spec import BuildSpec, describe_errors
from buildfarm.states import exit_code_for


def errors(**fields):
    base = {"repo": "git://127.0.0.1/x.git", "image": "img", "command": ["true"]}
    base.update(fields)
    with pytest.raises(ValidationError) as e:
        BuildSpec.model_validate(base)
    return {d["field"]: d["message"] for d in describe_errors(e.value)}


def test_spec_errors_name_the_field_and_say_what_is_expected():
    assert "exactly one of 'command'" in errors(steps=["make"])["spec"]
    assert "greater than 0" in errors(resources={"cpus": 0})["resources.cpus"]
    assert "not a commit SHA" in errors(commit="xyz")["commit"]
    assert "not a valid git ref" in errors(ref="a..b")["ref"]
    assert "ATTRIBUTE:VALUE" in errors(constraints=["arch"])["constraints"]
    assert "outside the workspace" in errors(artifacts=["a/../../b"])["artifacts"]
    assert "relative" in errors(artifacts=["/etc/*"])["artifacts"]
    assert "reserved" in errors(env={"BUILDFARM_TOKEN": "x"})["env"]
    assert errors(nonsense=1)["nonsense"] == "unknown field"
    assert errors(repo=None)["repo"]


def test_spec_defaults_and_parsing():
    s = BuildSpec(repo="git://h/x.git", image="img", command=["make", "-j2", "it's"],
                  constraints=["arch:x86_64", "os!=el7"])
    assert s.shell_steps() == ["make -j2 'it'\"'\"'s'"]
    assert s.parsed_constraints() == (("arch", "==", "x86_64"), ("os", "!=", "el7"))
    assert s.timeout == 3600 and s.resources.cpus == 1 and s.priority.value == "normal"


def test_exit_codes_for_jenkins():
    assert exit_code_for("succeeded", 0) == 0
    assert exit_code_for("failed", 7) == 7
    assert exit_code_for("failed", None) == 1
    assert exit_code_for("timed_out", None) == 124
    assert exit_code_for("error", None) == 125
    assert exit_code_for("cancelled", None) == 130


def test_log_chunks_are_appended_once_and_in_order(tmp_path):
    logs = LogStore(tmp_path)
    assert logs.append_chunk("b", 1, b"one\n") == "appended"
    assert logs.append_chunk("b", 1, b"one\n") == "duplicate"  # a retried chunk
    assert logs.append_chunk("b", 3, b"three\n") == "gap"
    assert logs.append_chunk("b", 2, b"\xff\x00two\n") == "appended"
    logs.append_system("b", "done")
    assert logs.read("b", 0, 1000) == b"one\n\xff\x00two\n[buildfarm] done\n"
    assert logs.read("b", 4, 3) == b"\xff\x00t"
    assert not logs.is_closed("b")
    logs.close("b")
    assert logs.is_closed("b")


def test_artifact_paths_cannot_escape(tmp_path):
    assert safe_relpath("./a//b/c.txt") == "a/b/c.txt"
    for bad in ("../x", "/etc/passwd", "a/../../x", "", "."):
        with pytest.raises(ArtifactPathError):
            safe_relpath(bad)
    store = ArtifactStore(tmp_path)
    (tmp_path / "b1").mkdir()
    (tmp_path / "b1" / "link").symlink_to("/etc")
    with pytest.raises(ArtifactPathError):
        store.path("b1", "link/passwd")


def test_artifact_upload_checks_the_sha256(tmp_path):
    store = ArtifactStore(tmp_path)

    async def chunks():
        yield b"hello "
        yield b"world"

    size, sha = asyncio.run(store.put("b", "out/x.txt", chunks(), None, 1 << 20))
    assert size == 11 and (tmp_path / "b/out/x.txt").read_bytes() == b"hello world"
    with pytest.raises(ChecksumMismatch):
        asyncio.run(store.put("b", "out/y.txt", chunks(), "0" * 64, 1 << 20))
    assert not (tmp_path / "b/out/y.txt").exists()
    with pytest.raises(ArtifactPathError):
        asyncio.run(store.put("b", "big", chunks(), None, 5))


def test_old_agent_bundles_are_pruned_once_no_build_can_use_them(tmp_path):
    import os
    import time

    from buildfarm.agent_bundle import build_bundle

    stale = tmp_path / "0123456789abcdef"
    stale.mkdir()
    os.utime(stale, (time.time() - 9 * 86400,) * 2)  # untouched for longer than any build runs
    recent = tmp_path / "fedcba9876543210"  # an earlier version a running build still uses
    recent.mkdir()
    current = build_bundle(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([current.name, recent.name])
    assert (current / "buildfarm_agent.py").exists()


def test_allowed_repository_prefixes_cannot_be_left_with_dot_segments():
    from buildfarm.service import repo_allowed

    allowed = ("https://git.example/acme/",)
    assert repo_allowed("https://git.example/acme/app.git", allowed)
    for url in ("https://git.example/acme/../evil/x.git", "https://git.example/acme/%2E%2E/evil/x.git",
                "https://git.example/acme/./x.git", "https://git.example/other/x.git"):
        assert not repo_allowed(url, allowed), url
    assert repo_allowed("anything", ())


def test_a_cut_short_webhook_secret_file_is_replaced(tmp_path, monkeypatch):
    from buildfarm.triggers.webhooks import webhook_secret

    monkeypatch.delenv("BUILDFARM_WEBHOOK_SECRET", raising=False)
    (tmp_path / "webhook.secret").write_text("")  # a first start killed mid-write
    secret = webhook_secret(tmp_path)
    assert len(secret) >= 32 and (tmp_path / "webhook.secret").read_text().strip() == secret
    assert oct((tmp_path / "webhook.secret").stat().st_mode & 0o777) == "0o600"
    assert webhook_secret(tmp_path) == secret  # kept from then on


def test_the_secrets_key_is_made_once_and_an_invalid_one_is_refused_not_replaced(tmp_path, monkeypatch):
    import redis

    from buildfarm.auth import SecretStore

    unused = redis.Redis(port=1)  # the key lives in a file, not in Redis: no connection is made

    monkeypatch.delenv("BUILDFARM_SECRETS_KEY", raising=False)
    made = tmp_path / "secrets.key"
    SecretStore(unused, made).check_key()
    assert oct(made.stat().st_mode & 0o777) == "0o600"
    key = made.read_text()
    SecretStore(unused, made).check_key()
    assert made.read_text() == key  # kept, never made again

    bad = tmp_path / "bad.key"
    bad.write_text("not-a-key\n")  # e.g. edited by hand: replacing it would lose every secret
    with pytest.raises(ValueError, match=r"bad\.key is not valid \(a Fernet key: 32 bytes"):
        SecretStore(unused, bad).check_key()
    assert bad.read_text() == "not-a-key\n"
    monkeypatch.setenv("BUILDFARM_SECRETS_KEY", "short")
    with pytest.raises(ValueError, match="BUILDFARM_SECRETS_KEY is not valid: a Fernet key"):
        SecretStore(unused, made).check_key()


def test_artifact_paths_that_no_filesystem_holds_are_refused_clearly(tmp_path):
    for bad, why in [("x" * 256, "longer than 255 bytes"), ("/".join(["d"] * 600), "longer than 1024 bytes"),
                     ("a\x00b", "NUL byte")]:
        with pytest.raises(ArtifactPathError, match=why):
            safe_relpath(bad)
    store = ArtifactStore(tmp_path)

    async def chunks():
        yield b"x"

    asyncio.run(store.put("b", "out/a", chunks(), None, 10))
    with pytest.raises(ArtifactPathError, match="goes through a file this build uploaded before"):
        asyncio.run(store.put("b", "out/a/b", chunks(), None, 10))
    with pytest.raises(ArtifactPathError, match="is a directory of artifacts"):
        asyncio.run(store.put("b", "out", chunks(), None, 10))


def test_spec_text_fields_refuse_nul_bytes_surrogates_and_huge_values():
    assert "NUL byte" in errors(repo="git://h/a\x00.git")["repo"]
    assert "lone surrogate" in errors(command=["echo", "\ud800"])["command.1"]
    assert "at most 2048 characters" in errors(repo="git://h/" + "a" * 3000)["repo"]
    assert "at most 65536 characters" in errors(command=["x" * 70_000])["command.0"]
    assert "at most 256 items" in errors(command=["x"] * 300)["command"]
    assert "at most 32 items" in errors(trigger={"detail": {str(i): "v" for i in range(40)}})["trigger.detail"]


@pytest.mark.parametrize("field", ["repo", "image"])
def test_an_empty_repo_or_image_is_refused_naming_the_field(field):
    # A bounded text type once dropped the field's own min_length: an empty image reached Docker (500).
    spec = {"repo": "git://127.0.0.1/app.git", "image": "buildfarm/builder", "command": ["true"], field: ""}
    with pytest.raises(ValidationError) as e:
        BuildSpec.model_validate(spec)
    assert [err["loc"] for err in e.value.errors()] == [(field,)]
