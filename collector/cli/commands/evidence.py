"""``cblr-collect seal | verify | unseal | custody | keygen``: the evidence package."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from collector.cli.exitcodes import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE

KEY_HELP = "the lab's private key (PEM) the archive was sealed for"
PASSWORD_ENV_HELP = "environment variable holding the passphrase (never pass it as an argument)"


class UsageProblem(Exception):
    pass


def register(commands: Any) -> None:
    seal = commands.add_parser("seal", help="seal a collection into an encrypted archive")
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
    seal.set_defaults(handler=run_seal)

    verify = commands.add_parser("verify", help="verify a sealed archive or unsealed folder")
    verify.add_argument("archive")
    _add_identity(verify)
    verify.add_argument("--json", action="store_true", help="the report as JSON")
    verify.add_argument(
        "--record",
        action="store_true",
        help="append the result, signed, to the archive's custody sidecar",
    )
    verify.add_argument(
        "--signing-key", metavar="KEY.pem", help="the verifier's key for --record (made if missing)"
    )
    verify.set_defaults(handler=run_verify)

    unseal = commands.add_parser("unseal", help="restore a sealed archive into a folder")
    unseal.add_argument("archive")
    unseal.add_argument("--out", required=True, metavar="DIR", help="an absent or empty folder")
    _add_identity(unseal)
    unseal.add_argument("--json", action="store_true", help="the report as JSON")
    unseal.set_defaults(handler=run_unseal)

    handoff = commands.add_parser("custody", help="record a signed custody handoff")
    handoff.add_argument("archive")
    handoff.add_argument("--released-by", required=True, metavar="NAME")
    handoff.add_argument("--received-by", required=True, metavar="NAME")
    handoff.add_argument("--purpose", required=True, metavar="TEXT")
    handoff.add_argument("--signing-key", metavar="KEY.pem", help="created if it does not exist")
    handoff.set_defaults(handler=run_custody)

    keygen = commands.add_parser("keygen", help="create signing and recipient key pairs")
    keygen.add_argument("--out", required=True, metavar="PREFIX")
    keygen.add_argument("--recipient-type", choices=("x25519", "rsa"), default="x25519")
    keygen.add_argument("--passphrase-env", metavar="VAR", help="encrypt the private keys")
    keygen.set_defaults(handler=run_keygen)


def _add_identity(parser: argparse.ArgumentParser) -> None:
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


def _prompt_passphrase(confirm: bool) -> bytes:
    if not sys.stdin.isatty():
        raise UsageProblem("no key given: use --recipient/--identity or --password-env")
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
            keys = load_seal_keys(recipient, variable, args.signing_key or run.signing_key)
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


def run_seal(args: argparse.Namespace) -> int:
    from evidence import keys
    from evidence.seal import SealError, seal_collection

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
                _secret_from_env(args.password_env)
                if args.password_env
                else _prompt_passphrase(confirm=True)
            )
    except (UsageProblem, keys.KeyFileError) as exc:
        return _fail("seal", str(exc))
    code = EXIT_OK
    for folder in folders:
        out_dir = Path(args.out) if args.out else folder.parent
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            result = seal_collection(
                folder,
                out_dir / _archive_name(folder),
                signing_key,
                recipient=recipient,
                passphrase=passphrase,
            )
        except (SealError, ValueError, OSError) as exc:
            code = _fail("seal", f"{folder}: {exc}", EXIT_PARTIAL)
            continue
        print(f"sealed {result.archive} sha256={result.sha256} size={result.size}")
    return code


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
        return
    width = max((len(check.name) for check in report.checks), default=10)
    print(f"{report.target}")
    for key, value in sorted(report.summary.items()):
        print(f"  {key}: {value}")
    for check in report.checks:
        status = "OK  " if check.ok else "FAIL"
        print(f"  {status}  {check.name.ljust(width)}  {check.detail}")
    verdict = "VERIFIED" if report.ok else f"FAILED: {', '.join(c.name for c in report.failures)}"
    print(verdict)


def _open_and_run(args: argparse.Namespace, command: str, action: Any) -> int:
    from evidence import archive, envelope, keys

    try:
        identity, passphrase = (None, None)
        if Path(args.archive).is_file():
            identity, passphrase = _opening_secrets(args)
        report = action(identity, passphrase)
    except (UsageProblem, keys.KeyFileError) as exc:
        return _fail(command, str(exc))
    except (archive.ArchiveError, envelope.EnvelopeError, ValueError, OSError) as exc:
        return _fail(command, str(exc), EXIT_PARTIAL)
    _print_report(report, args.json)
    if report.key_problem:
        key_check = next(check for check in report.failures if check.name == "key")
        print(f"cblr-collect {command}: {key_check.detail}", file=sys.stderr)
    return report.exit_code


def run_verify(args: argparse.Namespace) -> int:
    from evidence.verify import verify_archive, verify_folder

    if Path(args.archive).is_dir():
        if args.record:
            return _fail("verify", "--record needs a sealed archive, not a folder")
        return _open_and_run(args, "verify", lambda _i, _p: verify_folder(args.archive))
    reports: list[Any] = []

    def action(identity: Any, secret: bytes | None) -> Any:
        reports.append(verify_archive(args.archive, identity, secret, _limits(args)))
        return reports[-1]

    code = _open_and_run(args, "verify", action)
    if args.record and reports and not reports[-1].key_problem:
        return _record_verification(args, reports[-1]) or code
    return code


def _record_verification(args: argparse.Namespace, report: Any) -> int:
    """Append the verdict to the sidecar, signed by the verifier; 0 when recorded."""
    from evidence import custody, keys

    failed = [check.name for check in report.failures]
    try:
        signing_key = keys.load_or_create_signing_key(
            args.signing_key or keys.default_signing_key_path()
        )
        event = custody.record_verification(args.archive, report.ok, failed, signing_key)
    except keys.KeyFileError as exc:
        return _fail("verify", str(exc))
    except (custody.CustodyChainError, OSError) as exc:
        return _fail("verify", f"could not record the result: {exc}", EXIT_PARTIAL)
    print(f"recorded verification #{event['seq']} in {custody.sidecar_path(args.archive)}")
    return 0


def run_unseal(args: argparse.Namespace) -> int:
    from evidence.unseal import UnsealError, unseal_archive

    def action(identity: Any, secret: bytes | None) -> Any:
        try:
            return unseal_archive(args.archive, args.out, identity, secret, _limits(args))
        except UnsealError as exc:
            raise ValueError(f"refused: {exc}") from None

    return _open_and_run(args, "unseal", action)


def run_custody(args: argparse.Namespace) -> int:
    from evidence import custody, keys

    try:
        key_path = args.signing_key or keys.default_signing_key_path()
        signing_key = keys.load_or_create_signing_key(key_path)
        event = custody.record_handoff(
            args.archive, args.released_by, args.received_by, args.purpose, signing_key
        )
    except keys.KeyFileError as exc:
        return _fail("custody", str(exc))
    except (custody.CustodyChainError, ValueError, OSError) as exc:
        return _fail("custody", str(exc), EXIT_PARTIAL)
    print(f"recorded handoff #{event['seq']} in {custody.sidecar_path(args.archive)}")
    return EXIT_OK


def run_keygen(args: argparse.Namespace) -> int:
    from evidence import keys

    try:
        passphrase = _secret_from_env(args.passphrase_env) if args.passphrase_env else None
        generated = keys.generate_keys(args.out, args.recipient_type, passphrase)
    except (UsageProblem, keys.KeyFileError, OSError) as exc:
        return _fail("keygen", str(exc))
    print(f"signing key   {generated.signing_private} (public {generated.signing_public})")
    print(f"  fingerprint {generated.signing_fingerprint}")
    print(f"recipient key {generated.recipient_private} (public {generated.recipient_public})")
    print(f"  fingerprint {generated.recipient_fingerprint}")
    return EXIT_OK
