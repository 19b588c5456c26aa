"""Registry capture over a scripted reader: hostile sub-key names, value name patterns."""

from __future__ import annotations

from collector.acquisition.registry_walk import capture_registry
from collector.liveresponse.errors import CommandError
from collector.liveresponse.models import RegistryKeyListing, RegistryValue

ROOT = "HKLM\\SOFTWARE\\Vendor"


class ScriptedRegistry:
    def __init__(self, keys: dict[str, RegistryKeyListing]) -> None:
        self.keys = {path.upper(): listing for path, listing in keys.items()}
        self.asked: list[str] = []

    async def reg_enum_key(self, key_path: str) -> RegistryKeyListing:
        self.asked.append(key_path)
        listing = self.keys.get(key_path.upper())
        if listing is None:
            raise CommandError("reg enum key", key_path, result_code=0x80070002)
        return listing


def sz(name: str, data: str) -> RegistryValue:
    return RegistryValue("REG_SZ", name, data)


async def test_sub_keys_with_separators_are_reported_not_followed() -> None:
    reader = ScriptedRegistry(
        {
            ROOT: RegistryKeyListing(values=(), sub_keys=("Good", "..\\..\\SAM", "nul\0key")),
            f"{ROOT}\\Good": RegistryKeyListing(values=(sz("A", "1"),), sub_keys=()),
        }
    )
    capture = await capture_registry(reader, ROOT, recursive=True)
    assert [key.path for key in capture.keys] == [ROOT, f"{ROOT}\\Good"]
    assert capture.rejected == [(ROOT, "..\\..\\SAM"), (ROOT, "nul\0key")]
    assert reader.asked == [ROOT, f"{ROOT}\\Good"]
    assert capture.to_json()["rejected_sub_keys"] == [
        {"path": ROOT, "name": "..\\..\\SAM"},
        {"path": ROOT, "name": "nul\0key"},
    ]


async def test_value_names_may_be_patterns() -> None:
    values = (sz("UserInitLogonScript", "a"), sz("UserInitMprLogonScript", "b"), sz("Path", "c"))
    reader = ScriptedRegistry({ROOT: RegistryKeyListing(values=values, sub_keys=())})
    capture = await capture_registry(reader, ROOT, recursive=False, value_names=["userinit*"])
    assert [v.value_name for v in capture.keys[0].values] == [
        "UserInitLogonScript",
        "UserInitMprLogonScript",
    ]
    exact = await capture_registry(reader, ROOT, recursive=False, value_names=["PATH"])
    assert [v.value_name for v in exact.keys[0].values] == ["Path"]
