"""The manifest's schema versions: 2 holds observations as objects; archives of version 1 verify.

``tests/data/manifest_v1`` is an archive sealed by the collector before the change (schema 1,
observations as JSON strings), its custody sidecar and its signer's public key, copied into a
test's folder by ``cli_harness.v1_archive``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import (
    PASSWORD_VAR,
    V1_ARCHIVE,
    Emulator,
    device,
    emulator_process,
    run_cli,
    v1_archive,
    write_scenario,
)

DEVICE = 120
NOTES = "observed before and after\n"
PROFILE = """\
name: one-file
description: one small file
artifacts:
  - {name: notes, kind: file, path: 'C:\\data\\notes.txt'}
"""


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    folder = tmp_path_factory.mktemp("schema")
    scenario = write_scenario(
        folder / "scenario.yaml", [device(DEVICE, [{"path": "C:\\data\\notes.txt", "text": NOTES}])]
    )
    with emulator_process(scenario, folder) as running:
        yield running


def manifest_of(unsealed: Path) -> dict:
    return json.loads((unsealed / "manifest.json").read_text(encoding="utf-8"))


def test_an_archive_sealed_with_schema_1_still_verifies_and_unseals(tmp_path: Path) -> None:
    env = v1_archive(tmp_path)

    trust = ("--trust", "signer.pub.pem")
    verified = run_cli(
        "verify", V1_ARCHIVE, "--password-env", "V1_PASS", *trust, "-v", env=env, cwd=tmp_path
    )
    opened = run_cli(
        "unseal", V1_ARCHIVE, "--out", "v1", "--password-env", "V1_PASS", *trust,
        env=env, cwd=tmp_path,
    )  # fmt: skip

    assert "schema cblr-collector.manifest v1" in verified.stdout, verified.stdout
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert opened.returncode == 0, opened.stdout + opened.stderr
    manifest = manifest_of(tmp_path / "v1")
    assert manifest["schema_version"] == 1
    hosts = next(a for a in manifest["artifacts"] if a["name"] == "Hosts file")
    assert [json.loads(text)["size"] for text in hosts["observations"]] == [924, 924]


def collect_and_unseal(emulator: Emulator, folder: Path, dialect: str = "v3") -> Path:
    """Collect the one-file profile from the device through the CLI, sealed with a passphrase,
    then unseal it; returns the unsealed folder. The collecting user's own default signing key
    signs, and a user's own key is trusted on this machine: unseal exits 0."""
    (folder / "one-file.yaml").write_text(PROFILE, encoding="utf-8")
    env = emulator.env(folder, dialect)
    collected = run_cli(
        "collect", "--device", str(DEVICE), "--profile", "one-file.yaml", "--case", "SCHEMA-2",
        "--examiner", "Schema", "--out", "out", "--password-env", PASSWORD_VAR,
        env=env, cwd=folder,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stderr
    archive = next((folder / "out").glob("*.zip"))
    opened = run_cli(
        "unseal", archive, "--out", "unsealed", "--password-env", PASSWORD_VAR,
        env=env, cwd=folder,
    )  # fmt: skip
    assert opened.returncode == 0, opened.stdout + opened.stderr
    return folder / "unsealed"


def test_a_new_manifest_holds_observations_as_objects(emulator: Emulator, tmp_path: Path) -> None:
    unsealed = collect_and_unseal(emulator, tmp_path)

    manifest = manifest_of(unsealed)
    assert manifest["schema_version"] == 2
    (notes,) = manifest["artifacts"]
    assert sorted(notes["observations"]) == ["after", "before"]
    for observed in notes["observations"].values():
        assert observed["exists"] is True
        assert observed["size"] == len(NOTES)
        assert observed["observed_utc"].endswith("Z")


@pytest.mark.parametrize("dialect", ["v3", "v6"])
def test_the_manifest_records_the_api_and_the_servers_own_command_list(
    emulator: Emulator, tmp_path: Path, dialect: str
) -> None:
    unsealed = collect_and_unseal(emulator, tmp_path, dialect)

    manifest = manifest_of(unsealed)
    device = manifest["device"]
    assert device["api"] == dialect
    custody = (unsealed / "custody.jsonl").read_text(encoding="utf-8").splitlines()
    (opened,) = [e for e in map(json.loads, custody) if e["kind"] == "collection.opened"]
    assert opened["payload"]["signer"] == {
        "name": manifest["signer"].get("name", ""),
        "fingerprint": manifest["signer"]["fingerprint"],
    }
    if dialect == "v3":
        assert device["server_commands"] == {}
        return
    assert sorted(device["server_commands"]) == sorted(device["session_ids"])
    names = [c["name"] for cs in device["server_commands"].values() for c in cs]
    assert "get file" in names and "directory list" in names
