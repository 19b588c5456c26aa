"""The custody form rendered: a self-contained, printable HTML page, and CSV for spreadsheets.

HTML: one file, inline CSS, no script, no external resource (it opens the same offline, in a
browser, and printed on A4 or Letter: ``@page`` margins, running header and page numbers,
tables whose rows never split across pages and whose headers repeat). Every value from the
sidecar or the manifest goes through ``html.escape`` (``_e``); the one value placed in the
style sheet (the case id, in the running header) is escaped for CSS character by character.

CSV: one row per sidecar event, the columns of ``CSV_COLUMNS`` in that order; a cell that a
spreadsheet would take for a formula (``= + - @``, tab, carriage return) is prefixed with
``'`` (OWASP's advice for CSV injection).
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Iterable

from evidence.custodyform import BROKEN, CustodyForm, EventView, shown

CSV_COLUMNS = (
    "line",
    "seq",
    "time_utc",
    "kind",
    "status",
    "problems",
    "after_break",
    "signer_fingerprint",
    "signer_name",
    "trusted_as",
    "item",
    "released_by",
    "released_by_title",
    "released_by_contact",
    "received_by",
    "received_by_title",
    "received_by_contact",
    "purpose",
    "storage_location",
    "archive_sha256",
    "matches_sealed",
    "result",
    "failed_checks",
    "destination",
    "location",
    "file_name",
    "size",
    "sha256",
    "confirmation",
    "version_id",
    "lock_mode",
    "lock_retain_until",
    "legal_hold",
    "rfc3161_timestamp",
    "event_hash",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
FILE_NAME_KEYS = ("file_name", "file", "name", "archive_name")
"""Where a ``delivered`` record may name the file it delivered (the first one present)."""
DELIVERY_FIELDS = (
    ("destination", "Destination"),
    ("location", "Object key / remote path"),
    ("size", "Size (bytes)"),
    ("sha256", "SHA-256 confirmed"),
    ("confirmation", "Confirmed by"),
    ("version_id", "Version id"),
)
LOCK_FIELDS = (
    ("mode", "Lock mode"),
    ("retain_until", "Retain until"),
    ("legal_hold", "Legal hold"),
)
HANDOFF_TEXT_KEYS = (
    "released_by",
    "released_by_title",
    "released_by_contact",
    "received_by",
    "received_by_title",
    "received_by_contact",
    "purpose",
    "storage_location",
    "item",
)
EVENT_TITLES = {
    "sealed": "Sealed",
    "handed_over": "Handed over",
    "verified": "Verified",
    "delivered": "Delivered",
}
BLANK_TRANSFER_ROWS = 4


class Html(str):
    """Markup made here from escaped parts; ``_e`` passes it through unchanged."""


def _e(value: object) -> str:
    """HTML-escaped (quotes too: values also go into attributes)."""
    if isinstance(value, Html):
        return value
    return html.escape(str(value), quote=True)


def _hash_check(value: str, check: str, bad: bool = False) -> Html:
    """A hash with its comparison on a line of its own (a hash breaks anywhere; words not)."""
    css = "flag" if bad else "s-trusted"
    note = f'<br><span class="{css}">{_e(check)}</span>' if check else ""
    return Html(f'<span class="hash">{_e(value)}</span>{note}')


def _short(fingerprint: str) -> str:
    """A fingerprint cut for a table cell; section 7 lists them whole."""
    return fingerprint[:23] + "…" if len(fingerprint) > 24 else fingerprint


def _css_string(text: str) -> str:
    """``text`` as a CSS string literal: every character but letters, digits and the space
    as a CSS escape (six hex digits and the space that ends it), so nothing in it can end
    the string or the style sheet."""
    parts = [
        char if char.isascii() and (char.isalnum() or char == " ") else f"\\{ord(char):06x} "
        for char in text
    ]
    return '"' + "".join(parts) + '"'


def _lock(event: EventView) -> dict[str, object]:
    lock = event.payload.get("lock")
    return lock if isinstance(lock, dict) else {}


def _listed(event: EventView, key: str) -> str:
    """A list value as ``a; b`` (empty for an empty list); anything else as shown."""
    value = event.payload.get(key)
    if isinstance(value, list):
        return shown("; ".join(shown(item, 200) for item in value))
    return event.value(key)


def _file_name(event: EventView) -> str:
    return next((event.value(key) for key in FILE_NAME_KEYS if event.value(key)), "")


# ---- CSV


def _cell(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _csv_row(form: CustodyForm, event: EventView) -> list[str]:
    lock = _lock(event)
    values = {
        "line": str(event.line),
        "seq": event.seq,
        "time_utc": event.time,
        "kind": event.kind,
        "status": event.status,
        "problems": "; ".join(event.problems),
        "after_break": "yes" if event.after_break else "",
        "signer_fingerprint": event.signer,
        "signer_name": event.signer_name,
        "trusted_as": shown(event.trusted_as),
        "archive_sha256": event.value("archive_sha256"),
        "matches_sealed": form.matches_sealed(event),
        "result": event.value("result"),
        "failed_checks": _listed(event, "failed_checks"),
        "file_name": _file_name(event) if event.kind == "delivered" else "",
        "lock_mode": shown(lock.get("mode")),
        "lock_retain_until": shown(lock.get("retain_until")),
        "legal_hold": shown(lock.get("legal_hold")),
        "rfc3161_timestamp": "present" if event.timestamped else "",
        "event_hash": event.hash,
    }
    for key in (*HANDOFF_TEXT_KEYS, *(name for name, _ in DELIVERY_FIELDS)):
        values.setdefault(key, event.value(key))
    return [_cell(values[column]) for column in CSV_COLUMNS]


def render_csv(form: CustodyForm) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for event in form.events:
        writer.writerow(_csv_row(form, event))
    return out.getvalue()


# ---- HTML

STYLE = """
:root { --ink: #111; --muted: #555; --rule: #999; --light: #ddd; --ok: #0a5d1e; --warn: #7a4a00;
  --bad: #a00000; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, Helvetica, sans-serif;
  font-size: 9.5pt; line-height: 1.35; color: var(--ink); margin: 0 auto; max-width: 200mm;
  padding: 8mm 6mm; background: #fff; }
h1 { font-size: 17pt; margin: 0; letter-spacing: 0.02em; }
h2 { font-size: 11.5pt; margin: 14pt 0 5pt; padding-bottom: 2pt;
  border-bottom: 1.5pt solid var(--ink); break-after: avoid; page-break-after: avoid; }
h3 { font-size: 10pt; margin: 0 0 4pt; }
.mono, .hash { font-family: "DejaVu Sans Mono", "Liberation Mono", Consolas, monospace;
  font-size: 8pt; }
.hash { overflow-wrap: anywhere; word-break: break-all; }
.muted { color: var(--muted); }
.small { font-size: 8pt; }
header.form-head { display: flex; justify-content: space-between; align-items: flex-end;
  border-bottom: 3pt double var(--ink); padding-bottom: 4pt; margin-bottom: 6pt; }
header .tool { text-align: right; font-size: 8pt; color: var(--muted); }
table { width: 100%; border-collapse: collapse; margin: 0 0 6pt; table-layout: fixed; }
th, td { border: 0.75pt solid var(--rule); padding: 3pt 4pt; vertical-align: top; text-align: left;
  overflow-wrap: anywhere; }
th { background: #eee; font-weight: bold; }
thead { display: table-header-group; }
tr, .block, .verdict, .sign-row { break-inside: avoid; page-break-inside: avoid; }
table.kv th { width: 34%; background: #f3f3f3; font-weight: normal; color: #222; }
.verdict { border: 2pt solid; padding: 6pt 8pt; margin: 6pt 0 4pt; }
.verdict .big { font-size: 12.5pt; font-weight: bold; }
.verdict ul { margin: 3pt 0 0 14pt; padding: 0; }
.v-ok { border-color: var(--ok); background: #eaf6ec; color: var(--ok); }
.v-warn { border-color: var(--warn); background: #fff4dd; color: var(--warn); }
.v-bad { border-color: var(--bad); background: #fde8e8; color: var(--bad); border-width: 3pt; }
.s-trusted { color: var(--ok); font-weight: bold; }
.s-untrusted { color: var(--warn); font-weight: bold; }
.s-broken { color: var(--bad); font-weight: bold; }
tr.broken td { background: #fde8e8; }
tr.after-break td { background: #fff0f0; }
.block { border: 1pt solid var(--ink); margin: 0 0 8pt; padding: 5pt 6pt; }
.block.broken { border: 3pt solid var(--bad); }
.block-head { display: flex; justify-content: space-between; gap: 8pt;
  border-bottom: 0.75pt solid var(--rule); margin-bottom: 4pt; padding-bottom: 2pt; }
.block-head h3 { white-space: nowrap; }
.block-head div { text-align: right; }
.alarm { background: var(--bad); color: #fff; font-weight: bold; padding: 3pt 5pt;
  margin-bottom: 4pt; }
td.time { font-family: "DejaVu Sans Mono", "Liberation Mono", Consolas, monospace;
  font-size: 7.5pt; white-space: nowrap; }
.parties { display: grid; grid-template-columns: 1fr 1fr; gap: 6pt; margin-bottom: 4pt; }
.party { border: 0.75pt solid var(--rule); padding: 3pt 5pt; }
.party .role { font-size: 7.5pt; text-transform: uppercase; letter-spacing: 0.06em;
  color: var(--muted); }
.party .name { font-size: 10.5pt; font-weight: bold; }
.sign-row { display: grid; grid-template-columns: 1fr 1fr; gap: 10pt; margin-top: 8pt; }
.sign { border-top: 0.75pt solid var(--ink); padding-top: 2pt; font-size: 7.5pt;
  color: var(--muted); margin-top: 22pt; }
.flag { color: var(--bad); font-weight: bold; }
table.blank td { height: 34pt; }
footer { margin-top: 10pt; border-top: 0.75pt solid var(--rule); padding-top: 4pt; font-size: 8pt;
  color: var(--muted); }
@media screen { body { box-shadow: 0 0 6px #bbb; margin: 10px auto; } }
@media print { body { max-width: none; padding: 0; box-shadow: none; } }
"""


def _page_rules(form: CustodyForm) -> str:
    """Margins, a running head (the case) and foot (the sealed hash, the page number)."""
    case = form.case_id or "(no case id)"
    head = _css_string(f"Chain of custody, case {case}"[:120])
    sha = form.sealed_sha256[:16]
    foot = _css_string(f"Archive SHA-256 {sha}…" if sha else form.archive_name[:80])
    box = "font-family: 'DejaVu Sans', Arial, sans-serif; font-size: 7.5pt; color: #555;"
    return (
        "@page { margin: 16mm 13mm 16mm 13mm;"
        f" @top-left {{ content: {head}; {box} }}"
        f' @top-right {{ content: "cblr-collector custody form"; {box} }}'
        f" @bottom-left {{ content: {foot}; {box} }}"
        f' @bottom-right {{ content: "Page " counter(page) " of " counter(pages); {box} }} }}'
    )


def _kv(rows: Iterable[tuple[str, str]], hashes: Iterable[str] = ()) -> str:
    hash_labels = set(hashes)
    body = "".join(
        f'<tr><th scope="row">{_e(label)}</th>'
        f"<td{' class=hash' if label in hash_labels else ''}>{_e(value)}</td></tr>"
        for label, value in rows
    )
    return f'<table class="kv">{body}</table>'


def _status(event: EventView) -> str:
    symbol = {"trusted": "✔", "untrusted": "⚠", "broken": "✖"}[event.status]
    text = f'<span class="s-{event.status}">{symbol} {_e(event.signature_status)}</span>'
    if event.after_break:
        text += '<br><span class="flag">follows a break in the chain: cannot be relied upon</span>'
    return text


def _verdict(form: CustodyForm) -> str:
    events = len(form.events)
    reasons = list(form.chain_problems)
    reasons += [
        f"record {e.line} ({e.kind or '?'}, #{e.seq}): {'; '.join(e.problems)}"
        for e in form.events
        if e.status == BROKEN
    ]
    if form.archive_differs:
        reasons.append(
            f"the archive file here hashes to {form.archive_sha256_now}, not the sealed "
            f"{form.sealed_sha256 or '(no sealed hash)'}: it is not the archive that was sealed"
        )
    if form.manifest is not None:
        reasons += [f"manifest: {problem}" for problem in form.manifest.problems]
    if form.broken:
        items = "".join(f"<li>{_e(reason)}</li>" for reason in reasons)
        return (
            '<div class="verdict v-bad"><div class="big">✖ CHAIN OF CUSTODY BROKEN: this record '
            f"cannot be relied upon</div><ul>{items}</ul></div>"
        )
    untrusted = form.untrusted
    if untrusted:
        which = ", ".join(f"#{e.seq} {e.kind}" for e in untrusted)
        subject = (
            f"record {which} is signed by a key"
            if len(untrusted) == 1
            else f"records {which} are signed by keys"
        )
        why = " not trusted here" if form.trust_given else " (no trusted keys were given)"
        return (
            '<div class="verdict v-warn"><div class="big">⚠ Chain intact; '
            f"{len(untrusted)} of {events} signatures valid but signer not trusted</div>"
            f"<ul><li>{_e(subject + why)}: give --trust KEY.pub|FINGERPRINT for keys you "
            "know belong to the signer (section 7 lists them)</li></ul></div>"
        )
    return (
        '<div class="verdict v-ok"><div class="big">✔ Chain intact: all '
        f"{events} records verify and every signer is trusted</div></div>"
    )


def _case_section(form: CustodyForm) -> str:
    sealed = form.sealed
    rows: list[tuple[str, str]] = [("Case", form.case_id or "(not recorded)")]
    if form.manifest is not None:
        rows = list(form.manifest.fields)
        if form.manifest.signer:
            trusted = form.manifest.signer_trusted_as
            rows.append(
                (
                    "Manifest signed by",
                    f"{form.manifest.signer} ("
                    + (f"trusted: {trusted}" if trusted else "signer not trusted")
                    + ")",
                )
            )
    elif sealed is not None:
        rows.append(("Sealed by", sealed.signer_name or sealed.signer))
    note = (
        ""
        if form.manifest is not None
        else '<p class="small muted">Examiner, authority and device are in the encrypted '
        "manifest: render with the archive's key (--identity or --password-env) to include "
        "them.</p>"
    )
    return f"<section><h2>1. Case and authority</h2>{_kv(rows)}{note}</section>"


def _evidence_section(form: CustodyForm) -> str:
    sealed = form.sealed
    items = ", ".join(form.items()) or "(none recorded: assign one with custody --item)"
    if not form.archive_present:
        now: str = "the archive file is not present here: not re-hashed"
    elif form.archive_differs:
        now = _hash_check(form.archive_sha256_now, "✖ DIFFERS from the sealed hash", bad=True)
    else:
        now = _hash_check(form.archive_sha256_now, "✔ equals the sealed hash")
    rows: list[tuple[str, str]] = [
        ("Evidence item number", items),
        ("Description", "Sealed, encrypted evidence archive (cblr-collector)"),
        ("File name", form.archive_name),
        ("Sealed as", sealed.value("archive_name") if sealed else ""),
        ("Size (bytes)", sealed.value("archive_size") if sealed else ""),
        ("SHA-256 as sealed", form.sealed_sha256 or "(no sealed record)"),
        (f"SHA-256 re-hashed {form.generated}", now),
        ("Manifest SHA-256", sealed.value("manifest_sha256") if sealed else ""),
        ("Key envelope", sealed.value("key_envelope") if sealed else ""),
        ("Sealed (UTC)", sealed.time if sealed else ""),
    ]
    if form.manifest is not None:
        rows += list(form.manifest.evidence)
    hashes = ("SHA-256 as sealed", "Manifest SHA-256", "Profile SHA-256")
    shown_rows = [(label, value) for label, value in rows if value]
    return f"<section><h2>2. Evidence item</h2>{_kv(shown_rows, hashes)}</section>"


def _summary(event: EventView) -> str:
    if event.kind == "sealed":
        return f"archive {event.value('archive_name')}, {event.value('archive_size')} bytes"
    if event.kind == "handed_over":
        released, received = event.value("released_by"), event.value("received_by")
        return f"{released} → {received}: {event.value('purpose')}"
    if event.kind == "verified":
        failed = _listed(event, "failed_checks")
        listed = f", failed: {failed}" if failed else ""
        return f"result {event.value('result')}{listed}"
    if event.kind == "delivered":
        return f"{event.value('destination')} {event.value('location')}"
    return shown(event.payload, 300)


def _event_row(form: CustodyForm, event: EventView) -> str:
    css = "broken" if event.status == BROKEN else "after-break" if event.after_break else ""
    flag = (
        '<br><span class="flag">archive hash ≠ sealed</span>'
        if form.matches_sealed(event) == "no"
        else ""
    )
    stamp = (
        '<br><span class="small muted">RFC 3161 timestamp (not checked here: '
        "verify --tsa-chain)</span>"
        if event.timestamped
        else ""
    )
    name = f"{_e(event.signer_name)}<br>" if event.signer_name else ""
    signer = f'{name}<span class="hash">{_e(_short(event.signer) or "(no signer)")}</span>'
    return (
        f'<tr class="{css}" id="record-{event.line}" data-status="{event.status}">'
        f'<td>{_e(event.seq)}</td><td class="time">{_e(event.time)}</td>'
        f"<td>{_e(EVENT_TITLES.get(event.kind, event.kind))}</td>"
        f"<td>{_e(_summary(event))}{flag}</td>"
        f"<td>{signer}</td><td>{_status(event)}{stamp}</td></tr>"
    )


def _events_section(form: CustodyForm) -> str:
    rows = "".join(_event_row(form, event) for event in form.events)
    head = (
        '<p class="small">Head of the record (hash of the last event): '
        f'<span class="hash">{_e(form.head)}</span>. Compare it with the receipts the parties '
        "kept: a record cut short after a receipt no longer reaches its head. Full signer "
        "fingerprints: section 7.</p>"
    )
    return (
        "<section><h2>3. Custody record</h2>"
        '<table><colgroup><col style="width:4%"><col style="width:20%"><col style="width:11%">'
        '<col style="width:27%"><col style="width:18%"><col style="width:20%"></colgroup>'
        "<thead><tr><th>#</th><th>Time (UTC)</th><th>Event</th><th>Details</th>"
        "<th>Signed by</th><th>Digital signature</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{head}</section>"
    )


def _party(role: str, event: EventView, prefix: str) -> str:
    name = event.value(prefix) or "(not recorded)"
    details = "".join(
        f"<div>{_e(label)}: {_e(value)}</div>"
        for label, value in (
            ("Title", event.value(f"{prefix}_title")),
            ("Contact", event.value(f"{prefix}_contact")),
        )
        if value
    )
    return (
        f'<div class="party"><div class="role">{_e(role)}</div>'
        f'<div class="name">{_e(name)}</div>{details}</div>'
    )


def _alarm(event: EventView) -> str:
    if event.status == BROKEN:
        return (
            '<div class="alarm">✖ This record does not verify: what it shows may have been '
            "altered after it was signed. Do not rely on it.</div>"
        )
    if event.after_break:
        return (
            '<div class="alarm">✖ An earlier record of the chain is broken: this one cannot be '
            "relied upon either.</div>"
        )
    return ""


def _block_head(title: str, event: EventView) -> str:
    return (
        f'<div class="block-head"><h3>{_e(title)}</h3><div>{_status(event)}</div></div>'
        f"{_alarm(event)}"
    )


def _handoff_block(form: CustodyForm, number: int, event: EventView) -> str:
    match = form.matches_sealed(event)
    check = {"yes": "✔ equals the sealed hash", "no": "✖ DIFFERS from the sealed hash"}
    note = check.get(match, "")
    if match and "archive_matches_sealed" not in event.payload:
        note += " (compared by this form; the record predates the recorded comparison)"
    rows: list[tuple[str, str]] = [
        ("Date and time", f"{event.time} (UTC, ISO 8601)"),
        ("Purpose", event.value("purpose")),
        ("Storage location", event.value("storage_location") or "(not recorded)"),
        ("Evidence item", event.value("item") or "(not recorded)"),
        (
            "Archive SHA-256 at handoff",
            _hash_check(event.value("archive_sha256"), note, bad=match == "no"),
        ),
        ("Recorded by (signing key)", f"{event.signer_name} {event.signer}".strip()),
    ]
    css = " broken" if event.status == BROKEN or event.after_break or match == "no" else ""
    return (
        f'<div class="block{css}" id="handoff-{number}" data-status="{event.status}">'
        f"{_block_head(f'Handoff {number}, record #{event.seq}', event)}"
        f'<div class="parties">{_party("Released by", event, "released_by")}'
        f"{_party('Received by', event, 'received_by')}</div>{_kv(rows)}"
        '<div class="sign-row"><div class="sign">Signature of the person releasing · date</div>'
        '<div class="sign">Signature of the person receiving · date</div></div></div>'
    )


def _handoffs_section(form: CustodyForm) -> str:
    handoffs = form.of_kind("handed_over")
    body = "".join(_handoff_block(form, n, e) for n, e in enumerate(handoffs, start=1)) or (
        '<p class="muted">No handoff recorded yet (cblr-collect custody ARCHIVE '
        "--released-by NAME --received-by NAME --purpose TEXT).</p>"
    )
    return f"<section><h2>4. Handoffs</h2>{body}</section>"


def _delivery_block(form: CustodyForm, number: int, event: EventView) -> str:
    lock = _lock(event)
    rows = [("Time", f"{event.time} (UTC, ISO 8601)"), ("File", _file_name(event))]
    rows += [(label, event.value(key)) for key, label in DELIVERY_FIELDS]
    rows += [(label, shown(lock.get(key))) for key, label in LOCK_FIELDS]
    known = {"lock", *FILE_NAME_KEYS, *(key for key, _ in DELIVERY_FIELDS)}
    rows += [
        (shown(key, 80), shown(value)) for key, value in event.payload.items() if key not in known
    ]
    match = form.matches_sealed(event)
    if match:
        rows.append(("Equals the sealed archive hash", "yes" if match == "yes" else "no"))
    css = " broken" if event.status == BROKEN or event.after_break else ""
    title = f"Delivery {number}, record #{event.seq}"
    return (
        f'<div class="block{css}" id="delivery-{number}" data-status="{event.status}">'
        f"{_block_head(title, event)}"
        f"{_kv([(label, value) for label, value in rows if value], ('SHA-256 confirmed',))}</div>"
    )


def _deliveries_section(form: CustodyForm) -> str:
    deliveries = form.of_kind("delivered")
    body = "".join(_delivery_block(form, n, e) for n, e in enumerate(deliveries, start=1)) or (
        '<p class="muted">No delivery recorded.</p>'
    )
    return f"<section><h2>5. Delivery records</h2>{body}</section>"


def _blank_section() -> str:
    rows = "".join(
        "<tr><td></td><td></td><td></td><td></td><td></td></tr>" for _ in range(BLANK_TRANSFER_ROWS)
    )
    return (
        "<section><h2>6. Further transfers by hand</h2>"
        '<p class="small muted">For changes of hands after this form was printed. Record each '
        "one with cblr-collect custody as well, so the signed record stays complete.</p>"
        '<table class="blank"><colgroup><col style="width:17%"><col style="width:24%">'
        '<col style="width:24%"><col style="width:20%"><col style="width:15%"></colgroup>'
        "<thead><tr><th>Date, time, time zone</th><th>Released by (name, title, signature)</th>"
        "<th>Received by (name, title, signature)</th><th>Purpose</th><th>Storage location</th>"
        f"</tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _signers_section(form: CustodyForm) -> str:
    rows = "".join(
        f"<tr><td>{_e(', '.join(view.claimed_names) or '(unnamed)')}</td>"
        f'<td class="hash">{_e(view.fingerprint)}</td>'
        + (
            f'<td class="s-trusted">trusted as {_e(view.trusted_as)}</td>'
            if view.trusted_as
            else '<td class="s-untrusted">not trusted</td>'
        )
        + f"<td>{_e(', '.join(view.events))}</td></tr>"
        for view in form.signers()
    )
    trust = (
        "Trust is what the reader brings: a key counts as trusted only when given with --trust, "
        "kept in the trust folder, or the reader's own key. The name a key claims is a label."
    )
    return (
        "<section><h2>7. Signing keys</h2>"
        '<table><colgroup><col style="width:22%"><col style="width:40%"><col style="width:18%">'
        '<col style="width:20%"></colgroup><thead><tr><th>Name claimed</th>'
        "<th>Fingerprint</th><th>Trust</th><th>Records</th></tr></thead>"
        f'<tbody>{rows}</tbody></table><p class="small muted">{_e(trust)}</p></section>'
    )


def _footer(form: CustodyForm) -> str:
    return (
        f"<footer>Rendered {_e(form.generated)} (UTC) from {_e(form.sidecar_name)} "
        f'(SHA-256 <span class="hash">{_e(form.sidecar_sha256)}</span>, {len(form.events)} '
        "records). This form is a rendering, not the record: the record is the signed sidecar. "
        f"Check it with: cblr-collect verify {_e(form.archive_name)} --identity KEY "
        "--trust SIGNER.pub</footer>"
    )


def render_html(form: CustodyForm) -> str:
    title = f"Chain of custody — {form.case_id or form.archive_name}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{STYLE}{_page_rules(form)}</style></head><body>"
        '<header class="form-head"><div><h1>Chain of Custody</h1>'
        f"<div>Digital evidence · Case <b>{_e(form.case_id or '(not recorded)')}</b></div></div>"
        f'<div class="tool">cblr-collector custody form<br>rendered {_e(form.generated)} UTC'
        f"<br>{_e(form.archive_name)}</div></header>"
        f"{_verdict(form)}{_case_section(form)}{_evidence_section(form)}"
        f"{_events_section(form)}{_handoffs_section(form)}{_deliveries_section(form)}"
        f"{_blank_section()}{_signers_section(form)}{_footer(form)}</body></html>\n"
    )
