"""The check before a run uses documented routes only: v6 lists sessions, v3 looks up a device.

The v3 reference documents no list of sessions (``GET .../session`` without an id); a client
that relied on it would fail on a server that, rightly, does not serve it.
"""

from __future__ import annotations

import pytest
from conftest import DEVICE_ID, LR_TOKEN

from collector.fleet.run import ServerUnreachable, check_server
from collector.liveresponse.client import LiveResponseClient
from collector.liveresponse.dialect import dialect_for
from emulator.server import EmulatorServer


@pytest.mark.parametrize("api", ["v3", "v6"])
async def test_the_preflight_uses_only_documented_routes(
    emulator: EmulatorServer, api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    for name in ("list_sessions", "get_device"):
        original = getattr(LiveResponseClient, name)

        async def recorded(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return await _original(self, *args, **kwargs)

        monkeypatch.setattr(LiveResponseClient, name, recorded)
    dialect = dialect_for(api, emulator.org_key if api == "v6" else None)
    async with LiveResponseClient(emulator.url, LR_TOKEN, dialect=dialect) as client:
        await check_server(client, DEVICE_ID)
    assert calls == (["list_sessions"] if api == "v6" else ["get_device"])


async def test_a_refused_token_stops_the_run_before_it_starts(emulator: EmulatorServer) -> None:
    async with LiveResponseClient(emulator.url, "NOTAKEY0000000/NOPE") as client:
        with pytest.raises(ServerUnreachable):
            await check_server(client, DEVICE_ID)
