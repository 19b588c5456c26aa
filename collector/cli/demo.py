"""``cblr-collect demo``: the whole job on a stand-in endpoint, in one command.

It starts the emulator on loopback with the ``workstation`` scenario, makes a key pair for a
demo lab and a named signing identity for the collector, collects the ``triage`` profile with
live progress over the Carbon Black Cloud v6 API (with the emulator's org key; ``--api v3``
shows the older API), seals the archive for the lab's public key, verifies it as the lab would
(trusting the collector's public key, which the examiner hands the lab), prints where
everything is and the commands a lab runs next, and stops the emulator.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from collector.acquisition.runner import RunSettings
from collector.cli.exitcodes import EXIT_OK, EXIT_PARTIAL
from collector.cli.progress import RichReporter
from collector.cli.summary import print_summary
from collector.fleet.run import DeviceResult, FleetJob, run_fleet, settings_for
from collector.liveresponse.client import Secret
from collector.liveresponse.credentials import Credentials
from collector.liveresponse.sessions import SessionOptions
from collector.packaging.sealing import SealKeys
from collector.transfer.workspace import device_workspace
from emulator.server import EmulatorServer
from evidence import custody, keys
from evidence.assurance import Assurance
from evidence.innerzip import DEFAULT_LIMITS
from evidence.trust import load_trust
from evidence.verify import verify_archive
from profiles import load_profile, resolve

DEMO_SCENARIO = "workstation"
DEMO_DEVICE = 37191
DEMO_PROFILE = "triage"
DEMO_CASE = "DEMO-0001"


def workspace_holds(result: DeviceResult) -> str:
    """What the device's workspace still holds once the run is over."""
    if result.cleanup is not None and result.cleanup.removed:
        return "journal and run log; the staged copy went once the archive verified"
    return "journal, staged bytes, run log"


def run_demo(out: str, api: str = "v6") -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(out).resolve() / f"run-{stamp}"
    return asyncio.run(demo(folder, Console(stderr=True), api))


async def demo(folder: Path, console: Console, api: str = "v6") -> int:
    folder.mkdir(parents=True)
    lab = keys.generate_keys(folder / "lab" / "demo-lab", name="Demo Lab")
    signer = keys.load_or_create_signing_key(folder / "collector" / "signing.key", "Demo Examiner")
    collector_public = folder / "collector" / "signing.pub"
    collector_public.write_bytes(
        keys.identity_line(signer.name) + keys.public_pem(signer.public_key())
    )
    recipient = keys.load_recipient(lab.recipient_public)
    console.print(f"[bold]cblr-collect demo[/] -> {folder}")
    async with EmulatorServer(DEMO_SCENARIO) as server:
        dialect = f"API v6, org key {server.org_key}" if api == "v6" else "API v3"
        console.print(f"emulator: {server.url} (scenario {DEMO_SCENARIO}, {dialect})")
        settings = RunSettings(
            case_id=DEMO_CASE,
            examiner="Demo Examiner",
            device_id=DEMO_DEVICE,
            profile=DEMO_PROFILE,
            out=str(folder / "evidence"),
            url=server.url,
            api=api,
            org_key=server.org_key if api == "v6" else "",
            purpose="demonstration on an emulated endpoint",
            recipient=str(lab.recipient_public),
            signing_key=str(folder / "collector" / "signing.key"),
        )
        job = FleetJob(
            devices=[
                (
                    DEMO_DEVICE,
                    device_workspace(folder / "evidence", DEMO_DEVICE),
                    settings_for(settings, DEMO_DEVICE),
                )
            ],
            profile=resolve(load_profile(DEMO_PROFILE)),
            credentials=Credentials(
                url=server.url,
                token=Secret(server.token),
                verify_tls=True,
                ca_bundle=None,
                source="demo emulator",
                org_key=server.org_key if api == "v6" else "",
                api=api,
            ),
            seal_keys=SealKeys(signer, recipient=recipient),
            session_options=SessionOptions(checkin_timeout=30.0),
        )
        with RichReporter(console) as reporter:
            results = await run_fleet(job, reporter)
    print_summary(results, console)
    console.print(f"signed by {signer.name!r} {keys.fingerprint(signer.public_key())}")
    return await _verify_and_explain(results[0], lab, collector_public, console)


async def _verify_and_explain(
    result: DeviceResult, lab: keys.GeneratedKeys, collector_public: Path, console: Console
) -> int:
    if result.archive is None:
        console.print(f"[red]no archive was sealed[/]: {result.error or result.seal_error}")
        return EXIT_PARTIAL
    identity = keys.load_identity(lab.recipient_private)
    # The lab trusts the collector's public key (handed over with the archive, its
    # fingerprint read out by the examiner), never the key the archive carries.
    checks = Assurance(load_trust([str(collector_public)], use_config=False))
    report = await asyncio.to_thread(
        verify_archive, result.archive.path, identity, None, DEFAULT_LIMITS, checks
    )
    verdict = "[green]VERIFIED[/]" if report.verified else "[red]FAILED[/]"
    console.print(f"lab verification of the archive: {verdict}")
    for check in report.failures:
        console.print(f"  {check.name}: {check.detail}", markup=False)
    # The lab signs its verdict into the custody sidecar, as `verify --record` does.
    await asyncio.to_thread(
        custody.record_verification,
        result.archive.path,
        report.ok,
        [check.name for check in report.failures],
        keys.load_signing_key(lab.signing_private),
    )
    archive = result.archive.path
    console.print(
        "\n".join(
            [
                "",
                f"archive        {archive}",
                f"  sha256       {result.archive.sha256}",
                f"custody file   {archive}.custody.jsonl",
                f"workspace      {result.workspace}  ({workspace_holds(result)})",
                f"lab keys       {lab.recipient_private} (private), {lab.recipient_public}",
                f"collector key  {collector_public} (the key the lab trusts)",
                "",
                "what the lab runs next:",
                f"  cblr-collect verify {archive} --identity {lab.recipient_private} "
                f"--trust {collector_public} --record --signing-key {lab.signing_private}",
                f"  cblr-collect unseal {archive} --out unsealed/ "
                f"--identity {lab.recipient_private} --trust {collector_public} "
                f"--trust {lab.signing_public}",
            ]
        ),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    complete = result.complete and report.verified
    return EXIT_OK if complete else EXIT_PARTIAL
