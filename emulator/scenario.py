"""Scenario files: the tokens, devices and link models an emulator run serves.

A scenario is YAML, a built-in name (``emulator/scenarios/NAME.yaml``) or a path::

    name: workstation
    description: free text
    org_key: EMUORG01                 # the tenant's org key, in v6 paths (default EMUORG01)
    session_slots: 10                 # live response sessions open at once in the tenant
    service: {partial_get: range}     # variants of the service (service.py ServiceBehaviour)
    tokens:                           # optional; a random Live Response token is made when absent
      - {token: "SECRET/CONNECTOR", key_type: LIVE_RESPONSE}   # or API, SIEM, ...
    defaults:                         # every device takes these unless it overrides them
      link: {checkin_delay: 0.5, command_latency: 0.02, upload_bandwidth: 5MB,
             max_commands: 4, memdump_rate: 1GiB}
      timeouts: {check_in: 900, session: 900, command: 120}
    devices:
      - id: 37191
        hostname: WIN-IA9NQ1GN8OI
        os_version: Windows 10 x64
        address: 10.0.0.5
        online: true                   # or online_after: 30 (joins 30 s after first asked for)
        drives: ['A:\\', 'C:\\', 'D:\\']
        memory: {size: 4GiB, seed: 7}
        users:
          - {name: alice, sid: S-1-5-21-1-2-3-1001, logged_on: true}
        files:
          - {path: 'C:\\x\\a.txt', text: "literal UTF-8 text"}
          - {path: 'C:\\x\\b.bin', base64: "TVqQAAMAAAA="}
          - {path: 'C:\\x\\c.dat', random: {size: 64MiB, seed: 11}}
          - {path: 'C:\\x\\d', mount: ./local-folder}        # file or folder, relative to the YAML
          - {path: 'C:\\x\\empty', directory: true}
          # any file may add: attributes: [HIDDEN, SYSTEM], created/modified/accessed
          # (ISO 8601 UTC), locked: true, and
          # mutate: {after_reads: 2, action: grow|change|shrink|vanish, bytes: 4096}
        locked: ['C:\\pagefile.sys']
        shadow_copies: true               # false: VSS is disabled, esentutl /vss fails
        registry:
          'HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run':
            Updater: {type: REG_SZ, data: 'C:\\Users\\alice\\AppData\\Roaming\\upd.exe'}
          'HKLM\\SOFTWARE\\Empty\\Key': {}
        processes:
          - {pid: 4, path: System, command_line: "", username: 'NT AUTHORITY\\SYSTEM',
             sid: S-1-5-18, parent: 0, create_time: 2026-11-27T08:00:00Z}

Sizes are integers or strings such as ``64MiB``, ``5MB``, ``512KiB``; ``upload_bandwidth`` is
bytes per second (null: unlimited), one pipe that all of a device's uploads share; times are
finite seconds. REG_BINARY data is a hex string, REG_MULTI_SZ a list, REG_DWORD and REG_QWORD
integers. ``EmulatorServer(link=...)`` and ``cblr-collect emulator --link NAME`` give every
device one link model instead of its own, such as a named one of ``LINK_PRESETS``.

Every device also gets a Windows skeleton (``endpoint.py``): the system hives under
``System32\\config``, each user's profile folder with NTUSER.DAT and UsrClass.dat, the
ProfileList key, the computer name, and a default process tree when none is given.
Errors name the file and the field (``devices[2].files[5].random.size``) and what was expected.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .protocol import DEFAULT_ORG_KEY, LIVE_RESPONSE_KEY, REGISTRY_TYPES
from .service import ServiceBehaviour, ServiceSpecError

SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}
MUTATIONS = ("grow", "change", "shrink", "vanish")
ATTRIBUTES = ("READONLY", "HIDDEN", "SYSTEM", "ARCHIVE", "COMPRESSED", "ENCRYPTED", "TEMPORARY")
BASE_TIME = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


class ScenarioError(ValueError):
    """A scenario that cannot be served, with where and what was expected."""


@dataclass(frozen=True)
class LinkModel:
    """How a device's sensor reaches the cloud.

    ``checkin_delay``: seconds from session start to check-in; ``command_latency``: seconds
    each command waits before it runs; ``upload_bandwidth``: bytes/s of the one upload pipe
    that all of the device's ``get file`` uploads share (None: unlimited); ``max_commands``:
    commands the sensor runs at once (more wait, pending); ``memdump_rate``: bytes/s.
    """

    checkin_delay: float = 0.2
    command_latency: float = 0.0
    upload_bandwidth: int | None = None
    max_commands: int = 4
    memdump_rate: int = 2 * 1024**3


# Named link models for benchmarks and ``cblr-collect emulator --link``. A check-in is one
# round trip of the same link, so it takes the per-command latency.
LINK_PRESETS: dict[str, LinkModel] = {
    "loopback": LinkModel(checkin_delay=0.0, command_latency=0.0, max_commands=4),
    "lan": LinkModel(checkin_delay=0.1, command_latency=0.1, max_commands=4),
    "wan": LinkModel(
        checkin_delay=1.0, command_latency=1.0, upload_bandwidth=5 * 1000**2, max_commands=4
    ),
}


@dataclass(frozen=True)
class Timeouts:
    check_in: int = 900
    session: int = 900
    command: int = 120


@dataclass(frozen=True)
class TokenSpec:
    token: str
    key_type: str = LIVE_RESPONSE_KEY


@dataclass(frozen=True)
class UserSpec:
    name: str
    sid: str
    logged_on: bool = False


@dataclass(frozen=True)
class Mutation:
    after_reads: int
    action: str
    bytes: int = 4096


@dataclass(frozen=True)
class FileSpec:
    path: str
    kind: str  # text | base64 | random | mount | directory
    data: bytes = b""
    size: int = 0
    seed: int = 0
    mount: Path | None = None
    attributes: tuple[str, ...] = ()
    created: datetime | None = None
    modified: datetime | None = None
    accessed: datetime | None = None
    locked: bool = False
    mutate: Mutation | None = None


@dataclass(frozen=True)
class RegValueSpec:
    name: str
    type: str
    data: str | int | list[str] | bytes


@dataclass(frozen=True)
class ProcessSpec:
    pid: int
    path: str
    command_line: str = ""
    username: str = "NT AUTHORITY\\SYSTEM"
    sid: str = "S-1-5-18"
    parent: int = 0
    create_time: datetime = BASE_TIME


@dataclass(frozen=True)
class DeviceSpec:
    id: int
    hostname: str
    os_version: str = "Windows 10 x64"
    address: str = "10.0.0.10"
    online: bool = True
    online_after: float | None = None
    """Seconds after the first session is asked for until the device checks in: a laptop
    that is offline when a hunt starts and joins later (``online`` is then ignored)."""
    drives: tuple[str, ...] = ("C:\\",)
    memory_size: int = 1024**3
    memory_seed: int = 0
    users: tuple[UserSpec, ...] = ()
    files: tuple[FileSpec, ...] = ()
    locked: tuple[str, ...] = ()
    registry: dict[str, tuple[RegValueSpec, ...]] = field(default_factory=dict)
    processes: tuple[ProcessSpec, ...] = ()
    link: LinkModel = field(default_factory=LinkModel)
    timeouts: Timeouts = field(default_factory=Timeouts)
    shadow_copies: bool = True
    """False: the Volume Shadow Copy service is disabled, so ``esentutl /vss`` fails."""


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = ""
    session_slots: int = 10
    tokens: tuple[TokenSpec, ...] = ()
    devices: tuple[DeviceSpec, ...] = ()
    org_key: str = DEFAULT_ORG_KEY
    service: ServiceBehaviour = field(default_factory=ServiceBehaviour)

    def device(self, device_id: int) -> DeviceSpec:
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)

    def with_link(self, link: LinkModel) -> Scenario:
        """This scenario with every device on ``link``, whatever its file said."""
        return replace(self, devices=tuple(replace(d, link=link) for d in self.devices))


def link_preset(name: str) -> LinkModel:
    """A named link model of :data:`LINK_PRESETS`."""
    try:
        return LINK_PRESETS[name]
    except KeyError:
        raise ScenarioError(
            f"unknown link model {name!r}; known: {', '.join(LINK_PRESETS)}"
        ) from None


def builtin_names() -> list[str]:
    folder = resources.files("emulator") / "scenarios"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a built-in scenario by name, or a scenario file by path."""
    path = Path(name_or_path)
    if str(name_or_path) in builtin_names():
        source = resources.files("emulator") / "scenarios" / f"{name_or_path}.yaml"
        return parse_scenario(
            source.read_text(encoding="utf-8"), origin=f"{name_or_path} (built-in)"
        )
    if not path.is_file():
        raise ScenarioError(
            f"{name_or_path}: no such scenario file and no built-in scenario of that name "
            f"(built-ins: {', '.join(builtin_names())})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    return parse_scenario(text, origin=str(path), base_dir=path.parent)


def parse_scenario(
    text: str, *, origin: str = "<scenario>", base_dir: Path | None = None
) -> Scenario:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ScenarioError(f"{origin}:{where}: {problem}") from None
    return _Reader(origin, base_dir or Path.cwd()).scenario(document)


class _Reader:
    """Turns the parsed YAML into specs, naming the field of every problem."""

    def __init__(self, origin: str, base_dir: Path) -> None:
        self.origin = origin
        self.base_dir = base_dir

    def fail(self, where: str, expected: str, got: Any) -> ScenarioError:
        shown = repr(got)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return ScenarioError(f"{self.origin}: {where}: expected {expected}, got {shown}")

    def mapping(self, value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, "a mapping", value)
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                raise self.fail(where, f"only the fields {', '.join(sorted(allowed))}", key)
        return value

    def sequence(self, value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(where, "a list", value)
        return value

    def text(self, value: Any, where: str, *, empty: bool = False) -> str:
        if not isinstance(value, str) or (not empty and not value):
            raise self.fail(where, "a non-empty string" if not empty else "a string", value)
        return value

    def integer(self, value: Any, where: str, *, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(where, f"an integer >= {minimum}", value)
        return value

    def number(self, value: Any, where: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise self.fail(where, "a finite number of seconds >= 0", value)
        return float(value)

    def flag(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "true or false", value)
        return value

    def size(self, value: Any, where: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", value, re.IGNORECASE)
            if match:
                return int(Fraction(match[1]) * SIZE_UNITS[(match[2] or "").upper()])
        raise self.fail(where, "a size such as 4096, 64MiB or 5MB", value)

    def when(self, value: Any, where: str) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        raise self.fail(where, "an ISO 8601 UTC time such as 2026-11-27T08:00:00Z", value)

    def scenario(self, document: Any) -> Scenario:
        doc = self.mapping(
            document,
            "top level",
            {
                "name",
                "description",
                "org_key",
                "session_slots",
                "service",
                "tokens",
                "defaults",
                "devices",
            },
        )
        if not doc:
            raise self.fail("top level", "a scenario mapping with name and devices", document)
        defaults = self.mapping(doc.get("defaults"), "defaults", {"link", "timeouts"})
        link = self.link(defaults.get("link"), "defaults.link", LinkModel())
        timeouts = self.timeouts(defaults.get("timeouts"), "defaults.timeouts", Timeouts())
        devices = tuple(
            self.device(item, f"devices[{i}]", link, timeouts)
            for i, item in enumerate(self.sequence(doc.get("devices"), "devices"))
        )
        if not devices:
            raise self.fail("devices", "at least one device", doc.get("devices"))
        seen: set[int] = set()
        for i, device in enumerate(devices):
            if device.id in seen:
                raise self.fail(f"devices[{i}].id", "a device id not used before", device.id)
            seen.add(device.id)
        tokens = tuple(
            self.token(item, f"tokens[{i}]")
            for i, item in enumerate(self.sequence(doc.get("tokens"), "tokens"))
        )
        return Scenario(
            name=self.text(doc.get("name"), "name"),
            description=self.text(doc.get("description", ""), "description", empty=True),
            session_slots=self.integer(doc.get("session_slots", 10), "session_slots", minimum=1),
            tokens=tokens,
            devices=devices,
            org_key=self.org_key(doc.get("org_key", DEFAULT_ORG_KEY)),
            service=self.service(doc.get("service")),
        )

    def org_key(self, value: Any) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9]{1,32}", value):
            raise self.fail("org_key", "letters and digits such as EMUORG01", value)
        return value

    def service(self, value: Any) -> ServiceBehaviour:
        if value is None:
            return ServiceBehaviour()
        if not isinstance(value, dict):
            raise self.fail("service", "a mapping of service settings", value)
        try:
            return ServiceBehaviour.from_mapping(value)
        except ServiceSpecError as exc:
            raise ScenarioError(f"{self.origin}: {exc}") from None

    def token(self, value: Any, where: str) -> TokenSpec:
        item = self.mapping(value, where, {"token", "key_type"})
        token = self.text(item.get("token"), f"{where}.token")
        if not re.fullmatch(r"[^/\s]+/[^/\s]+", token):
            raise self.fail(f"{where}.token", "SECRET/CONNECTOR_ID", "<redacted>")
        key_type = self.text(item.get("key_type", LIVE_RESPONSE_KEY), f"{where}.key_type")
        return TokenSpec(token=token, key_type=key_type.upper())

    def link(self, value: Any, where: str, base: LinkModel) -> LinkModel:
        item = self.mapping(
            value,
            where,
            {
                "checkin_delay",
                "command_latency",
                "upload_bandwidth",
                "max_commands",
                "memdump_rate",
            },
        )
        bandwidth = item.get("upload_bandwidth", base.upload_bandwidth)
        return LinkModel(
            checkin_delay=self.number(
                item.get("checkin_delay", base.checkin_delay), f"{where}.checkin_delay"
            ),
            command_latency=self.number(
                item.get("command_latency", base.command_latency), f"{where}.command_latency"
            ),
            upload_bandwidth=None
            if bandwidth is None
            else self.size(bandwidth, f"{where}.upload_bandwidth") or None,
            max_commands=self.integer(
                item.get("max_commands", base.max_commands), f"{where}.max_commands", minimum=1
            ),
            memdump_rate=self.size(
                item.get("memdump_rate", base.memdump_rate), f"{where}.memdump_rate"
            )
            or 1,
        )

    def timeouts(self, value: Any, where: str, base: Timeouts) -> Timeouts:
        item = self.mapping(value, where, {"check_in", "session", "command"})
        return Timeouts(
            check_in=self.integer(
                item.get("check_in", base.check_in), f"{where}.check_in", minimum=1
            ),
            session=self.integer(item.get("session", base.session), f"{where}.session", minimum=1),
            command=self.integer(item.get("command", base.command), f"{where}.command", minimum=1),
        )

    def device(self, value: Any, where: str, link: LinkModel, timeouts: Timeouts) -> DeviceSpec:
        item = self.mapping(
            value,
            where,
            {
                "id",
                "hostname",
                "os_version",
                "address",
                "online",
                "online_after",
                "drives",
                "memory",
                "users",
                "files",
                "locked",
                "registry",
                "processes",
                "link",
                "timeouts",
                "shadow_copies",
            },
        )
        memory = self.mapping(item.get("memory"), f"{where}.memory", {"size", "seed"})
        drives = tuple(
            self.drive(d, f"{where}.drives[{i}]")
            for i, d in enumerate(self.sequence(item.get("drives", ["C:\\"]), f"{where}.drives"))
        )
        return DeviceSpec(
            id=self.integer(item.get("id"), f"{where}.id", minimum=1),
            hostname=self.text(item.get("hostname"), f"{where}.hostname"),
            os_version=self.text(item.get("os_version", "Windows 10 x64"), f"{where}.os_version"),
            address=self.text(item.get("address", "10.0.0.10"), f"{where}.address"),
            online=self.flag(item.get("online", True), f"{where}.online"),
            online_after=(
                None
                if item.get("online_after") is None
                else self.number(item["online_after"], f"{where}.online_after")
            ),
            drives=drives or ("C:\\",),
            memory_size=self.size(memory.get("size", 1024**3), f"{where}.memory.size"),
            memory_seed=self.integer(memory.get("seed", 0), f"{where}.memory.seed"),
            users=tuple(
                self.user(u, f"{where}.users[{i}]")
                for i, u in enumerate(self.sequence(item.get("users"), f"{where}.users"))
            ),
            files=tuple(
                self.file(f, f"{where}.files[{i}]")
                for i, f in enumerate(self.sequence(item.get("files"), f"{where}.files"))
            ),
            locked=tuple(
                self.text(p, f"{where}.locked[{i}]")
                for i, p in enumerate(self.sequence(item.get("locked"), f"{where}.locked"))
            ),
            registry=self.registry(item.get("registry"), f"{where}.registry"),
            processes=tuple(
                self.process(p, f"{where}.processes[{i}]")
                for i, p in enumerate(self.sequence(item.get("processes"), f"{where}.processes"))
            ),
            link=self.link(item.get("link"), f"{where}.link", link),
            timeouts=self.timeouts(item.get("timeouts"), f"{where}.timeouts", timeouts),
            shadow_copies=self.flag(item.get("shadow_copies", True), f"{where}.shadow_copies"),
        )

    def drive(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]:\\?", value):
            raise self.fail(where, "a drive such as 'C:\\'", value)
        return value[0].upper() + ":\\"

    def user(self, value: Any, where: str) -> UserSpec:
        item = self.mapping(value, where, {"name", "sid", "logged_on"})
        name = self.text(item.get("name"), f"{where}.name")
        if re.search(r'[\\/:*?"<>|\x00-\x1f]', name):
            raise self.fail(f"{where}.name", "a user name valid as a folder name", name)
        sid = self.text(item.get("sid"), f"{where}.sid")
        if not re.fullmatch(r"S-1-\d+(-\d+)+", sid):
            raise self.fail(f"{where}.sid", "a SID such as S-1-5-21-1-2-3-1001", sid)
        return UserSpec(name, sid, self.flag(item.get("logged_on", False), f"{where}.logged_on"))

    def file(self, value: Any, where: str) -> FileSpec:
        kinds = ("text", "base64", "random", "mount", "directory")
        item = self.mapping(
            value,
            where,
            {"path", *kinds, "attributes", "created", "modified", "accessed", "locked", "mutate"},
        )
        given = [k for k in kinds if k in item]
        if len(given) != 1:
            raise self.fail(where, f"exactly one of {', '.join(kinds)}", sorted(item))
        kind = given[0]
        spec: dict[str, Any] = {"path": self.text(item.get("path"), f"{where}.path"), "kind": kind}
        if kind == "text":
            spec["data"] = self.text(item["text"], f"{where}.text", empty=True).encode("utf-8")
        elif kind == "base64":
            try:
                spec["data"] = base64.b64decode(
                    self.text(item["base64"], f"{where}.base64"), validate=True
                )
            except binascii.Error:
                raise self.fail(f"{where}.base64", "base64 text", item["base64"]) from None
        elif kind == "random":
            rnd = self.mapping(item["random"], f"{where}.random", {"size", "seed"})
            spec["size"] = self.size(rnd.get("size"), f"{where}.random.size")
            spec["seed"] = self.integer(rnd.get("seed", 0), f"{where}.random.seed")
        elif kind == "mount":
            local = self.base_dir / self.text(item["mount"], f"{where}.mount")
            if not local.exists():
                raise self.fail(f"{where}.mount", "an existing local file or folder", str(local))
            spec["mount"] = local
        elif not self.flag(item["directory"], f"{where}.directory"):
            raise self.fail(f"{where}.directory", "true", item["directory"])
        attributes = tuple(
            self.text(a, f"{where}.attributes[{i}]").upper()
            for i, a in enumerate(self.sequence(item.get("attributes"), f"{where}.attributes"))
        )
        for i, attribute in enumerate(attributes):
            if attribute not in ATTRIBUTES:
                raise self.fail(
                    f"{where}.attributes[{i}]", f"one of {', '.join(ATTRIBUTES)}", attribute
                )
        if "mutate" in item:
            spec["mutate"] = self.mutation(item["mutate"], f"{where}.mutate")
        return FileSpec(
            **spec,
            attributes=attributes,
            created=self.when(item.get("created"), f"{where}.created"),
            modified=self.when(item.get("modified"), f"{where}.modified"),
            accessed=self.when(item.get("accessed"), f"{where}.accessed"),
            locked=self.flag(item.get("locked", False), f"{where}.locked"),
        )

    def mutation(self, value: Any, where: str) -> Mutation:
        item = self.mapping(value, where, {"after_reads", "action", "bytes"})
        action = item.get("action")
        if action not in MUTATIONS:
            raise self.fail(f"{where}.action", f"one of {', '.join(MUTATIONS)}", action)
        return Mutation(
            after_reads=self.integer(item.get("after_reads", 1), f"{where}.after_reads", minimum=1),
            action=action,
            bytes=self.size(item.get("bytes", 4096), f"{where}.bytes"),
        )

    def registry(self, value: Any, where: str) -> dict[str, tuple[RegValueSpec, ...]]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, "a mapping of key paths to values", value)
        out: dict[str, tuple[RegValueSpec, ...]] = {}
        for key_path, values in value.items():
            key_where = f"{where}[{key_path!r}]"
            self.text(key_path, key_where)
            if values is None:
                values = {}
            if not isinstance(values, dict):
                raise self.fail(key_where, "a mapping of value names to {type, data}", values)
            out[key_path] = tuple(
                self.reg_value(name, spec, f"{key_where}[{name!r}]")
                for name, spec in values.items()
            )
        return out

    def reg_value(self, name: Any, value: Any, where: str) -> RegValueSpec:
        name = self.text(name, where, empty=True)
        item = self.mapping(value, where, {"type", "data"})
        kind = item.get("type")
        if kind not in REGISTRY_TYPES:
            raise self.fail(f"{where}.type", f"one of {', '.join(REGISTRY_TYPES)}", kind)
        return RegValueSpec(name, kind, self.reg_data(kind, item.get("data"), f"{where}.data"))

    def reg_data(self, kind: str, data: Any, where: str) -> str | int | list[str] | bytes:
        if kind in ("REG_SZ", "REG_EXPAND_SZ"):
            return self.text(data if data is not None else "", where, empty=True)
        if kind == "REG_MULTI_SZ":
            return [
                self.text(s, f"{where}[{i}]", empty=True)
                for i, s in enumerate(self.sequence(data, where))
            ]
        if kind in ("REG_DWORD", "REG_QWORD"):
            limit = 2**32 if kind == "REG_DWORD" else 2**64
            if isinstance(data, bool) or not isinstance(data, int) or not 0 <= data < limit:
                raise self.fail(where, f"an unsigned integer below {limit}", data)
            return data
        try:
            return bytes.fromhex(self.text(data if data is not None else "", where, empty=True))
        except ValueError:
            raise self.fail(where, "hex text such as '4d5a9000'", data) from None

    def process(self, value: Any, where: str) -> ProcessSpec:
        item = self.mapping(
            value,
            where,
            {"pid", "path", "command_line", "username", "sid", "parent", "create_time"},
        )
        return ProcessSpec(
            pid=self.integer(item.get("pid"), f"{where}.pid"),
            path=self.text(item.get("path"), f"{where}.path"),
            command_line=self.text(
                item.get("command_line", ""), f"{where}.command_line", empty=True
            ),
            username=self.text(item.get("username", "NT AUTHORITY\\SYSTEM"), f"{where}.username"),
            sid=self.text(item.get("sid", "S-1-5-18"), f"{where}.sid"),
            parent=self.integer(item.get("parent", 0), f"{where}.parent"),
            create_time=self.when(item.get("create_time"), f"{where}.create_time") or BASE_TIME,
        )
