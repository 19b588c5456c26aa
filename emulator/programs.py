"""The few programs a collector runs through ``create process``, and what they print."""

from __future__ import annotations

import asyncio
import hashlib

from .content import BytesContent, iter_blocks
from .endpoint import Endpoint, hive_bytes
from .protocol import E_ACCESS_DENIED, E_INVALID_NAME, HRESULT_TEXT
from .vfs import SensorError
from .winpath import DEFAULT_CWD, BadPath, absolute_path

WIN32_NAMES = {
    0x80070002: "ERROR_FILE_NOT_FOUND",
    0x80070003: "ERROR_PATH_NOT_FOUND",
    0x80070005: "ERROR_ACCESS_DENIED",
    0x80070020: "ERROR_SHARING_VIOLATION",
}
HASH_ALGORITHMS = {"MD2", "MD4", "MD5", "SHA1", "SHA256", "SHA384", "SHA512"}


def split_command_line(command_line: str) -> list[str]:
    """CommandLineToArgvW, simplified: whitespace separates, double quotes group."""
    args: list[str] = []
    current: list[str] = []
    quoted = in_arg = False
    for char in command_line:
        if char == '"':
            quoted, in_arg = not quoted, True
        elif char in " \t" and not quoted:
            if in_arg:
                args.append("".join(current))
                current, in_arg = [], False
        else:
            current.append(char)
            in_arg = True
    if in_arg:
        args.append("".join(current))
    return args


def program_name(argv: list[str]) -> str:
    name = argv[0].replace("/", "\\").rsplit("\\", 1)[-1].lower() if argv else ""
    return name.removesuffix(".exe")


async def run_program(
    endpoint: Endpoint, command_line: str, cwd: str = DEFAULT_CWD
) -> tuple[int, bytes]:
    """Run ``command_line`` on the endpoint in the absolute folder ``cwd``: its exit code and
    what it wrote to stdout/stderr. Relative paths in its arguments resolve against ``cwd``."""
    argv = split_command_line(command_line)
    name = program_name(argv)
    if name == "cmd":
        rest = argv[1:]
        if rest and rest[0].lower() in ("/c", "/k"):
            return await _builtin(endpoint, rest[1:], cwd)
        return 0, b""
    return await _builtin(endpoint, argv, cwd)


async def _builtin(endpoint: Endpoint, argv: list[str], cwd: str) -> tuple[int, bytes]:
    name = program_name(argv)
    args = argv[1:]
    if name == "reg" and args and args[0].lower() == "save":
        return _reg_save(endpoint, args[1:], cwd)
    if name == "esentutl" and args and args[0].lower() == "/y":
        return _esentutl_copy(endpoint, args[1:], cwd)
    if name == "certutil" and args and args[0].lower() == "-hashfile":
        return await _certutil_hashfile(endpoint, args[1:], cwd)
    if name == "ipconfig":
        return 0, _ipconfig(endpoint).encode()
    if name == "netstat":
        return 0, _netstat(endpoint).encode()
    if name == "tasklist":
        return 0, _tasklist(endpoint).encode()
    if name == "hostname":
        return 0, f"{endpoint.spec.hostname}\r\n".encode()
    if name == "echo":
        return 0, (" ".join(args) + "\r\n").encode()
    return 0, b""


def _resolve(path: str, cwd: str) -> str:
    """A program's path argument made absolute against its working directory."""
    try:
        return absolute_path(path, cwd)
    except BadPath:
        raise SensorError(E_INVALID_NAME, path) from None


def _reg_save(endpoint: Endpoint, args: list[str], cwd: str) -> tuple[int, bytes]:
    positional = [a for a in args if not a.startswith("/")]
    overwrite = any(a.lower() == "/y" for a in args)
    if len(positional) != 2:
        return 1, b'ERROR: Invalid syntax.\r\nType "REG SAVE /?" for usage.\r\n'
    key_path, given_target = positional
    try:
        key = endpoint.registry.find(key_path)  # loaded keys only, as RegSaveKey sees them
    except SensorError:
        return 1, b"ERROR: The system was unable to find the specified registry key or value.\r\n"
    try:
        target = _resolve(given_target, cwd)
    except SensorError as exc:
        return 1, f"ERROR: {HRESULT_TEXT[exc.hresult]}\r\n".encode()
    if endpoint.fs.exists(target) and not overwrite:
        return 1, b"ERROR: The file already exists; use /y to overwrite it.\r\n"
    try:
        hive = hive_bytes(key, given_target)
        endpoint.fs.replace_content(target, BytesContent(hive))
    except SensorError as exc:
        return 1, f"ERROR: {HRESULT_TEXT.get(exc.hresult, 'Access is denied.')}\r\n".encode()
    return 0, b"The operation completed successfully.\r\n"


def _esentutl_copy(endpoint: Endpoint, args: list[str], cwd: str) -> tuple[int, bytes]:
    """``esentutl /y SOURCE /vss /d TARGET``: copy a file through a volume shadow copy.

    The snapshot reads the file whatever locks it (SRUDB.dat, Amcache.hve, event logs),
    which is why responders use it for files the OS holds open. Without ``/vss`` the copy
    opens the file normally and a locked file fails as it would on Windows.
    """
    banner = b"\r\nExtensible Storage Engine Utilities for Microsoft(R) Windows(R)\r\n"
    lowered = [a.lower() for a in args]
    if not args or "/d" not in lowered or lowered.index("/d") + 1 >= len(args):
        return 1, banner + b"Usage: esentutl /y <source> [/vss] /d <destination>\r\n"
    source, target = args[0], args[lowered.index("/d") + 1]
    if "/vss" in lowered and not endpoint.spec.shadow_copies:
        # What esentutl prints when the Volume Shadow Copy service cannot be started.
        return (
            1,
            banner + b"Operation terminated with error -2403 (JET_errOSSnapshotNotAllowed)\r\n",
        )
    try:
        source_path, target_path = _resolve(source, cwd), _resolve(target, cwd)
        node = (
            endpoint.fs.lookup(source_path)
            if "/vss" in lowered
            else endpoint.fs.open_for_read(source_path)
        )
        if node.is_dir:
            raise SensorError(E_ACCESS_DENIED, source_path)
        endpoint.fs.replace_content(target_path, node.content)
    except SensorError as exc:
        code = exc.hresult
        text = HRESULT_TEXT.get(code, "")
        return 1, banner + f"Operation terminated with error 0x{code:08x}: {text}\r\n".encode()
    return 0, banner + b"\r\nOperation completed successfully in 0.1 seconds.\r\n"


async def _certutil_hashfile(endpoint: Endpoint, args: list[str], cwd: str) -> tuple[int, bytes]:
    if not args:
        return 1, b"CertUtil: -hashfile command FAILED: 0x80070057 (WIN32: 87)\r\n"
    path = args[0]
    algorithm = (args[1] if len(args) > 1 else "SHA1").upper()
    if algorithm not in HASH_ALGORITHMS or algorithm in ("MD2", "MD4"):
        return (
            1,
            f"CertUtil: -hashfile command FAILED: unsupported algorithm {algorithm}\r\n".encode(),
        )
    try:
        node = endpoint.fs.open_for_read(_resolve(path, cwd))
    except SensorError as exc:
        code = exc.hresult
        text = HRESULT_TEXT.get(code, "")
        win32 = WIN32_NAMES.get(code, "ERROR")
        message = (
            f"CertUtil: -hashfile command FAILED: 0x{code:08x} (WIN32: {code & 0xFFFF} {win32})\r\n"
            f"CertUtil: {text}\r\n"
        )
        return code - 2**32, message.encode()
    content = node.content
    digest = await asyncio.to_thread(_hash_content, content, algorithm)
    return 0, (
        f"{algorithm} hash of {path}:\r\n{digest}\r\n"
        "CertUtil: -hashfile command completed successfully.\r\n"
    ).encode()


def _hash_content(content, algorithm: str) -> str:
    digest = hashlib.new(algorithm.lower())
    for data in iter_blocks(content):
        digest.update(data)
    return digest.hexdigest()


def _ipconfig(endpoint: Endpoint) -> str:
    spec = endpoint.spec
    gateway = ".".join([*spec.address.split(".")[:3], "1"])
    return (
        "\r\nWindows IP Configuration\r\n\r\n"
        f"   Host Name . . . . . . . . . . . . : {spec.hostname}\r\n"
        "   Primary Dns Suffix  . . . . . . . : corp.example\r\n"
        "   Node Type . . . . . . . . . . . . : Hybrid\r\n"
        "   IP Routing Enabled. . . . . . . . : No\r\n\r\n"
        "Ethernet adapter Ethernet0:\r\n\r\n"
        "   Connection-specific DNS Suffix  . : corp.example\r\n"
        "   Description . . . . . . . . . . . : Intel(R) 82574L Gigabit Network Connection\r\n"
        "   Physical Address. . . . . . . . . : 00-50-56-9A-3C-1F\r\n"
        "   DHCP Enabled. . . . . . . . . . . : Yes\r\n"
        f"   IPv4 Address. . . . . . . . . . . : {spec.address}(Preferred)\r\n"
        "   Subnet Mask . . . . . . . . . . . : 255.255.255.0\r\n"
        f"   Default Gateway . . . . . . . . . : {gateway}\r\n"
        f"   DNS Servers . . . . . . . . . . . : {gateway}\r\n"
    )


def _netstat(endpoint: Endpoint) -> str:
    pids = sorted(endpoint.processes)
    lines = [
        "",
        "Active Connections",
        "",
        "  Proto  Local Address          Foreign Address        State           PID",
    ]
    listening = [("0.0.0.0:135", pids[1] if len(pids) > 1 else 4), ("0.0.0.0:445", 4)]
    for local, pid in listening:
        lines.append(f"  TCP    {local:<23}0.0.0.0:0              LISTENING       {pid}")
    for i, pid in enumerate(pids[-3:]):
        local = f"{endpoint.spec.address}:{49700 + i}"
        lines.append(
            f"  TCP    {local:<23}{'203.0.113.' + str(10 + i) + ':443':<23}ESTABLISHED     {pid}"
        )
    return "\r\n".join(lines) + "\r\n"


def _tasklist(endpoint: Endpoint) -> str:
    lines = [
        "",
        "Image Name                     PID Session Name        Session#    Mem Usage",
        "========================= ======== ================ =========== ============",
    ]
    for process in endpoint.processes.values():
        image = process.path.rsplit("\\", 1)[-1] or "System"
        lines.append(f"{image[:25]:<25} {process.pid:>8} Services                   0     12,345 K")
    return "\r\n".join(lines) + "\r\n"
