"""``cblr-collect seal | verify | unseal | custody | keygen``: the evidence package."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from collector.cli.exitcodes import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from collector.cli.folders import FolderError, check_creatable

KEY_HELP = "the lab's private key (PEM) the archive was sealed for"
PASSWORD_ENV_HELP = "environment variable holding the passphrase (never pass it as an argument)"
TRUST_HELP = (
    "a signing key you trust: its .pub file, a folder of them, or its fingerprint "
    "(sha256:...); repeatable. Also trusted: every .pub in ~/.config/cblr-collect/trusted/ "
    "and your own default signing key"
)
TSA_HELP = "RFC 3161 Time Stamping Authority URL: timestamp each signature made here"
RECEIPT_HELP = "where to write this record's receipt (default: ARCHIVE.receipt-SEQ.json)"


CUSTODY_DESCRIPTION = """\
Record a signed handoff in the archive's custody sidecar (--released-by, --received-by,
--purpose; the archive is re-hashed and compared with its sealed hash), or render the whole
chain of custody as a printable form (--report FILE.html, or FILE.csv for spreadsheets), or
both (the handoff first). The form needs no key: the sidecar holds every record. With
--identity or --password-env it adds the case, authority and device from the manifest.

form exit codes:
  0  intact, and every record is signed by a key you trust
  4  intact, but some record's signer is not trusted (or no --trust was given)
  1  broken: an edited, removed or reordered record, a signature that does not hold, or an
     archive that is not the one sealed (the form is still written, and says where)
  5  the key given does not open the archive (no form written)"""


class UsageProblem(Exception):
    pass


EXAMPLES = {
    "seal": """examples:
  cblr-collect seal evidence/workspaces/device-37191 --recipient lab.recipient.pub
  cblr-collect seal evidence/workspaces --password-env HOLD_PASS --tsa https://tsa.example/""",
    "verify": """examples:
  cblr-collect verify CASE-device-37191-....zip --identity lab.recipient.key \\
      --trust examiner.signing.pub
  cblr-collect verify CASE-....zip --identity lab.recipient.key --trust sha256:2c14... \\
      --expect-receipt CASE-....zip.receipt-3.json --record --signing-key lab.signing.key""",
    "unseal": """examples:
  cblr-collect unseal CASE-device-37191-....zip --out unsealed/ --identity lab.recipient.key \\
      --trust examiner.signing.pub""",
    "custody": """examples:
  cblr-collect custody CASE-....zip --released-by "J. Doe" --received-by "Lab intake" \\
      --purpose analysis --signing-key courier.signing.key
  cblr-collect custody CASE-....zip --item E-0042 \\
      --released-by "J. Doe" --released-by-title "Incident responder" \\
      --released-by-contact jdoe@example.org \\
      --received-by "A. Smith" --received-by-title "Evidence custodian" \\
      --received-by-contact +1-555-0100 \\
      --purpose "transfer to the lab for analysis" --storage-location "Lab safe 2, shelf B"
  cblr-collect custody CASE-....zip --report custody-form.html --trust examiner.signing.pub \\
      --trust courier.signing.pub --identity lab.recipient.key
  cblr-collect custody CASE-....zip --report custody.csv""",
    "keygen": """examples:
  cblr-collect keygen --out lab/lab --name "Northwind DFIR lab"
  cblr-collect keygen --out keys/examiner --name "J. Doe" --passphrase-env KEY_PASS""",
}


def register(commands: Any) -> None:
    seal = commands.add_parser(
        "seal",
        help="seal a collection into an encrypted archive",
        epilog=EXAMPLES["seal"],
    )
    seal.add_argument(
        "workspace",
        help="a collection workspace (journal.sqlite) or evidence folder (manifest.json), "
        "or a folder of them",
    )
    seal.add_argument("--out", help="folder for the archives (default: beside the collection)")
    target = seal.add_mutually_exclusive_group()
    target.add_argument("--recipient", metavar="CERT_OR_PUBKEY.pem", help="the lab's public key")
    target.add_argument("--password-env", metavar="VAR", help=PASSWORD_ENV_HELP)
    seal.add_argument("--signing-key", metavar="KEY.pem", help="the key that signed the manifest")
    seal.add_argument("--tsa", metavar="URL", help=TSA_HELP)
    seal.set_defaults(handler=run_seal)

    verify = commands.add_parser(
        "verify",
        help="verify a sealed archive or unsealed folder",
        epilog=EXAMPLES["verify"],
    )
    verify.add_argument("archive", help="a sealed archive (.zip) or an unsealed collection folder")
    _add_identity(verify)
    verify.add_argument("--json", action="store_true", help="the report as JSON")
    verify.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="every check (default: the verdict, who signed, and what failed or warns)",
    )
    verify.add_argument(
        "--record",
        action="store_true",
        help="append the result, signed, to the archive's custody sidecar",
    )
    verify.add_argument(
        "--signing-key", metavar="KEY.pem", help="the verifier's key for --record (made if missing)"
    )
    verify.add_argument("--tsa", metavar="URL", help=TSA_HELP + " (with --record)")
    verify.add_argument("--receipt", metavar="FILE", help=RECEIPT_HELP + " (with --record)")
    verify.set_defaults(handler=run_verify)

    unseal = commands.add_parser(
        "unseal", help="restore a sealed archive into a folder", epilog=EXAMPLES["unseal"]
    )
    unseal.add_argument("archive", help="the sealed archive (.zip)")
    unseal.add_argument("--out", required=True, metavar="DIR", help="an absent or empty folder")
    _add_identity(unseal)
    unseal.add_argument("--json", action="store_true", help="the report as JSON")
    unseal.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="every check (default: the verdict, who signed, and what failed or warns)",
    )
    unseal.set_defaults(handler=run_unseal)

    handoff = commands.add_parser(
        "custody",
        help="record a signed custody handoff, or render the chain of custody as a form",
        description=CUSTODY_DESCRIPTION,
        epilog=EXAMPLES["custody"],
    )
    handoff.add_argument("archive", help="the sealed archive whose custody passes on")
    who = handoff.add_argument_group("the handoff (all three required to record one)")
    who.add_argument("--released-by", metavar="NAME", help="who hands it over")
    who.add_argument("--received-by", metavar="NAME", help="who receives it")
    who.add_argument("--purpose", metavar="TEXT", help="why it changes hands")
    more = handoff.add_argument_group("more about the handoff, for the custody form (optional)")
    more.add_argument("--released-by-title", metavar="TITLE", default="", help="their role")
    more.add_argument("--released-by-contact", metavar="TEXT", default="", help="e-mail or phone")
    more.add_argument("--received-by-title", metavar="TITLE", default="", help="their role")
    more.add_argument("--received-by-contact", metavar="TEXT", default="", help="e-mail or phone")
    more.add_argument(
        "--storage-location",
        metavar="TEXT",
        default="",
        help="where the evidence is kept from now on (locker, safe, server)",
    )
    more.add_argument(
        "--item",
        metavar="N",
        default="",
        help="the evidence item number on the case's evidence log (3, E-0042)",
    )
    handoff.add_argument("--signing-key", metavar="KEY.pem", help="created if it does not exist")
    handoff.add_argument("--tsa", metavar="URL", help=TSA_HELP)
    handoff.add_argument("--receipt", metavar="FILE", help=RECEIPT_HELP)
    form = handoff.add_argument_group("the custody form")
    form.add_argument(
        "--report",
        metavar="FILE.html|FILE.csv",
        help="write the chain of custody as a printable HTML form or as CSV (by the name's "
        "ending; print the HTML from a browser for paper or PDF); an existing file is replaced",
    )
    form.add_argument(
        "--trust", action="append", default=[], metavar="KEY.pub|FINGERPRINT", help=TRUST_HELP
    )
    opening = form.add_mutually_exclusive_group()
    opening.add_argument(
        "--identity", metavar="KEY.pem", help=KEY_HELP + " (adds the manifest's details)"
    )
    opening.add_argument("--password-env", metavar="VAR", help=PASSWORD_ENV_HELP)
    form.add_argument(
        "--identity-passphrase-env", metavar="VAR", help="variable holding the key's passphrase"
    )
    handoff.set_defaults(handler=run_custody)

    keygen = commands.add_parser(
        "keygen", help="create signing and recipient key pairs", epilog=EXAMPLES["keygen"]
    )
    keygen.add_argument(
        "--out",
        required=True,
        metavar="PREFIX",
        help="writes PREFIX.signing.key/.pub and PREFIX.recipient.key/.pub",
    )
    keygen.add_argument(
        "--recipient-type",
        choices=("x25519", "rsa"),
        default="x25519",
        help="the recipient key's algorithm (RSA for labs whose tooling needs it)",
    )
    keygen.add_argument("--passphrase-env", metavar="VAR", help="encrypt the private keys")
    keygen.add_argument(
        "--name",
        default="",
        metavar="NAME",
        help="whose signing identity this is (an examiner or a team); shown beside its "
        "fingerprint wherever it signs",
    )
    keygen.set_defaults(handler=run_keygen)


def _add_identity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust", action="append", default=[], metavar="KEY.pub|FINGERPRINT", help=TRUST_HELP
    )
    parser.add_argument(
        "--expect-receipt",
        action="append",
        default=[],
        metavar="FILE|HEAD",
        help="a custody receipt you kept (or its head hash): fail unless the custody sidecar "
        "still reaches it; repeatable",
    )
    parser.add_argument(
        "--tsa-chain",
        metavar="PEM",
        help="the TSA's certificate chain (root and intermediates): every RFC 3161 timestamp "
        "must then be present and verify",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--identity", metavar="KEY.pem", help=KEY_HELP)
    group.add_argument("--password-env", metavar="VAR", help=PASSWORD_ENV_HELP)
    parser.add_argument(
        "--identity-passphrase-env", metavar="VAR", help="variable holding the key's passphrase"
    )
    parser.add_argument(
        "--max-ratio",
        type=int,
        default=None,
        metavar="N",
        help="refuse archives whose contents declare more than N times the payload's size "
        "(default 200; raise it for evidence that is mostly zeros, such as a sparse image)",
    )


def _limits(args: argparse.Namespace) -> Any:
    from evidence.innerzip import DEFAULT_LIMITS, PayloadLimits

    if args.max_ratio is None:
        return DEFAULT_LIMITS
    if args.max_ratio < 1:
        raise UsageProblem("--max-ratio must be at least 1")
    return PayloadLimits(max_amplification=args.max_ratio)


def _fail(command: str, message: str, code: int = EXIT_USAGE) -> int:
    print(f"cblr-collect {command}: {message}", file=sys.stderr)
    return code


def _secret_from_env(variable: str) -> bytes:
    value = os.environ.get(variable)
    if not value:
        raise UsageProblem(f"environment variable {variable} is not set or empty")
    return value.encode()


def _strong(value: bytes, source: str) -> bytes:
    """A passphrase to seal with, refused when too easy to guess (opening takes any)."""
    from evidence.passphrase import weakness

    problem = weakness(value.decode(errors="replace"))
    if problem:
        raise UsageProblem(f"{source}: {problem}")
    return value


def _assurance(args: argparse.Namespace) -> Any:
    """What this verifier brings: trusted keys, expected receipts, the TSA chain."""
    from evidence.assurance import Assurance
    from evidence.receipts import ReceiptError, load_expectation
    from evidence.timestamps import TimestampError, load_chain
    from evidence.trust import TrustError, load_trust

    try:
        own = [Path(args.signing_key)] if getattr(args, "signing_key", None) else []
        trust = load_trust(args.trust, own_keys=own)
        expectations = [load_expectation(value) for value in args.expect_receipt]
        chain = load_chain(args.tsa_chain) if args.tsa_chain else None
    except (TrustError, ReceiptError, TimestampError) as exc:
        raise UsageProblem(str(exc)) from None
    return Assurance(trust, tuple(expectations), chain)


def _timestamper(args: argparse.Namespace) -> Any:
    from evidence.timestamps import TimestampError, timestamper

    if not getattr(args, "tsa", None):
        return None
    try:
        return timestamper(args.tsa)
    except TimestampError as exc:
        raise UsageProblem(str(exc)) from None


def _prompt_passphrase(confirm: bool) -> bytes:
    if not sys.stdin.isatty():
        raise UsageProblem("no key given: use --identity KEY.pem or --password-env VAR")
    first = getpass.getpass("Archive passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise UsageProblem("the passphrases differ")
    return first.encode()


def _opening_secrets(args: argparse.Namespace) -> tuple[Any, bytes | None]:
    from evidence import keys

    if args.identity:
        key_passphrase = (
            _secret_from_env(args.identity_passphrase_env) if args.identity_passphrase_env else None
        )
        return keys.load_identity(args.identity, key_passphrase), None
    if args.password_env:
        return None, _secret_from_env(args.password_env)
    from evidence import archive, envelope

    scheme = envelope.parse_envelope(archive.read_envelope(Path(args.archive)))["scheme"]
    if scheme == envelope.PASSPHRASE_SCHEME:
        return None, _prompt_passphrase(confirm=False)
    return None, None


def _collections(workspace: Path) -> list[Path]:
    if (workspace / "manifest.json").is_file():
        return [workspace]
    found = sorted(p.parent for p in workspace.glob("*/manifest.json"))
    if not found:
        raise UsageProblem(f"no collection (manifest.json) in {workspace}")
    return found


def _archive_name(folder: Path) -> str:
    from evidence.safepaths import safe_component

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    created = str(manifest.get("created", "")).replace(":", "").replace("-", "")
    parts = [manifest["case"]["case_id"], str(manifest["device"]["device_id"]), created]
    return safe_component("-".join(part for part in parts if part)) + ".zip"


def _collector_workspaces(path: Path) -> list[Any]:
    """The collection workspaces (journal.sqlite) at or below ``path``; empty when none."""
    from collector.transfer.workspace import WorkspaceError, find_workspaces

    try:
        return find_workspaces(path.resolve())
    except WorkspaceError:
        return []


def _seal_workspaces(args: argparse.Namespace, workspaces: list[Any]) -> int:
    """Seal collector workspaces with their recorded settings; flags given here win.

    The passphrase is read from the variable named by --password-env, else by the one the
    run recorded (its name only: the journal never holds a secret).
    """
    from collector.acquisition.runner import RunSettings
    from collector.packaging.sealing import SealKeyError, load_seal_keys, seal_workspace
    from collector.transfer.journal import Journal
    from collector.transfer.workspace import WorkspaceError

    code = EXIT_OK
    for workspace in workspaces:
        try:
            with Journal.open(workspace.root, readonly=True) as journal:
                run = RunSettings.from_settings(journal.settings())
            recipient = args.recipient or ("" if args.password_env else run.recipient)
            variable = args.password_env or ("" if args.recipient else run.archive_key_env)
            keys = load_seal_keys(
                recipient, variable, args.signing_key or run.signing_key, args.tsa or ""
            )
            out = Path(args.out) if args.out else Path(run.out)
            with workspace:
                sealed = seal_workspace(workspace, out, keys)
        except (SealKeyError, TypeError, KeyError) as exc:
            return _fail("seal", f"{workspace.root}: {exc}")
        except (WorkspaceError, ValueError, OSError) as exc:
            code = _fail("seal", f"{workspace.root}: {exc}", EXIT_PARTIAL)
            continue
        print(f"sealed {sealed.path} sha256={sealed.sha256} size={sealed.size}")
    return code


@contextmanager
def _owning_workspace_lock(folder: Path) -> Iterator[None]:
    """A workspace's ``collection`` folder is sealed under that workspace's lock, the one
    ``seal WORKSPACE`` and ``collect`` take: one collection, one archive at a time."""
    from collector.transfer.workspace import Workspace

    owner = Workspace(folder.resolve().parent)
    if folder.resolve() != owner.collection or not owner.exists():
        yield
        return
    with owner:
        yield


def run_seal(args: argparse.Namespace) -> int:
    from collector.transfer.workspace import WorkspaceError
    from evidence import keys
    from evidence.seal import SealError, seal_collection

    if args.out:
        try:
            check_creatable(Path(args.out), "--out")
        except FolderError as exc:
            return _fail("seal", str(exc))
    workspaces = _collector_workspaces(Path(args.workspace))
    if workspaces:
        return _seal_workspaces(args, workspaces)
    try:
        folders = _collections(Path(args.workspace))
        signing_key = keys.load_signing_key(args.signing_key or keys.default_signing_key_path())
        recipient = keys.load_recipient(args.recipient) if args.recipient else None
        passphrase = None
        if recipient is None:
            passphrase = (
                _strong(_secret_from_env(args.password_env), args.password_env)
                if args.password_env
                else _strong(_prompt_passphrase(confirm=True), "the passphrase typed")
            )
        timestamper = _timestamper(args)
    except (UsageProblem, keys.KeyFileError) as exc:
        return _fail("seal", str(exc))
    code = EXIT_OK
    for folder in folders:
        out_dir = Path(args.out) if args.out else folder.parent
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            with _owning_workspace_lock(folder):
                result = seal_collection(
                    folder,
                    out_dir / _archive_name(folder),
                    signing_key,
                    recipient=recipient,
                    passphrase=passphrase,
                    timestamper=timestamper,
                )
        except (SealError, WorkspaceError, ValueError, OSError) as exc:
            code = _fail("seal", f"{folder}: {exc}", EXIT_PARTIAL)
            continue
        print(f"sealed {result.archive} sha256={result.sha256} size={result.size}")
    return code


def _verdict(report: Any) -> str:
    if not report.ok:
        return f"FAILED: {', '.join(c.name for c in report.failures)}"
    if report.unverified:
        return "NOT VERIFIED: consistent, but the signer is unverified (no trusted keys given)"
    return "VERIFIED"


SIGNER_CHECKS = ("signer", "manifest.sig")
"""Checks shown even when they pass, with every signed custody record, timestamp and receipt:
who signed, when, and what the verifier brought are part of every verdict."""


def _print_report(report: Any, as_json: bool, verbose: bool = False) -> None:
    """The report; by default one screen: the verdict, who signed, what failed or warns."""
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
        return
    shown = [check for check in report.checks if verbose or _always_shown(check)]
    width = max((len(check.name) for check in shown), default=10)
    print(f"{report.target}")
    for key, value in sorted(report.summary.items()):
        print(f"  {key}: {value}")
    for check in shown:
        status = "OK  " if check.ok else "FAIL"
        print(f"  {status}  {check.name.ljust(width)}  {check.detail}")
    if hidden := len(report.checks) - len(shown):
        print(f"  OK    {hidden} more checks passed (-v lists every check)")
    for warning in report.warnings:
        print(f"  WARN  {warning}")
    for line in report.unverified:
        print(line)
    print(_verdict(report))


def _always_shown(check: Any) -> bool:
    return (
        not check.ok
        or check.name in SIGNER_CHECKS
        or check.name.startswith(("custody #", "timestamp", "receipt"))
    )


def _open_and_run(args: argparse.Namespace, command: str, action: Any) -> int:
    from evidence import archive, envelope, keys

    try:
        checks = _assurance(args)
        identity, passphrase = (None, None)
        if Path(args.archive).is_file():
            identity, passphrase = _opening_secrets(args)
        report = action(identity, passphrase, checks)
    except (UsageProblem, keys.KeyFileError) as exc:
        return _fail(command, str(exc))
    except (archive.ArchiveError, envelope.EnvelopeError, ValueError, OSError) as exc:
        return _fail(command, str(exc), EXIT_PARTIAL)
    _print_report(report, args.json, args.verbose)
    if report.key_problem:
        key_check = next(check for check in report.failures if check.name == "key")
        print(f"cblr-collect {command}: {key_check.detail}", file=sys.stderr)
    return report.exit_code


def run_verify(args: argparse.Namespace) -> int:
    from evidence.verify import verify_archive, verify_folder

    if Path(args.archive).is_dir():
        if args.record or args.expect_receipt:
            return _fail("verify", "--record and --expect-receipt need a sealed archive")
        return _open_and_run(args, "verify", lambda _i, _p, c: verify_folder(args.archive, c))
    reports: list[Any] = []

    def action(identity: Any, secret: bytes | None, checks: Any) -> Any:
        reports.append(verify_archive(args.archive, identity, secret, _limits(args), checks))
        return reports[-1]

    code = _open_and_run(args, "verify", action)
    if args.record and reports and not reports[-1].key_problem:
        return _record_verification(args, reports[-1]) or code
    return code


def _record_verification(args: argparse.Namespace, report: Any) -> int:
    """Append the verdict to the sidecar, signed by the verifier, and write its receipt;
    0 when recorded."""
    from evidence import custody, keys

    failed = [check.name for check in report.failures]
    try:
        _refuse_existing_receipt(args)
        signing_key = keys.load_or_create_signing_key(
            args.signing_key or keys.default_signing_key_path()
        )
        event = custody.record_verification(
            args.archive,
            report.ok,
            failed,
            signing_key,
            timestamper=_timestamper(args),
            signer_unverified=bool(report.unverified),
        )
        receipt = _write_receipt(args, event, signing_key)
    except (keys.KeyFileError, UsageProblem) as exc:
        return _fail("verify", str(exc))
    except (custody.CustodyChainError, ValueError, OSError) as exc:
        return _fail("verify", f"could not record the result: {exc}", EXIT_PARTIAL)
    print(f"recorded verification #{event['seq']} in {custody.sidecar_path(args.archive)}")
    _print_receipt(receipt)
    return 0


def _refuse_existing_receipt(args: argparse.Namespace) -> None:
    """Before anything is appended: a receipt is never written over another one."""
    if args.receipt and Path(args.receipt).exists():
        raise UsageProblem(f"--receipt {args.receipt} exists; receipts are never overwritten")


def _write_receipt(args: argparse.Namespace, event: dict[str, Any], signing_key: Any) -> Any:
    from evidence import receipts

    archive = Path(args.archive)
    receipt = receipts.make_receipt(archive, event, signing_key)
    target = (
        Path(args.receipt)
        if args.receipt
        else receipts.default_receipt_path(archive, int(event["seq"]))
    )
    return receipts.write_receipt(target, receipt), receipt


def _print_receipt(written: tuple[Path, dict[str, Any]]) -> None:
    path, receipt = written
    who = f"{receipt['signer_name']!r} " if receipt["signer_name"] else ""
    print(f"receipt {path} (keep it apart from the archive; check later with --expect-receipt)")
    print(f"  events        {receipt['events']}")
    print(f"  head          {receipt['head']}")
    print(f"  archive sha256 {receipt['archive_sha256']}")
    print(f"  signed by     {who}{receipt['signer']}")


def run_unseal(args: argparse.Namespace) -> int:
    from evidence.unseal import UnsealError, unseal_archive

    try:
        check_creatable(Path(args.out), "--out")
    except FolderError as exc:
        return _fail("unseal", str(exc))

    def action(identity: Any, secret: bytes | None, checks: Any) -> Any:
        try:
            return unseal_archive(args.archive, args.out, identity, secret, _limits(args), checks)
        except UnsealError as exc:
            raise ValueError(f"refused: {exc}") from None

    return _open_and_run(args, "unseal", action)


HANDOFF_REQUIRED = ("released_by", "received_by", "purpose")
HANDOFF_OPTIONAL = (
    "released_by_title",
    "released_by_contact",
    "received_by_title",
    "received_by_contact",
    "storage_location",
    "item",
)
REPORT_FORMATS = (".html", ".htm", ".csv")


def _custody_usage(args: argparse.Namespace) -> str:
    """What is wrong with a ``custody`` command line ("" when nothing)."""
    given = [name for name in HANDOFF_REQUIRED if getattr(args, name) is not None]
    extras = [name for name in HANDOFF_OPTIONAL if getattr(args, name)]
    if not given and not args.report:
        return "give --released-by, --received-by and --purpose (a handoff) or --report FILE"
    if given and len(given) < len(HANDOFF_REQUIRED):
        missing = [name for name in HANDOFF_REQUIRED if name not in given]
        return "a handoff needs " + ", ".join("--" + n.replace("_", "-") for n in missing)
    if extras and not given:
        return f"--{extras[0].replace('_', '-')} belongs to a handoff: give --released-by too"
    if args.report and Path(args.report).suffix.lower() not in REPORT_FORMATS:
        return (
            f"--report {args.report}: the form is written as HTML (.html) or CSV (.csv); "
            "PDF: open the HTML in a browser and print it (A4 or Letter)"
        )
    if (args.identity or args.password_env) and not args.report:
        return "--identity and --password-env open the archive for --report only"
    return ""


def run_custody(args: argparse.Namespace) -> int:
    problem = _custody_usage(args)
    if problem:
        return _fail("custody", problem)
    code = EXIT_OK
    if args.released_by is not None:
        code = _record_handoff(args)
        if code not in (EXIT_OK, EXIT_PARTIAL):
            return code
    if args.report:
        report_code = _write_form(args)
        code = code if code != EXIT_OK and report_code != EXIT_USAGE else report_code
    return code


def _record_handoff(args: argparse.Namespace) -> int:
    from evidence import custody, keys

    handoff = custody.Handoff(
        released_by=args.released_by,
        received_by=args.received_by,
        purpose=args.purpose,
        **{name: getattr(args, name) for name in HANDOFF_OPTIONAL},
    )
    if problems := handoff.problems():
        return _fail("custody", "; ".join(problems))
    try:
        _refuse_existing_receipt(args)
        key_path = args.signing_key or keys.default_signing_key_path()
        signing_key = keys.load_or_create_signing_key(key_path)
        event = custody.record_handoff(
            args.archive, handoff, signing_key, timestamper=_timestamper(args)
        )
        receipt = _write_receipt(args, event, signing_key)
    except (keys.KeyFileError, UsageProblem) as exc:
        return _fail("custody", str(exc))
    except (custody.CustodyChainError, ValueError, OSError) as exc:
        return _fail("custody", str(exc), EXIT_PARTIAL)
    print(f"recorded handoff #{event['seq']} in {custody.sidecar_path(args.archive)}")
    _print_receipt(receipt)
    if not event["payload"]["archive_matches_sealed"]:
        return _fail(
            "custody",
            f"WARNING: the archive's SHA-256 is now {event['payload']['archive_sha256']}, not "
            "the one it was sealed with: it is not the archive that was sealed (the handoff "
            "is recorded with archive_matches_sealed false)",
            EXIT_PARTIAL,
        )
    return EXIT_OK


def _write_form(args: argparse.Namespace) -> int:
    """Render the custody form; the exit code says what the form shows (see the help)."""
    from collector.cli.exitcodes import EXIT_SIGNER_UNVERIFIED, EXIT_WRONG_KEY
    from evidence import archive, custodyform, custodyreport, envelope, keys
    from evidence.trust import TrustError, load_trust

    try:
        own = [Path(args.signing_key)] if args.signing_key else []
        trust = load_trust(args.trust, own_keys=own)
        manifest = None
        if args.identity or args.password_env:
            identity, passphrase = _opening_secrets(args)
            manifest = custodyform.read_manifest(args.archive, identity, passphrase, trust)
        form = custodyform.build_form(args.archive, trust, manifest)
    except (UsageProblem, TrustError, keys.KeyFileError) as exc:
        return _fail("custody", str(exc))
    except custodyform.WrongKey as exc:
        return _fail("custody", str(exc), EXIT_WRONG_KEY)
    except (custodyform.FormError, archive.ArchiveError, envelope.EnvelopeError) as exc:
        return _fail("custody", f"no form written: {exc}", EXIT_PARTIAL)
    except OSError as exc:
        return _fail("custody", f"no form written: {exc.strerror}", EXIT_PARTIAL)
    target = Path(args.report)
    is_csv = target.suffix.lower() == ".csv"
    text = custodyreport.render_csv(form) if is_csv else custodyreport.render_html(form)
    partial = target.with_name(target.name + ".partial")
    try:
        partial.write_text(text, encoding="utf-8", newline="")
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        return _fail("custody", f"cannot write {target}: {exc.strerror}", EXIT_USAGE)
    kinds = {"handed_over": 0, "delivered": 0}
    for event in form.events:
        if event.kind in kinds:
            kinds[event.kind] += 1
    print(
        f"custody form {target}: {len(form.events)} records, {kinds['handed_over']} handoffs, "
        f"{kinds['delivered']} deliveries"
    )
    if form.broken:
        return _fail("custody", "the chain of custody is BROKEN; the form says where", EXIT_PARTIAL)
    if form.untrusted:
        print(
            f"{len(form.untrusted)} of {len(form.events)} records are signed by keys not "
            "trusted here (give --trust KEY.pub|FINGERPRINT)"
        )
        return EXIT_SIGNER_UNVERIFIED
    return EXIT_OK


def run_keygen(args: argparse.Namespace) -> int:
    from evidence import keys

    try:
        passphrase = _secret_from_env(args.passphrase_env) if args.passphrase_env else None
        generated = keys.generate_keys(args.out, args.recipient_type, passphrase, args.name)
    except (UsageProblem, keys.KeyFileError, OSError) as exc:
        return _fail("keygen", str(exc))
    name = keys.clean_name(args.name)
    print(f"signing key   {generated.signing_private} (public {generated.signing_public})")
    print(f"  identity    {name!r}" if name else "  identity    (unnamed: give --name)")
    print(f"  fingerprint {generated.signing_fingerprint}")
    print(f"recipient key {generated.recipient_private} (public {generated.recipient_public})")
    print(f"  fingerprint {generated.recipient_fingerprint}")
    return EXIT_OK
