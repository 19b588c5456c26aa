"""Render a sample chain-of-custody form and look at it in a real browser.

Runs ``cblr-collect demo`` (the emulator, a collection, a sealed archive), records two handoffs
with every form field through ``cblr-collect custody``, appends a ``delivered`` record signed
by a delivery key (as the S3/SFTP delivery writes it), then renders the form as HTML and CSV,
with the archive's key and trusting the examiner, the courier and the lab (the delivery key is
left untrusted on purpose, to show how the form marks it). With Chromium installed it takes a
screenshot and prints the form to PDF on A4 and on Letter, and (with poppler's ``pdftoppm``)
turns every PDF page into a PNG to look at.

    python scripts/render_custody_form.py [--out DIR] [--tampered]

``--tampered`` also renders a copy whose second handoff was edited after signing, to see how
a broken chain looks. Prints where everything is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from evidence import custody, keys

CLI = str(Path(sys.executable).parent / "cblr-collect")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
PAPERS = {"a4": "210mm 297mm", "letter": "8.5in 11in"}
TIMEOUT = 180


def run(*args: str | Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )
    if result.returncode not in (0, 4):
        raise SystemExit(f"{' '.join(map(str, args[:3]))} exited {result.returncode}: "
                         f"{result.stderr.strip()}")  # fmt: skip
    return result


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser(html: Path, *flags: str, cwd: Path) -> None:
    binary = chromium()
    assert binary is not None
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *flags, html.as_uri()],
            cwd=cwd, capture_output=True, timeout=TIMEOUT, check=True,
        )  # fmt: skip


def with_paper(html: Path, paper: str) -> Path:
    """A copy of the form whose ``@page`` names the paper size (the form itself leaves it to
    the printer), so Chromium paginates it as that paper would."""
    text = html.read_text(encoding="utf-8")
    rule = f"@page {{ size: {PAPERS[paper]}; }}"
    target = html.with_name(f"{html.stem}-{paper}.html")
    target.write_text(text.replace("</style>", rule + "</style>", 1), encoding="utf-8")
    return target


def look(html: Path, out: Path) -> list[Path]:
    """Screenshot (A4 width at 96 dpi, a tall window) and PDFs on A4 and Letter, and their
    pages as PNGs when ``pdftoppm`` is there."""
    made = []
    shot = out / f"{html.stem}.png"
    browser(html, f"--screenshot={shot}", "--window-size=900,2600", cwd=out)
    made.append(shot)
    for paper in PAPERS:
        pdf = out / f"{html.stem}-{paper}.pdf"
        browser(with_paper(html, paper), f"--print-to-pdf={pdf}", "--no-pdf-header-footer",
                cwd=out)  # fmt: skip
        made.append(pdf)
        if shutil.which("pdftoppm"):
            prefix = out / f"{html.stem}-{paper}-page"
            subprocess.run(["pdftoppm", "-png", "-r", "70", str(pdf), str(prefix)],
                           check=True, timeout=TIMEOUT)  # fmt: skip
            made.extend(sorted(out.glob(f"{prefix.name}*.png")))
    return made


def sample(out: Path) -> tuple[Path, list[str], dict[str, str]]:
    """A demo archive with two handoffs and a delivery; returns it, the form's key and trust
    arguments, and the environment the commands ran in."""
    home = out / "home"
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBLR_")}
    env.update(HOME=str(home), NO_COLOR="1")
    run(CLI, "demo", "--out", out / "demo", env=env, cwd=out)
    run_dir = next((out / "demo").glob("run-*"))
    archive = next((run_dir / "evidence").glob("*.zip"))
    parties = {}
    for name, label in (("courier", "Courier Two"), ("lab", "Northwind DFIR Lab")):
        run(CLI, "keygen", "--out", out / "keys" / name, "--name", label, env=env, cwd=out)
        parties[name] = out / "keys" / f"{name}.signing.key"
    run(
        CLI, "custody", archive, "--item", "E-0042",
        "--released-by", "Demo Examiner", "--released-by-title", "Incident responder",
        "--released-by-contact", "examiner@example.org",
        "--received-by", "Courier Two", "--received-by-title", "Evidence courier",
        "--received-by-contact", "+1-555-0100",
        "--purpose", "transport to the lab in a sealed bag (bag no. 7781)",
        "--storage-location", "Courier case, tamper-evident bag 7781",
        "--signing-key", parties["courier"], env=env, cwd=out,
    )  # fmt: skip
    run(
        CLI, "custody", archive, "--item", "E-0042",
        "--released-by", "Courier Two", "--released-by-title", "Evidence courier",
        "--released-by-contact", "+1-555-0100",
        "--received-by", "A. Smith", "--received-by-title", "Evidence custodian, Northwind lab",
        "--received-by-contact", "intake@northwind.example",
        "--purpose", "intake for forensic analysis",
        "--storage-location", "Northwind lab evidence safe 2, shelf B",
        "--signing-key", parties["lab"], env=env, cwd=out,
    )  # fmt: skip
    delivery_key = keys.load_or_create_signing_key(out / "keys" / "delivery.key", "S3 uploader")
    sealed = custody.sealed_archive_sha256(custody.sidecar_path(archive))
    custody.append_signed(
        custody.sidecar_path(archive),
        "delivered",
        {
            "destination": "s3://legal-hold-evidence/case-demo/",
            "location": f"case-demo/{archive.name}",
            "file_name": archive.name,
            "size": archive.stat().st_size,
            "sha256": sealed,
            "confirmation": "s3-full-object-sha256",
            "version_id": "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY",
            "lock": {
                "mode": "COMPLIANCE",
                "retain_until": "2033-12-04T00:00:00Z",
                "legal_hold": "ON",
            },
        },
        delivery_key,
    )
    arguments = [
        "--identity", str(run_dir / "lab" / "demo-lab.recipient.key"),
        "--trust", str(run_dir / "collector" / "signing.pub"),
        "--trust", str(run_dir / "lab" / "demo-lab.signing.pub"),
        "--trust", str(out / "keys" / "courier.signing.pub"),
        "--trust", str(out / "keys" / "lab.signing.pub"),
    ]  # fmt: skip
    return archive, arguments, env


def tamper(archive: Path, out: Path) -> Path:
    """A copy of the archive whose second handoff names someone else, edited after signing."""
    target = out / "tampered" / archive.name
    target.parent.mkdir()
    shutil.copy(archive, target)
    lines = custody.sidecar_path(archive).read_bytes().splitlines(keepends=True)
    edited = [line.replace(b'"received_by":"A. Smith"', b'"received_by":"M. Mallory"')
              for line in lines]  # fmt: skip
    assert edited != lines, "the second handoff was not found"
    custody.sidecar_path(target).write_bytes(b"".join(edited))
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for everything (default: a new one)")
    parser.add_argument("--tampered", action="store_true", help="also render a broken chain")
    args = parser.parse_args()
    out = (args.out or Path(tempfile.mkdtemp(prefix="custody-form-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    archive, arguments, env = sample(out)
    forms = []
    for name in ("custody-form.html", "custody.csv"):
        result = run(CLI, "custody", archive, "--report", out / name, *arguments, env=env, cwd=out)
        print(result.stdout.strip())
        forms.append(out / name)
    html = [forms[0]]
    if args.tampered:
        broken = tamper(archive, out)
        target = out / "custody-form-tampered.html"
        result = subprocess.run(
            [CLI, "custody", str(broken), "--report", str(target), *arguments],
            env=env, cwd=out, capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        print(f"tampered copy: exit {result.returncode}: {result.stderr.strip()}")
        html.append(target)
    print(f"form  {forms[0]}\ncsv   {forms[1]}")
    if chromium() is None:
        print("chromium is not installed: no screenshot (apt-get install chromium)")
        return 0
    for page in html:
        for made in look(page, out):
            print(f"      {made}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
