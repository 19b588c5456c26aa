"""``cblr-collect profiles``: list, show, check and import collection profiles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from collector.cli.exitcodes import EXIT_OK, EXIT_USAGE


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "profiles",
        help="list, show, check and import collection profiles",
        description="Collection profiles: the built-in library, validation, and importers for "
        "KAPE targets (.tkape) and ForensicArtifacts definitions (.yaml).",
        epilog="examples:\n  cblr-collect profiles list\n  cblr-collect profiles show triage\n"
        "  cblr-collect profiles check my-profile.yaml\n"
        "  cblr-collect profiles import Targets/Compound/KapeTriage.tkape --out kape.yaml\n"
        "  cblr-collect profiles import data/windows.yaml --only WindowsRunKeys",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="profiles_command", required=True, metavar="ACTION")

    listing = actions.add_parser(
        "list", help="the built-in profiles", epilog="example:\n  cblr-collect profiles list --json"
    )
    listing.add_argument("--json", action="store_true", help="one JSON document on stdout")
    listing.set_defaults(handler=run_list)

    show = actions.add_parser(
        "show",
        help="a profile's resolved artifacts",
        epilog="examples:\n  cblr-collect profiles show triage\n"
        "  cblr-collect profiles show my.yaml --json",
    )
    show.add_argument("profile", metavar="NAME|FILE", help="a built-in profile or a YAML file")
    show.add_argument("--json", action="store_true", help="the resolved plan as JSON")
    show.set_defaults(handler=run_show)

    check = actions.add_parser(
        "check",
        help="validate profile files (every problem, with lines)",
        epilog="example:\n  cblr-collect profiles check my-triage.yaml other.yaml",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="profile YAML files")
    check.set_defaults(handler=run_check)

    importer = actions.add_parser(
        "import",
        help="convert KAPE targets or ForensicArtifacts definitions into a profile",
        epilog="examples:\n  cblr-collect profiles import Targets/Compound/KapeTriage.tkape "
        "--out kape.yaml\n  cblr-collect profiles import data/windows.yaml --only WindowsRunKeys",
    )
    importer.add_argument("files", nargs="+", metavar="FILE", help=".tkape or definitions .yaml")
    importer.add_argument("--out", metavar="FILE", help="write the profile here (default stdout)")
    importer.add_argument(
        "--force", action="store_true", help="overwrite --out if it exists (default: refuse)"
    )
    importer.add_argument("--name", help="the new profile's name")
    importer.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="DEFINITION",
        help="ForensicArtifacts: import only this definition (repeatable); default: all in FILE",
    )
    importer.set_defaults(handler=run_import)


def _fail(message: str) -> int:
    print(f"cblr-collect profiles: {message}", file=sys.stderr)
    return EXIT_USAGE


def run_list(args: argparse.Namespace) -> int:
    from profiles import builtin_library, resolve
    from profiles.library import DEFAULT_PROFILE

    library = builtin_library()
    rows = []
    for name in library.names():
        profile = library.profiles[name]
        resolved = resolve(profile, library)
        rows.append(
            {
                "name": name,
                "default": name == DEFAULT_PROFILE,
                "includes": list(profile.includes),
                "artifacts": len(resolved.artifacts),
                "description": profile.description,
            }
        )
    if args.json:
        print(json.dumps({"profiles": rows}, indent=2))
        return EXIT_OK
    width = max(len(row["name"]) for row in rows) + 2
    for row in rows:
        marker = " (default)" if row["default"] else ""
        print(f"{row['name']:<{width}}{row['artifacts']:>4} artifacts{marker}")
        print(f"{'':<{width}}{row['description']}")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    from profiles import ProfileError, builtin_library, load_profile, resolve

    library = builtin_library()
    try:
        resolved = resolve(load_profile(args.profile, library), library)
    except ProfileError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(resolved.to_dict(), indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"{resolved.name}: {resolved.description}")
    print(f"profiles: {', '.join(resolved.profiles)}; {len(resolved.artifacts)} artifacts")
    for artifact in resolved.artifacts:
        what = _what(artifact.to_dict())
        print(f"  {artifact.kind:<9} {artifact.name}" + (f": {what}" if what else ""))
    return EXIT_OK


def _what(fields: dict[str, Any]) -> str:
    details = {k: v for k, v in fields.items() if k not in ("name", "category", "kind")}
    main = next(
        (str(details.pop(k)) for k in ("path", "key", "hive", "command") if k in details), ""
    )
    extra = ", ".join(f"{k}={v}" for k, v in details.items())
    return " ".join(part for part in (main, f"({extra})" if extra else "") if part)


def run_check(args: argparse.Namespace) -> int:
    from profiles import ProfileError, builtin_library, check_profile_file, variable_notes

    library = builtin_library()
    status = EXIT_OK
    for file in args.files:
        try:
            resolved = check_profile_file(file, library)
        except ProfileError as exc:
            print(str(exc), file=sys.stderr)
            status = EXIT_USAGE
            continue
        for note in variable_notes(resolved):
            print(f"{file}: note: {note}", file=sys.stderr)
        print(f"{file}: ok, profile {resolved.name}, {len(resolved.artifacts)} artifacts")
    return status


def run_import(args: argparse.Namespace) -> int:
    from profiles import ProfileError, dump_profile, load_profile_text
    from profiles.importing import import_files

    if args.out and Path(args.out).exists() and not args.force:
        return _fail(f"{args.out} exists; give --force to overwrite it")
    try:
        result = import_files([Path(f) for f in args.files], args.only, args.name or "")
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    for line in result.report_lines():
        print(line, file=sys.stderr)
    if not result.profile.artifacts:
        return _fail("nothing converted")
    text = dump_profile(result.profile, _header(args.files, result))
    try:
        load_profile_text(text, args.out or "<import>")
    except ProfileError as exc:
        return _fail(f"the converted profile does not validate:\n{exc}")
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            return _fail(f"--out {args.out}: cannot write it ({exc.strerror})")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _header(files: list[str], result: Any) -> list[str]:
    lines = [f"Imported by cblr-collect profiles import from: {', '.join(files)}"]
    lines.append(
        f"{len(result.converted)} entries converted, {len(result.not_converted)} not converted"
    )
    lines.extend(f"not converted: {item.origin}: {item.reason}" for item in result.not_converted)
    return lines
