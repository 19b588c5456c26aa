"""What the Windows sensor does for each command, on the endpoint's disks and registry.

Each handler takes the endpoint and the command request and returns the command-specific
response fields, or raises :class:`SensorError` with the HRESULT Windows would give.
``get file``, ``put file`` and ``memdump`` also involve the cloud's file store and time, so
``tenant.py`` drives them and uses the helpers here for their endpoint side.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from .content import (
    AppendedContent,
    BytesContent,
    Content,
    PatchedContent,
    RandomContent,
    RangeContent,
)
from .endpoint import Endpoint
from .programs import run_program, split_command_line
from .protocol import E_ACCESS_DENIED, E_DIRECTORY, E_INVALID_NAME, E_INVALID_PARAMETER
from .vfs import Node, SensorError
from .winpath import DEFAULT_CWD, BadPath, absolute_path

Handler = Callable[[Endpoint, dict[str, Any]], Awaitable[dict[str, Any]]]


def truthy(value: Any) -> bool:
    """The API sends flags as "true"/"false" strings or as booleans."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def object_text(request: dict[str, Any]) -> str:
    value = request.get("object")
    if not isinstance(value, str) or not value:
        raise SensorError(E_INVALID_PARAMETER, "object")
    return value


async def create_directory(endpoint: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
    endpoint.fs.create_directory(object_text(request))
    return {}


async def delete_file(endpoint: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
    endpoint.fs.delete(object_text(request))
    return {}


async def directory_list(endpoint: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
    return {"files": endpoint.fs.list(object_text(request))}


async def reg_enum_key(endpoint: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
    key = endpoint.registry.find(object_text(request))
    return {
        "values": [value.to_wire() for value in key.values.values()],
        "sub_keys": [sub.name for sub in key.subkeys.values()],
    }


async def reg_query_value(endpoint: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
    return {"value": endpoint.registry.query_value(object_text(request)).to_wire()}


async def reg_create_key(endpoint: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
    endpoint.registry.create(object_text(request))
    return {}


async def reg_delete_key(endpoint: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
    endpoint.registry.delete_key(object_text(request))
    return {}


async def reg_delete_value(endpoint: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
    endpoint.registry.delete_value(object_text(request))
    return {}


async def reg_set_value(endpoint: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
    endpoint.registry.set_value(
        object_text(request),
        str(request.get("value_type", "")),
        request.get("value_data"),
        overwrite=truthy(request.get("overwrite", False)),
    )
    return {}


async def process_list(endpoint: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
    return {"processes": endpoint.process_list()}


async def kill(endpoint: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
    try:
        pid = int(request.get("object"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SensorError(E_INVALID_PARAMETER, "object") from None
    if pid not in endpoint.processes:
        raise SensorError(E_INVALID_PARAMETER, f"no process {pid}")
    if pid in (0, 4):
        raise SensorError(E_ACCESS_DENIED, f"process {pid}")
    del endpoint.processes[pid]
    return {}


async def create_process(endpoint: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
    command_line = object_text(request)
    output_file = request.get("output_file")
    if output_file:
        endpoint.fs.parent_of(str(output_file))  # the redirection target's folder must exist
    cwd = working_directory(endpoint, request.get("working_directory"))
    argv = split_command_line(command_line)
    process = endpoint.spawn(command_line, argv[0] if argv else command_line)
    try:
        return_code, output = await run_program(endpoint, command_line, cwd)
    finally:
        endpoint.processes.pop(process.pid, None)
    if output_file:
        endpoint.fs.replace_content(str(output_file), BytesContent(output))
    fields: dict[str, Any] = {"pid": process.pid}
    if truthy(request.get("wait", False)):
        fields["return_code"] = return_code
    else:
        fields["return_code"] = 0
    return fields


def working_directory(endpoint: Endpoint, requested: Any) -> str:
    """The absolute folder a new process starts in; CreateProcess refuses a missing one."""
    if requested is None or requested == "":
        return DEFAULT_CWD
    if not isinstance(requested, str):
        raise SensorError(E_INVALID_PARAMETER, "working_directory")
    try:
        folder = absolute_path(requested, DEFAULT_CWD)
    except BadPath:
        raise SensorError(E_INVALID_NAME, requested) from None
    try:
        is_folder = endpoint.fs.lookup(folder).is_dir
    except SensorError:
        is_folder = False
    if not is_folder:
        raise SensorError(E_DIRECTORY, requested)
    return folder


HANDLERS: dict[str, Handler] = {
    "create directory": create_directory,
    "delete file": delete_file,
    "directory list": directory_list,
    "reg enum key": reg_enum_key,
    "reg query value": reg_query_value,
    "reg create key": reg_create_key,
    "reg delete key": reg_delete_key,
    "reg delete value": reg_delete_value,
    "reg set value": reg_set_value,
    "process list": process_list,
    "kill": kill,
    "create process": create_process,
}


def take_range(endpoint: Endpoint, path: str, offset: int, count: int | None) -> Content:
    """The bytes a ``get file`` uploads, taken now; then any declared mutation of the file."""
    node = endpoint.fs.open_for_read(path)
    content = node.content or BytesContent(b"")
    size = content.size
    start = min(max(offset, 0), size)
    length = size - start if count is None or count <= 0 else min(count, size - start)
    taken = RangeContent(content, start, length)
    node.reads += 1
    if node.mutate and node.reads >= node.mutate.after_reads:
        mutate(endpoint, path, node, node.mutate.action, node.mutate.bytes)
        node.mutate = None
    return taken


def mutate(endpoint: Endpoint, path: str, node: Node, action: str, nbytes: int) -> None:
    """Change a file the way a live system does while it is being read."""
    content = node.content or BytesContent(b"")
    seed = zlib.crc32(f"{path}|{node.reads}|{action}".encode())
    if action == "vanish":
        node.locked = False
        endpoint.fs.delete(path)
        return
    if action == "grow":
        node.content = AppendedContent(content, RandomContent(nbytes, seed))
    elif action == "shrink":
        node.content = RangeContent(content, 0, max(0, content.size - nbytes))
    else:
        length = min(nbytes, content.size)  # rewritten in place: the size stays
        at = min(content.size // 2, content.size - length)
        node.content = PatchedContent(content, at, RandomContent(length, seed).read(0, length))
    # The API reports whole seconds, so a write within the second of the last listing is
    # invisible to any client; the fault always moves the time on a second so that it is
    # one a client can detect (the limit itself is stated in the README).
    node.modified = max(time.time(), float(int(node.modified)) + 1.0)
