"""A device's runtime state: disks, registry, processes, and the link to the cloud."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .content import BytesContent, Content, LazyContent, MountedContent, RandomContent
from .hive import build_hive, deleted_key_remnant
from .protocol import HRESULT_TEXT
from .registry import Registry, RegKey, RegValue, to_hive_tree
from .scenario import BASE_TIME, DeviceSpec, FileSpec, ScenarioError, UserSpec
from .vfs import Node, SensorError, VirtualFileSystem
from .winpath import name_key

BASE = BASE_TIME.timestamp()
PROFILE_LIST = "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\ProfileList"
SYSTEM_HIVES = {
    "SYSTEM": "HKLM\\SYSTEM",
    "SOFTWARE": "HKLM\\SOFTWARE",
    "SAM": "HKLM\\SAM",
    "SECURITY": "HKLM\\SECURITY",
    "DEFAULT": "HKU\\.DEFAULT",
}


class UploadPipe:
    """The sensor's upload link: one shared bandwidth, served first come, first served.

    Each upload reserves the interval it will occupy; its progress at any instant follows
    from that reservation, so ``size_uploaded`` grows at exactly the modeled rate.
    """

    def __init__(self, bandwidth: int | None) -> None:
        self.bandwidth = bandwidth
        self.free_at = 0.0

    def reserve(self, size: int) -> tuple[float, float]:
        now = time.monotonic()
        if not self.bandwidth:
            return now, now
        start = max(now, self.free_at)
        self.free_at = start + size / self.bandwidth
        return start, self.free_at


@dataclass
class Process:
    pid: int
    path: str
    command_line: str
    username: str
    sid: str
    parent: int
    create_time: int

    def to_wire(self, parent_create_time: int) -> dict:
        return {
            "pid": self.pid,
            "create_time": self.create_time,
            "proc_guid": f"{self.pid:08x}-{self.create_time:08x}",
            "path": self.path,
            "command_line": self.command_line,
            "sid": self.sid,
            "username": self.username,
            "parent": self.parent,
            "parent_guid": f"{self.parent:08x}-{parent_create_time:08x}" if self.parent else "",
            "parent_create_time": parent_create_time,
        }


@dataclass
class Endpoint:
    spec: DeviceSpec
    fs: VirtualFileSystem
    registry: Registry
    processes: dict[int, Process]
    offline_hives: dict[str, RegKey] = field(default_factory=dict)
    online: bool = True
    online_event: asyncio.Event | None = None
    slots: asyncio.Semaphore | None = None
    pipe: UploadPipe | None = None
    next_pid: int = 5000
    joining: bool = False

    def bind_loop(self) -> None:
        """Create the asyncio primitives inside the serving loop."""
        self.online_event = asyncio.Event()
        if self.spec.online_after is not None:
            self.online = False  # until online_after seconds after the first session request
        if self.online:
            self.online_event.set()
        self.slots = asyncio.Semaphore(self.spec.link.max_commands)
        self.pipe = UploadPipe(self.spec.link.upload_bandwidth)

    def asked_for(self) -> None:
        """A session was requested: a device with ``online_after`` starts its countdown."""
        if self.spec.online_after is not None and not self.joining:
            self.joining = True
            asyncio.get_running_loop().call_later(self.spec.online_after, self.set_online, True)

    def set_online(self, online: bool) -> None:
        self.online = online
        if self.online_event is not None:
            (self.online_event.set if online else self.online_event.clear)()

    @property
    def memory(self) -> Content:
        return RandomContent(self.spec.memory_size, self.spec.memory_seed)

    def process_list(self) -> list[dict]:
        times = {p.pid: p.create_time for p in self.processes.values()}
        return [p.to_wire(times.get(p.parent, 0)) for p in self.processes.values()]

    def spawn(self, command_line: str, path: str) -> Process:
        self.next_pid += 4
        process = Process(
            pid=self.next_pid,
            path=path,
            command_line=command_line,
            username="NT AUTHORITY\\SYSTEM",
            sid="S-1-5-18",
            parent=next(iter(self.processes), 0),
            create_time=int(time.time()),
        )
        self.processes[process.pid] = process
        return process

    def hive_on_disk(self, key_path: str) -> RegKey:
        """The key a hive file on disk holds: a user's hive is there whether or not the user
        is logged on (then it is loaded under HKU too)."""
        parts = [p for p in key_path.split("\\") if p]
        if (
            len(parts) == 2
            and name_key(parts[0]) in ("HKU", "HKEY_USERS")
            and name_key(parts[1]) in self.offline_hives
        ):
            return self.offline_hives[name_key(parts[1])]
        return self.registry.find(key_path)


def build_endpoint(spec: DeviceSpec, where: str = "") -> Endpoint:
    """The device of a scenario, with the Windows skeleton every device has.

    ``where`` is the device's place in the scenario (``devices[3]``), for error messages.
    """
    fs = VirtualFileSystem(spec.drives, BASE)
    registry = Registry(BASE)
    endpoint = Endpoint(spec, fs, registry, processes={}, online=spec.online)

    def field(name: str) -> str:
        return f"{where}.{name}" if where else ""

    try:
        _add_skeleton(endpoint)
    except SensorError as exc:
        raise _cannot_place(spec, "C:", field("drives"), exc) from None
    for i, item in enumerate(spec.files):
        try:
            _add_file(fs, item)
        except SensorError as exc:
            raise _cannot_place(spec, item.path, field(f"files[{i}].path"), exc) from None
    for i, path in enumerate(spec.locked):
        try:
            fs.lookup(path).locked = True
        except SensorError as exc:
            raise _cannot_place(spec, path, field(f"locked[{i}]"), exc) from None
    for key_path, values in spec.registry.items():
        try:
            registry.create(key_path, BASE)
        except SensorError:
            raise ScenarioError(
                f"device {spec.id}: registry key {key_path!r} has no known root"
            ) from None
        for value in values:
            registry.put(key_path, RegValue(value.name, value.type, value.data), BASE)
    _add_user_hives(endpoint)
    _add_processes(endpoint)
    return endpoint


def _cannot_place(spec: DeviceSpec, path: str, field: str, exc: SensorError) -> ScenarioError:
    reason = exc.detail if exc.detail != path else HRESULT_TEXT.get(exc.hresult, exc.detail)
    where = f" ({field})" if field else ""
    return ScenarioError(f"device {spec.id}: cannot place {path!r} on its disks: {reason}{where}")


def _add_file(fs: VirtualFileSystem, item: FileSpec) -> None:
    when = {
        "created": item.created.timestamp() if item.created else BASE,
        "modified": item.modified.timestamp() if item.modified else BASE,
        "accessed": item.accessed.timestamp() if item.accessed else BASE,
    }
    if item.kind == "directory":
        node = fs.makedirs(item.path, BASE)
        node.created, node.modified, node.accessed = when.values()
        node.attributes = item.attributes
        return
    if item.kind == "mount" and item.mount and item.mount.is_dir():
        _mount_folder(fs, item.path, item.mount)
        return
    content: Content
    if item.kind == "random":
        content = RandomContent(item.size, item.seed)
    elif item.kind == "mount" and item.mount:
        content = MountedContent(item.mount)
    else:
        content = BytesContent(item.data)
    node = fs.add_file(
        item.path, content, attributes=item.attributes, locked=item.locked, mutate=item.mutate
    )
    node.created, node.modified, node.accessed = when["created"], when["modified"], when["accessed"]


def _mount_folder(fs: VirtualFileSystem, at: str, folder) -> None:
    fs.makedirs(at, BASE)
    for local in sorted(folder.rglob("*")):
        remote = at.rstrip("\\") + "\\" + "\\".join(local.relative_to(folder).parts)
        if local.is_dir():
            fs.makedirs(remote, BASE)
        elif local.is_file():
            stat = local.stat()
            node = fs.add_file(remote, MountedContent(local))
            node.created = node.accessed = stat.st_mtime
            node.modified = stat.st_mtime


def _add_skeleton(endpoint: Endpoint) -> None:
    fs, registry, spec = endpoint.fs, endpoint.registry, endpoint.spec
    for folder in (
        "C:\\Windows\\System32\\config",
        "C:\\Windows\\Temp",
        "C:\\ProgramData",
        "C:\\Program Files",
        "C:\\Program Files (x86)",
        "C:\\Users\\Public",
        "C:\\Users\\Default",
    ):
        fs.makedirs(folder, BASE)

    def sz(key: str, name: str, data, kind: str = "REG_SZ") -> None:
        registry.put(key, RegValue(name, kind, data), BASE)

    for name in ("Current", "Default", "LastKnownGood"):
        sz("HKLM\\SYSTEM\\Select", name, 1, "REG_DWORD")
    sz("HKLM\\SYSTEM\\Select", "Failed", 0, "REG_DWORD")
    for leaf in ("ComputerName", "ActiveComputerName"):
        sz(
            f"HKLM\\SYSTEM\\ControlSet001\\Control\\ComputerName\\{leaf}",
            "ComputerName",
            spec.hostname.upper(),
        )
    environment = "HKLM\\SYSTEM\\ControlSet001\\Control\\Session Manager\\Environment"
    sz(environment, "ComSpec", "%SystemRoot%\\system32\\cmd.exe", "REG_EXPAND_SZ")
    sz(environment, "TEMP", "%SystemRoot%\\TEMP", "REG_EXPAND_SZ")
    sz(environment, "TMP", "%SystemRoot%\\TEMP", "REG_EXPAND_SZ")
    sz(environment, "windir", "%SystemRoot%", "REG_EXPAND_SZ")
    sz(environment, "OS", "Windows_NT")
    current_version = "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion"
    sz(current_version, "SystemRoot", "C:\\Windows")
    sz(PROFILE_LIST, "ProfilesDirectory", "%SystemDrive%\\Users", "REG_EXPAND_SZ")
    sz(PROFILE_LIST, "Default", "%SystemDrive%\\Users\\Default", "REG_EXPAND_SZ")
    sz(PROFILE_LIST, "Public", "%SystemDrive%\\Users\\Public", "REG_EXPAND_SZ")
    service_profiles = {
        "S-1-5-18": "%systemroot%\\system32\\config\\systemprofile",
        "S-1-5-19": "%systemroot%\\ServiceProfiles\\LocalService",
        "S-1-5-20": "%systemroot%\\ServiceProfiles\\NetworkService",
    }
    for sid, image in service_profiles.items():
        sz(f"{PROFILE_LIST}\\{sid}", "ProfileImagePath", image, "REG_EXPAND_SZ")
        sz(f"{PROFILE_LIST}\\{sid}", "Flags", 12, "REG_DWORD")
        registry.create(f"HKU\\{sid}", BASE)
    registry.create("HKU\\.DEFAULT", BASE)
    for index, (hive, key) in enumerate(SYSTEM_HIVES.items()):
        registry.create(key, BASE)
        node = fs.add_file(
            f"C:\\Windows\\System32\\config\\{hive}",
            LazyContent(lambda key=key, hive=hive: endpoint_hive_bytes(endpoint, key, hive)),
            attributes=("ARCHIVE",),
            locked=True,
        )
        _age_hive(node, index)
    for user in spec.users:
        _add_user(endpoint, user)


def _add_user(endpoint: Endpoint, user: UserSpec) -> None:
    fs, registry = endpoint.fs, endpoint.registry
    home = f"C:\\Users\\{user.name}"
    for folder in ("Desktop", "Documents", "Downloads", "AppData\\Roaming", "AppData\\LocalLow"):
        fs.makedirs(f"{home}\\{folder}", BASE)
    profile = f"{PROFILE_LIST}\\{user.sid}"
    registry.put(profile, RegValue("ProfileImagePath", "REG_EXPAND_SZ", home), BASE)
    registry.put(profile, RegValue("Flags", "REG_DWORD", 0), BASE)
    registry.put(profile, RegValue("State", "REG_DWORD", 0), BASE)
    registry.put(profile, RegValue("Sid", "REG_BINARY", sid_bytes(user.sid)), BASE)
    registry.create(f"HKU\\{user.sid}\\Software\\Microsoft\\Windows\\CurrentVersion", BASE)
    registry.create(f"HKU\\{user.sid}_Classes", BASE)
    hives = {
        f"{home}\\NTUSER.DAT": (f"HKU\\{user.sid}", "NTUSER.DAT"),
        f"{home}\\AppData\\Local\\Microsoft\\Windows\\UsrClass.dat": (
            f"HKU\\{user.sid}_Classes",
            "UsrClass.dat",
        ),
    }
    for index, (path, (key, name)) in enumerate(hives.items()):
        node = fs.add_file(
            path,
            LazyContent(lambda key=key, name=name: endpoint_hive_bytes(endpoint, key, name)),
            attributes=("HIDDEN", "SYSTEM", "ARCHIVE"),
            locked=user.logged_on,
        )
        _age_hive(node, len(SYSTEM_HIVES) + index)


def _add_user_hives(endpoint: Endpoint) -> None:
    """Users who are not logged on have their hives on disk only, not under HKU."""
    for user in endpoint.spec.users:
        if user.logged_on:
            continue
        for sid in (user.sid, f"{user.sid}_Classes"):
            key = endpoint.registry.detach(f"HKU\\{sid}")
            if key is not None:
                endpoint.offline_hives[name_key(sid)] = key


HIVE_INSTALLED = BASE - 400 * 86400
"""When the skeleton's hives were created (Windows was installed)."""
HIVE_LAST_WRITTEN = BASE - 3 * 86400
"""About when the skeleton's hives were last written: days before any collection, so a
collector that records its temporary copy's times instead of the file's is caught."""


def _age_hive(node: Node, index: int) -> None:
    """Give a hive file its own times, distinct from its neighbours' and from BASE."""
    node.created = HIVE_INSTALLED + 60 * index
    node.modified = HIVE_LAST_WRITTEN + 3607 * index
    node.accessed = HIVE_LAST_WRITTEN + 3607 * index + 1800


def endpoint_hive_bytes(endpoint: Endpoint, key_path: str, file_name: str) -> bytes:
    """The bytes of the hive file on disk that holds ``key_path``: what ``reg save`` would
    write, plus the slack of a deleted key that only a raw copy (a shadow copy) carries."""
    key = endpoint.hive_on_disk(key_path)
    remnant = deleted_key_remnant(f"Deleted-{file_name}", datetime.fromtimestamp(BASE, UTC))
    return build_hive(
        to_hive_tree(key),
        file_name=file_name,
        when=datetime.fromtimestamp(BASE, UTC),
        slack=(remnant,),
    )


def hive_bytes(key: RegKey, file_name: str) -> bytes:
    """``key`` and its subtree as a regf hive file, as ``reg.exe save`` writes it."""
    return build_hive(
        to_hive_tree(key), file_name=file_name, when=datetime.fromtimestamp(BASE, UTC)
    )


def sid_bytes(sid: str) -> bytes:
    """The binary form of a SID, as ProfileList's ``Sid`` value holds it."""
    parts = [int(p) for p in sid.split("-")[1:]]
    revision, authority, subs = parts[0], parts[1], parts[2:]
    out = bytes([revision, len(subs)]) + authority.to_bytes(6, "big")
    return out + b"".join(s.to_bytes(4, "little") for s in subs)


def _add_processes(endpoint: Endpoint) -> None:
    specs = endpoint.spec.processes
    if specs:
        for p in specs:
            endpoint.processes[p.pid] = Process(
                p.pid,
                p.path,
                p.command_line,
                p.username,
                p.sid,
                p.parent,
                int(p.create_time.timestamp()),
            )
        endpoint.next_pid = max(endpoint.processes) + 4 - max(endpoint.processes) % 4
        return
    boot = int(BASE)
    system32 = "\\Device\\HarddiskVolume2\\Windows\\System32"
    tree = [
        (4, "System", "", 0),
        (388, f"{system32}\\smss.exe", "\\SystemRoot\\System32\\smss.exe", 4),
        (
            512,
            f"{system32}\\csrss.exe",
            "%SystemRoot%\\system32\\csrss.exe ObjectDirectory=\\Windows",
            388,
        ),
        (596, f"{system32}\\wininit.exe", "wininit.exe", 388),
        (672, f"{system32}\\services.exe", "C:\\Windows\\system32\\services.exe", 596),
        (684, f"{system32}\\lsass.exe", "C:\\Windows\\system32\\lsass.exe", 596),
        (
            812,
            f"{system32}\\svchost.exe",
            "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p",
            672,
        ),
    ]
    for pid, path, command_line, parent in tree:
        endpoint.processes[pid] = Process(
            pid, path, command_line, "NT AUTHORITY\\SYSTEM", "S-1-5-18", parent, boot
        )
    for i, user in enumerate(u for u in endpoint.spec.users if u.logged_on):
        pid = 4000 + 4 * i
        endpoint.processes[pid] = Process(
            pid,
            "\\Device\\HarddiskVolume2\\Windows\\explorer.exe",
            "C:\\Windows\\Explorer.EXE",
            f"{endpoint.spec.hostname.upper()}\\{user.name}",
            user.sid,
            0,
            boot + 60,
        )
