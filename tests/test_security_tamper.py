"""Tampering: a byte flipped anywhere in any member of a sealed collection (artifacts,
manifest, signature, custody log, CASE document, every sums file) is detected and named, even
when the attacker re-encrypts with the password and records a fresh sidecar hash."""

from __future__ import annotations

import zipfile
from pathlib import Path

from test_evidence import Lab, failed_names, lab, reseal_with, sealed

from evidence import archive as archive_format
from evidence import envelope
from evidence.verify import verify_archive

__all__ = ["lab", "sealed"]
POSITIONS = (0, None, -1)


def member_names(source: Path, lab: Lab, scratch: Path) -> list[str]:
    password = envelope.open_envelope(archive_format.read_envelope(source), identity=lab.identity)
    archive_format.decrypt_payload(source, password, scratch / "inner.zip")
    with zipfile.ZipFile(scratch / "inner.zip") as inner:
        return [info.filename for info in inner.infolist() if not info.is_dir()]


def test_a_flip_in_any_member_at_any_place_is_detected_and_named(
    sealed: Path, lab: Lab, tmp_path: Path
) -> None:
    names = member_names(sealed, lab, tmp_path)
    assert {"manifest.json", "manifest.sig", "custody.jsonl", "case.jsonld"} <= set(names)
    assert {"SHA256SUMS", "SHA1SUMS", "MD5SUMS"} <= set(names)
    undetected = []
    cases = 0
    for name in names:
        for position in POSITIONS:
            cases += 1
            target = tmp_path / f"case-{cases}"
            target.mkdir()
            report = verify_archive(reseal_with(sealed, lab, target, name, position), lab.identity)
            failed = failed_names(report)
            # A manifest that still parses is caught by its signature, which covers it.
            named = any(name in check for check in failed) or (
                name == "manifest.json" and "manifest.sig" in failed
            )
            if report.exit_code != 1 or not named or "archive hash" in failed:
                undetected.append((name, position, sorted(failed)))
    assert undetected == []
    assert cases == 3 * len(names)
