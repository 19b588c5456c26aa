"""The custody form through the installed CLI: handoffs with every field the form needs, and
``custody --report`` as HTML and CSV.

A small archive sealed by an examiner passes to a courier and then to a lab (each with a
named key of their own); a delivery key then records a ``delivered`` event as the S3/SFTP
delivery writes it. The form must show every handoff and delivery, say for each signature
whether it holds and whether its signer is trusted, flag an edited record loudly (and exit
1), escape whatever the sidecar says, and work with no key at all.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cli_harness import V1_ARCHIVE, clean_env, run_cli, v1_archive
from trust_support import CASE, Party, Sealed, party, sealed_archive

from evidence import custody, keys

EXIT_UNTRUSTED = 4
HOSTILE = '<script>alert("custody")</script>'
HOSTILE_ATTRIBUTE = '"><img src=x onerror=alert(1)>'
FORMULA = '=HYPERLINK("http://127.0.0.1/x","click")'
CSV_COLUMNS = [
    "line", "seq", "time_utc", "kind", "status", "problems", "after_break",
    "signer_fingerprint", "signer_name", "trusted_as", "item", "released_by",
    "released_by_title", "released_by_contact", "received_by", "received_by_title",
    "received_by_contact", "purpose", "storage_location", "archive_sha256", "matches_sealed",
    "result", "failed_checks", "destination", "location", "file_name", "size", "sha256",
    "confirmation", "version_id", "lock_mode", "lock_retain_until", "legal_hold",
    "rfc3161_timestamp", "event_hash",
]  # fmt: skip
FIRST = {
    "--item": "E-0042",
    "--released-by": "Examiner One",
    "--released-by-title": "Incident responder",
    "--released-by-contact": "examiner@example.org",
    "--received-by": "Courier Two",
    "--received-by-title": "Evidence courier",
    "--received-by-contact": "+1-555-0100",
    "--purpose": "transport to the lab in bag 7781",
    "--storage-location": "tamper-evident bag 7781",
}
SECOND = {
    "--item": "E-0042",
    "--released-by": "Courier Two",
    "--received-by": HOSTILE,
    "--received-by-title": HOSTILE_ATTRIBUTE,
    "--received-by-contact": "intake@lab.example",
    "--purpose": FORMULA,
    "--storage-location": "Lab safe 2 & shelf <B>",
}
DELIVERY = {
    "destination": "s3://evidence-bucket/case-17/",
    "location": "case-17/archive.zip</td><script>alert(2)</script>",
    "file_name": "archive.zip",
    "size": 1234,
    "confirmation": "s3-full-object-sha256",
    "version_id": "3HL4kqtJlcpXroDTDmJ",
    "lock": {"mode": "COMPLIANCE", "retain_until": "2033-12-04T00:00:00Z", "legal_hold": "ON"},
}


@dataclass(frozen=True)
class Chain:
    root: Path
    examiner: Party
    courier: Party
    lab: Party
    delivery_fingerprint: str
    sealed: Sealed
    events: list[dict]

    def trust(self, *, delivery: bool = False) -> list[str | Path]:
        trusted: list[str | Path] = []
        for pub in (self.examiner.pub, self.courier.pub, self.lab.pub):
            trusted += ["--trust", pub]
        if delivery:
            trusted += ["--trust", self.delivery_fingerprint]
        return trusted


def flags(values: dict[str, str]) -> list[str]:
    return [item for pair in values.items() for item in pair]


def sidecar_events(archive: Path) -> list[dict]:
    return [json.loads(line) for line in custody.sidecar_path(archive).read_text().splitlines()]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("form")
    examiner, courier, lab = (party(root, n) for n in ("Examiner One", "Courier Two", "Lab Three"))
    sealed = sealed_archive(root, examiner)
    for who, fields in ((courier, FIRST), (lab, SECOND)):
        handed = who.run("custody", sealed.archive, *flags(fields), "--signing-key", who.key)
        assert handed.returncode == 0, handed.stdout + handed.stderr
    delivery_key = keys.load_or_create_signing_key(root / "delivery.key", "S3 uploader")
    sha = custody.sealed_archive_sha256(custody.sidecar_path(sealed.archive))
    custody.append_signed(
        custody.sidecar_path(sealed.archive), "delivered", {**DELIVERY, "sha256": sha}, delivery_key
    )
    yield Chain(
        root, examiner, courier, lab, keys.fingerprint(delivery_key.public_key()), sealed,
        sidecar_events(sealed.archive),
    )  # fmt: skip


def report(chain: Chain, archive: Path, name: str, *extra: str | Path) -> tuple[int, str, str]:
    """``custody ARCHIVE --report`` run by the lab; the exit code, the form, stdout+stderr."""
    target = chain.lab.home / name
    result = chain.lab.run("custody", archive, "--report", target, *extra)
    assert "Traceback" not in result.stderr, result.stderr
    text = target.read_text(encoding="utf-8") if target.exists() else ""
    return result.returncode, text, result.stdout + result.stderr


def statuses(html: str) -> dict[int, str]:
    return {
        int(line): status
        for line, status in re.findall(
            r'<tr class="[^"]*" id="record-(\d+)" data-status="(\w+)"', html
        )
    }


def copy_archive(chain: Chain, name: str) -> Path:
    target = chain.root / name / chain.sealed.archive.name
    target.parent.mkdir()
    shutil.copy(chain.sealed.archive, target)
    shutil.copy(custody.sidecar_path(chain.sealed.archive), custody.sidecar_path(target))
    return target


def test_handoffs_record_every_form_field_and_that_the_archive_is_the_sealed_one(
    chain: Chain,
) -> None:
    sealed, first, second, delivered = chain.events
    assert [e["kind"] for e in chain.events] == [
        "sealed",
        "handed_over",
        "handed_over",
        "delivered",
    ]
    archive_sha256 = hashlib.sha256(chain.sealed.archive.read_bytes()).hexdigest()
    assert sealed["payload"]["archive_sha256"] == archive_sha256
    assert first["payload"] == {
        "item": "E-0042",
        "released_by": "Examiner One",
        "released_by_title": "Incident responder",
        "released_by_contact": "examiner@example.org",
        "received_by": "Courier Two",
        "received_by_title": "Evidence courier",
        "received_by_contact": "+1-555-0100",
        "purpose": "transport to the lab in bag 7781",
        "storage_location": "tamper-evident bag 7781",
        "archive_sha256": archive_sha256,
        "archive_matches_sealed": True,
    }
    assert second["payload"]["received_by"] == HOSTILE
    assert "released_by_title" not in second["payload"]
    assert (first["signer"], second["signer"]) == (chain.courier.fingerprint, chain.lab.fingerprint)
    assert delivered["signer"] == chain.delivery_fingerprint


def test_verify_still_verifies_the_new_handoff_records(chain: Chain) -> None:
    archive = copy_archive(chain, "verify-handoffs")
    lines = custody.sidecar_path(archive).read_bytes().splitlines(keepends=True)
    custody.sidecar_path(archive).write_bytes(b"".join(lines[:3]))  # without the delivery
    result = chain.lab.run("verify", archive, "--identity", chain.sealed.identity, *chain.trust())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "custody #2 handed_over" in result.stdout and "custody #3 handed_over" in result.stdout


def test_a_handoff_of_an_archive_that_is_not_the_sealed_one_is_recorded_and_exits_1(
    chain: Chain,
) -> None:
    archive = copy_archive(chain, "altered")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    result = chain.courier.run(
        "custody", archive, "--released-by", "A", "--received-by", "B", "--purpose", "check",
        "--signing-key", chain.courier.key,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not the archive that was sealed" in result.stderr
    last = sidecar_events(archive)[-1]
    assert last["payload"]["archive_matches_sealed"] is False
    assert last["payload"]["archive_sha256"] == hashlib.sha256(bytes(data)).hexdigest()
    code, html, output = report(chain, archive, "altered.html", *chain.trust(delivery=True))
    assert code == 1, output
    assert "CHAIN OF CUSTODY BROKEN" in html and "DIFFERS from the sealed hash" in html


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((), "give --released-by, --received-by and --purpose (a handoff) or --report FILE"),
        (("--released-by", "A", "--purpose", "p"), "a handoff needs --received-by"),
        (("--item", "3", "--report", "f.html"), "--item belongs to a handoff"),
        (("--report", "form.pdf"), "PDF: open the HTML in a browser and print it"),
        (
            ("--released-by", "A\x1b[2J", "--received-by", "B", "--purpose", "p"),
            "control characters",
        ),
        (
            ("--released-by", "A", "--received-by", "B", "--purpose", "p" * 1001),
            "more than the 1000",
        ),
    ],
)
def test_usage_problems_exit_2_with_one_line(
    chain: Chain, arguments: tuple[str, ...], message: str
) -> None:
    before = custody.sidecar_path(chain.sealed.archive).read_bytes()
    result = chain.lab.run("custody", chain.sealed.archive, *arguments)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert custody.sidecar_path(chain.sealed.archive).read_bytes() == before


def test_the_form_shows_every_handoff_with_its_fields_escaped(chain: Chain) -> None:
    code, html, output = report(chain, chain.sealed.archive, "form.html", *chain.trust())
    assert code == EXIT_UNTRUSTED, output
    for event in chain.events[1:3]:
        assert f"{event['time']} (UTC, ISO 8601)" in html
    for value in (*FIRST.values(), *SECOND.values()):
        assert _escaped(value) in html
    assert HOSTILE not in html and HOSTILE_ATTRIBUTE not in html
    assert "&lt;script&gt;alert(&quot;custody&quot;)&lt;/script&gt;" in html
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert html.count('id="handoff-') == 2
    assert (
        "Signature of the person releasing" in html and "Signature of the person receiving" in html
    )
    assert "Further transfers by hand" in html


class Elements(HTMLParser):
    """Every element of a page, with its attributes, and the text of its style sheets."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data


FORM_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "div", "h1", "h2", "h3", "b",
    "br", "span", "section", "table", "colgroup", "col", "thead", "tbody", "tr", "th", "td",
    "p", "ul", "li", "footer",
}  # fmt: skip


def test_the_form_is_self_contained_and_only_its_own_markup(chain: Chain) -> None:
    _, html, _ = report(chain, chain.sealed.archive, "form.html", *chain.trust())
    page = Elements()
    page.feed(html)
    assert page.tags <= FORM_TAGS, page.tags - FORM_TAGS
    assert page.attributes <= {"lang", "charset", "name", "content", "class", "id", "style",
                               "scope", "data-status"}  # fmt: skip
    assert "url(" not in page.style and "@import" not in page.style
    assert "@page" in page.style and "counter(pages)" in page.style


def test_the_form_says_per_signature_whether_it_holds_and_its_signer_is_trusted(
    chain: Chain,
) -> None:
    code, html, output = report(chain, chain.sealed.archive, "form.html", *chain.trust())
    assert code == EXIT_UNTRUSTED, output
    assert "1 of 4 records are signed by keys not trusted here" in output
    assert statuses(html) == {1: "trusted", 2: "trusted", 3: "trusted", 4: "untrusted"}
    assert "signature valid, signer trusted (Courier Two)" in html
    assert "signature valid, signer not trusted" in html
    assert "Chain intact; 1 of 4 signatures valid but signer not trusted" in html
    code, html, output = report(
        chain, chain.sealed.archive, "all.html", *chain.trust(delivery=True)
    )
    assert code == 0, output
    assert set(statuses(html).values()) == {"trusted"}
    assert "Chain intact: all 4 records verify and every signer is trusted" in html
    code, html, output = report(chain, chain.sealed.archive, "none.html")
    assert code == EXIT_UNTRUSTED, output
    assert set(statuses(html).values()) == {"untrusted"}
    assert "no trusted keys were given" in html


def test_the_delivery_records_are_on_the_form(chain: Chain) -> None:
    _, html, _ = report(chain, chain.sealed.archive, "form.html", *chain.trust())
    assert html.count('id="delivery-') == 1
    for value in ("s3://evidence-bucket/case-17/", "s3-full-object-sha256", "3HL4kqtJlcpXroDTDmJ",
                  "COMPLIANCE", "2033-12-04T00:00:00Z", "archive.zip"):  # fmt: skip
        assert _escaped(value) in html
    assert _escaped(DELIVERY["location"]) in html and "<script>alert(2)" not in html
    assert chain.events[3]["payload"]["sha256"] in html


def test_a_tampered_record_breaks_the_form_loudly_and_exits_1(chain: Chain) -> None:
    archive = copy_archive(chain, "tampered")
    sidecar = custody.sidecar_path(archive)
    edited = sidecar.read_bytes().replace(
        b'"received_by":"Courier Two"', b'"received_by":"Mallory"'
    )
    assert edited != sidecar.read_bytes()
    sidecar.write_bytes(edited)
    code, html, output = report(chain, archive, "tampered.html", *chain.trust(delivery=True))
    assert code == 1, output
    assert "the chain of custody is BROKEN" in output
    assert "CHAIN OF CUSTODY BROKEN" in html and "Chain intact" not in html
    assert statuses(html) == {1: "trusted", 2: "broken", 3: "trusted", 4: "trusted"}
    assert "content does not match its hash" in html
    for line in (3, 4):
        assert f'<tr class="after-break" id="record-{line}"' in html
    assert "follows a break in the chain: cannot be relied upon" in html
    assert "This record does not verify" in html


def test_a_removed_record_and_a_cut_line_break_the_form(chain: Chain) -> None:
    archive = copy_archive(chain, "removed")
    sidecar = custody.sidecar_path(archive)
    lines = sidecar.read_bytes().splitlines(keepends=True)
    sidecar.write_bytes(lines[0] + lines[2] + lines[3][:-20])
    code, html, output = report(chain, archive, "removed.html", *chain.trust(delivery=True))
    assert code == 1, output
    assert statuses(html)[2] == "broken"
    assert "previous-hash link broken" in html
    assert "the last line is not terminated" in html


def test_a_hostile_case_id_cannot_leave_the_style_sheet(chain: Chain) -> None:
    """The case id goes into the running page header (CSS); a stranger's sealed record."""
    archive = chain.root / "hostile" / "CASE-17-hostile.zip"
    archive.parent.mkdir()
    shutil.copy(chain.sealed.archive, archive)
    stranger = keys.load_or_create_signing_key(chain.root / "stranger.key", HOSTILE)
    payload = {"case_id": '"}</style><script>alert(3)</script>', "archive_sha256": "0" * 64}
    custody.append_signed(custody.sidecar_path(archive), "sealed", payload, stranger, "f" * 64)
    code, html, output = report(chain, archive, "hostile.html", *chain.trust())
    assert code == 1, output  # the archive is not the one this record sealed
    assert "</style><script" not in html and "<script" not in html.lower()
    assert html.count("</style>") == 1
    assert "DIFFERS from the sealed hash" in html


def test_the_csv_has_one_row_per_custody_event_with_exact_columns(chain: Chain) -> None:
    code, text, output = report(chain, chain.sealed.archive, "custody.csv", *chain.trust())
    assert code == EXIT_UNTRUSTED, output
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == CSV_COLUMNS
    assert len(rows) == 1 + len(chain.events)
    records = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]
    assert [r["kind"] for r in records] == ["sealed", "handed_over", "handed_over", "delivered"]
    assert [r["status"] for r in records] == ["trusted", "trusted", "trusted", "untrusted"]
    assert [r["event_hash"] for r in records] == [e["hash"] for e in chain.events]
    first = records[1]
    for option, value in FIRST.items():
        prefix = "'" if value.startswith("+") else ""  # not a formula either
        assert first[option[2:].replace("-", "_")] == prefix + value
    assert first["time_utc"] == chain.events[1]["time"]
    assert first["matches_sealed"] == "yes" and first["signer_name"] == "Courier Two"
    assert records[2]["received_by"] == HOSTILE
    assert records[2]["purpose"] == "'" + FORMULA  # a spreadsheet shows it, never runs it
    delivery = records[3]
    assert (delivery["lock_mode"], delivery["lock_retain_until"], delivery["legal_hold"]) == (
        "COMPLIANCE", "2033-12-04T00:00:00Z", "ON",
    )  # fmt: skip
    assert delivery["file_name"] == "archive.zip" and delivery["matches_sealed"] == "yes"


def test_with_the_key_the_form_adds_the_manifest_and_without_it_says_how(chain: Chain) -> None:
    _, html, _ = report(chain, chain.sealed.archive, "form.html", *chain.trust())
    assert "render with the archive's key" in html and "Examiner</th>" not in html
    code, html, output = report(
        chain, chain.sealed.archive, "keyed.html", *chain.trust(), "--identity",
        chain.sealed.identity,
    )  # fmt: skip
    assert code == EXIT_UNTRUSTED, output
    assert '<th scope="row">Examiner</th><td>Examiner</td>' in html
    assert f'<th scope="row">Case</th><td>{CASE}</td>' in html
    assert "1 planned, 1 collected, 0 failed" in html
    assert "trusted: Examiner One" in html


def test_a_wrong_key_writes_no_form_and_exits_5(chain: Chain) -> None:
    other = keys.generate_keys(chain.root / "other-lab" / "lab")
    code, html, output = report(
        chain, chain.sealed.archive, "wrong.html", "--identity", other.recipient_private
    )
    assert code == 5, output
    assert html == ""


def test_the_sidecar_alone_makes_the_form(chain: Chain) -> None:
    """A lab that received only the sidecar (the archive went to the bucket) prints the form."""
    archive = chain.root / "sidecar-only" / chain.sealed.archive.name
    archive.parent.mkdir()
    shutil.copy(custody.sidecar_path(chain.sealed.archive), custody.sidecar_path(archive))
    code, html, output = report(chain, archive, "sidecar-only.html", *chain.trust(delivery=True))
    assert code == 0, output
    assert "the archive file is not present here: not re-hashed" in html
    assert chain.events[0]["payload"]["archive_sha256"] in html
    assert html.count('id="handoff-') == 2 and html.count('id="delivery-') == 1


def test_no_sidecar_writes_no_form_and_exits_1(chain: Chain) -> None:
    archive = chain.root / "lonely" / chain.sealed.archive.name
    archive.parent.mkdir()
    shutil.copy(chain.sealed.archive, archive)
    code, html, output = report(chain, archive, "lonely.html")
    assert code == 1 and html == ""
    assert "no custody sidecar" in output


def test_an_old_handoff_without_the_new_fields_still_renders(tmp_path: Path) -> None:
    """The schema-1 fixture, and a handoff as recorded before the form's fields existed."""
    env = v1_archive(tmp_path)
    archive = tmp_path / V1_ARCHIVE
    old = keys.load_or_create_signing_key(tmp_path / "old.key", "Old Courier")
    payload = {
        "released_by": "Old A",
        "received_by": "Old B",
        "purpose": "before the form",
        "archive_sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
    }
    custody.append_signed(custody.sidecar_path(archive), "handed_over", payload, old)
    target = tmp_path / "old.html"
    result = run_cli(
        "custody", archive, "--report", target, "--trust", tmp_path / "signer.pub.pem",
        "--signing-key", tmp_path / "old.key", "--password-env", "V1_PASS", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    html = target.read_text(encoding="utf-8")
    assert statuses(html) == {1: "trusted", 2: "trusted"}
    assert "Old A" in html and "before the form" in html and "(not recorded)" in html
    assert "the record predates the recorded comparison" in html
    assert "Case <b>FIXTURE-V1</b>" in html  # the sealed record predates case_id: the manifest's


# ---- in a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
)  # fmt: skip


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed (filtered) scanlines of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, width, height, idat = 8, 0, 0, b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    return width, height, zlib.decompress(idat)


@needs_chromium
def test_the_form_renders_in_a_real_browser(chain: Chain) -> None:
    report(chain, chain.sealed.archive, "shot.html", *chain.trust())
    form = chain.lab.home / "shot.html"
    shot = chain.lab.home / "shot.png"
    pdf = chain.lab.home / "shot.pdf"
    with tempfile.TemporaryDirectory() as profile:
        for output in (f"--screenshot={shot}", f"--print-to-pdf={pdf}"):
            subprocess.run(
                [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", output,
                 "--window-size=900,1400", "--no-pdf-header-footer", form.as_uri()],
                env=clean_env(chain.lab.home), capture_output=True, timeout=120, check=True,
            )  # fmt: skip
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (900, 1400)
    assert len(set(pixels)) > 32, "the screenshot is blank"
    document = pdf.read_bytes()
    assert document.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page[^s]", document)) >= 2


def _escaped(value: str) -> str:
    import html

    return html.escape(value, quote=True)
