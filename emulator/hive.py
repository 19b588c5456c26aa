"""Serialize an in-memory registry key tree as a REGF hive file.

The emulated endpoint answers ``reg.exe save`` with a real hive, so collectors and
parsers downstream see the same bytes layout Windows produces. Layout reference: the
"Windows registry file format specification" (msuhanov) and the NT cmlib headers.

Offsets inside a hive (cell indexes) are relative to the start of the first hive bin,
i.e. 4096 bytes into the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["HiveKey", "HiveValue", "build_hive", "deleted_key_remnant"]


@dataclass(frozen=True)
class HiveValue:
    name: str  # "" is the key's default value
    type: str  # "REG_SZ", "REG_EXPAND_SZ", "REG_MULTI_SZ", "REG_DWORD", "REG_QWORD", ...
    data: str | int | list[str] | bytes


@dataclass(frozen=True)
class HiveKey:
    name: str
    last_write: datetime  # tz-aware UTC
    values: tuple[HiveValue, ...] = ()
    subkeys: tuple[HiveKey, ...] = ()


REG_TYPES = {
    "REG_NONE": 0,
    "REG_SZ": 1,
    "REG_EXPAND_SZ": 2,
    "REG_BINARY": 3,
    "REG_DWORD": 4,
    "REG_MULTI_SZ": 7,
    "REG_QWORD": 11,
}

BASE_BLOCK_SIZE = 4096
HBIN_HEADER_SIZE = 32
NIL = 0xFFFFFFFF  # HCELL_NIL: "no cell"

KEY_HIVE_ENTRY = 0x0004
KEY_NO_DELETE = 0x0008
KEY_COMP_NAME = 0x0020
VALUE_COMP_NAME = 0x0001

SMALL_DATA_MAX = 4  # CM_KEY_VALUE_SMALL: data this short lives in the vk's offset field
SMALL_DATA_FLAG = 0x80000000  # CM_KEY_VALUE_SPECIAL_SIZE
BIG_DATA_SEGMENT = 16344  # CM_KEY_VALUE_BIG: larger data is split into "db" segments
# A hash leaf grows until it holds CM_MAX_INDEX - 1 entries; Windows then adds an "ri" root.
MAX_LEAF_ENTRIES = 1012

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_NK = struct.Struct("<2sHQ15I2H")  # 76 bytes, CM_KEY_NODE up to the name
_VK = struct.Struct("<2sHIIIHH")  # 20 bytes, CM_KEY_VALUE up to the name


def filetime(when: datetime) -> int:
    """Convert an aware datetime to a FILETIME (100 ns ticks since 1601-01-01 UTC)."""
    if when.tzinfo is None:
        raise ValueError(f"timestamp must be timezone-aware: {when!r}")
    delta = when - _FILETIME_EPOCH
    return (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def encode_name(name: str) -> tuple[bytes, bool]:
    """Return the on-disk name and whether it is "compressed".

    Windows compresses a name when every UTF-16 unit fits in one byte (Latin-1) and
    stores those bytes; any other name is stored as UTF-16LE.
    """
    try:
        return name.encode("latin-1"), True
    except UnicodeEncodeError:
        return name.encode("utf-16-le"), False


def _upcase_units(name: str) -> tuple[int, ...]:
    """UTF-16 code units upper-cased one character at a time, like RtlUpcaseUnicodeChar.

    Characters whose upper case is not a single BMP character (e.g. "ß") stay as they are.
    """
    chars = []
    for char in name:
        upper = char.upper()
        chars.append(upper if len(upper) == 1 and ord(char) <= 0xFFFF else char)
    raw = "".join(chars).encode("utf-16-le")
    return struct.unpack(f"<{len(raw) // 2}H", raw)


def name_hash(name: str) -> int:
    """The "lh" leaf hash: hash = hash * 37 + upcase(unit), modulo 2**32."""
    value = 0
    for unit in _upcase_units(name):
        value = (value * 37 + unit) & 0xFFFFFFFF
    return value


def encode_data(value: HiveValue) -> bytes:
    """Encode value data the way Windows stores it for the value's type."""
    kind, data = value.type, value.data
    if kind not in REG_TYPES:
        raise ValueError(f"unsupported value type {kind!r} for {value.name!r}")
    if kind in ("REG_SZ", "REG_EXPAND_SZ") and isinstance(data, str):
        return (data + "\0").encode("utf-16-le")
    if kind == "REG_MULTI_SZ" and isinstance(data, list):
        if any(not item or "\0" in item for item in data):
            raise ValueError(f"REG_MULTI_SZ items must be non-empty without NUL: {value.name!r}")
        return ("".join(item + "\0" for item in data) + "\0" * (1 if data else 2)).encode(
            "utf-16-le"
        )
    if kind in ("REG_DWORD", "REG_QWORD") and isinstance(data, int):
        return struct.pack("<I" if kind == "REG_DWORD" else "<Q", data)
    if kind in ("REG_BINARY", "REG_NONE") and isinstance(data, bytes):
        return data
    raise TypeError(f"{type(data).__name__} data does not fit {kind} for {value.name!r}")


def _sid(authority: int, *subs: int) -> bytes:
    return struct.pack(f"<BB6s{len(subs)}I", 1, len(subs), authority.to_bytes(6, "big"), *subs)


def security_descriptor() -> bytes:
    """A self-relative descriptor: owner Administrators, group SYSTEM, DACL granting
    SYSTEM and Administrators full control and Users read, inherited by subkeys."""
    system, admins, users = _sid(5, 18), _sid(5, 32, 544), _sid(5, 32, 545)
    aces = b"".join(
        struct.pack("<BBHI", 0, 0x02, 8 + len(sid), mask) + sid  # ACCESS_ALLOWED, CONTAINER_INHERIT
        for sid, mask in ((system, 0xF003F), (admins, 0xF003F), (users, 0x20019))
    )
    dacl = struct.pack("<BBHHH", 2, 0, 8 + len(aces), 3, 0) + aces
    dacl_at = 20
    owner_at = dacl_at + len(dacl)
    group_at = owner_at + len(admins)
    control = 0x8000 | 0x0004  # SE_SELF_RELATIVE | SE_DACL_PRESENT
    header = struct.pack("<BBHIIII", 1, 0, control, owner_at, group_at, 0, dacl_at)
    return header + dacl + admins + system


class _Cells:
    """Bump allocator over hive bins; cells never straddle a bin boundary."""

    def __init__(self, when: int) -> None:
        self.data = bytearray()
        self.pos = 0  # next free byte (hive offset)
        self.end = 0  # end of the current bin (hive offset)
        self.when = when

    def alloc(self, length: int) -> int:
        """Reserve an allocated cell for `length` payload bytes; return its offset."""
        size = (4 + length + 7) & ~7
        if self.pos + size > self.end:
            self._new_bin(size)
        offset = self.pos
        self.data[offset : offset + 4] = struct.pack("<i", -size)
        self.pos += size
        return offset

    def put(self, offset: int, payload: bytes) -> None:
        (size,) = struct.unpack_from("<i", self.data, offset)
        if len(payload) > -size - 4:
            raise AssertionError("cell payload larger than its allocation")
        self.data[offset + 4 : offset + 4 + len(payload)] = payload

    def add(self, payload: bytes) -> int:
        offset = self.alloc(len(payload))
        self.put(offset, payload)
        return offset

    def finish(self) -> bytes:
        self._close_bin()
        return bytes(self.data)

    def _new_bin(self, cell_size: int) -> None:
        self._close_bin()
        start = len(self.data)
        size = (HBIN_HEADER_SIZE + cell_size + 4095) & ~4095
        stamp = self.when if start == 0 else 0  # only the first bin's timestamp is meaningful
        self.data += struct.pack("<4sIIIIQI", b"hbin", start, size, 0, 0, stamp, 0)
        self.data += bytes(size - HBIN_HEADER_SIZE)
        self.pos, self.end = start + HBIN_HEADER_SIZE, start + size

    def _close_bin(self) -> None:
        """Turn the unused tail of the current bin into one free cell."""
        if self.end > self.pos:
            self.data[self.pos : self.pos + 4] = struct.pack("<i", self.end - self.pos)
        self.pos = self.end


class _Writer:
    def __init__(self, cells: _Cells, sk_offset: int) -> None:
        self.cells = cells
        self.sk_offset = sk_offset
        self.key_count = 0

    def write_key(self, key: HiveKey, offset: int, parent: int, flags: int = 0) -> None:
        """Fill the nk reserved at `offset`, writing values and subkeys first."""
        self.key_count += 1
        name, compressed = encode_name(key.name)
        value_list, max_value_name, max_data = self._write_values(key)
        children = sorted(key.subkeys, key=lambda child: _upcase_units(child.name))
        _reject_duplicates([_upcase_units(child.name) for child in children], key.name)
        child_offsets = [self.cells.alloc(_NK.size + len(encode_name(c.name)[0])) for c in children]
        subkey_list = self._write_subkey_list(children, child_offsets)
        for child, child_offset in zip(children, child_offsets, strict=True):
            self.write_key(child, child_offset, offset)
        header = _NK.pack(
            b"nk",
            flags | (KEY_COMP_NAME if compressed else 0),
            filetime(key.last_write),
            0,  # access bits
            parent,
            len(children),
            0,  # volatile subkeys are never saved
            subkey_list,
            NIL,
            len(key.values),
            value_list,
            self.sk_offset,
            NIL,  # class name
            max((len(c.name.encode("utf-16-le")) for c in children), default=0),
            0,
            max_value_name,
            max_data,
            0,
            len(name),
            0,
        )
        self.cells.put(offset, header + name)

    def _write_values(self, key: HiveKey) -> tuple[int, int, int]:
        """Write vk cells and the value list; return (list offset, max name, max data)."""
        if not key.values:
            return NIL, 0, 0
        _reject_duplicates([_upcase_units(v.name) for v in key.values], key.name)
        offsets, encoded = [], []
        for value in key.values:
            data = encode_data(value)
            encoded.append(data)
            offsets.append(self._write_value(value, data))
        list_offset = self.cells.add(struct.pack(f"<{len(offsets)}I", *offsets))
        max_name = max(len(v.name.encode("utf-16-le")) for v in key.values)
        return list_offset, max_name, max(len(d) for d in encoded)

    def _write_value(self, value: HiveValue, data: bytes) -> int:
        name, compressed = encode_name(value.name)
        if len(data) <= SMALL_DATA_MAX:
            size = len(data) | SMALL_DATA_FLAG
            data_field = int.from_bytes(data.ljust(4, b"\0"), "little")
        else:
            size, data_field = len(data), self._write_data(data)
        flags = VALUE_COMP_NAME if compressed else 0
        vk = _VK.pack(b"vk", len(name), size, data_field, REG_TYPES[value.type], flags, 0)
        return self.cells.add(vk + name)

    def _write_data(self, data: bytes) -> int:
        if len(data) <= BIG_DATA_SEGMENT:
            return self.cells.add(data)
        # Like CmpSetValueDataNew: the db cell, then the segment list, then segments that
        # are all allocated full size (the last one too; readers rely on it).
        count = -(-len(data) // BIG_DATA_SEGMENT)
        db = self.cells.alloc(8)
        seg_list = self.cells.alloc(4 * count)
        segments = []
        for start in range(0, len(data), BIG_DATA_SEGMENT):
            segments.append(self.cells.alloc(BIG_DATA_SEGMENT))
            self.cells.put(segments[-1], data[start : start + BIG_DATA_SEGMENT])
        self.cells.put(seg_list, struct.pack(f"<{count}I", *segments))
        self.cells.put(db, struct.pack("<2sHI", b"db", count, seg_list))
        return db

    def _write_subkey_list(self, children: list[HiveKey], offsets: list[int]) -> int:
        """One "lh" leaf, or an "ri" root over several leaves when there are too many."""
        if not children:
            return NIL
        leaves = []
        for start in range(0, len(children), MAX_LEAF_ENTRIES):
            stop = start + MAX_LEAF_ENTRIES
            entries = b"".join(
                struct.pack("<II", off, name_hash(child.name))
                for child, off in zip(children[start:stop], offsets[start:stop], strict=True)
            )
            leaves.append(self.cells.add(struct.pack("<2sH", b"lh", len(entries) // 8) + entries))
        if len(leaves) == 1:
            return leaves[0]
        return self.cells.add(struct.pack(f"<2sH{len(leaves)}I", b"ri", len(leaves), *leaves))


def _reject_duplicates(names: list[tuple[int, ...]], parent: str) -> None:
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate (case-insensitive) names under {parent!r}")


def _checksum(block: bytes) -> int:
    """XOR-32 of the first 508 bytes; 0 and 0xFFFFFFFF are reserved values."""
    value = 0
    for (word,) in struct.iter_unpack("<I", block[:508]):
        value ^= word
    return {0: 1, 0xFFFFFFFF: 0xFFFFFFFE}.get(value, value)


def _base_block(root_offset: int, bins_size: int, when: int, file_name: str) -> bytes:
    name = file_name.encode("utf-16-le")[-64:].ljust(64, b"\0")
    head = struct.pack("<4sIIQIIIIIII", b"regf", 1, 1, when, 1, 5, 0, 1, root_offset, bins_size, 1)
    block = bytearray(BASE_BLOCK_SIZE)
    block[: len(head)] = head
    block[48:112] = name
    struct.pack_into("<I", block, 508, _checksum(bytes(block)))
    return bytes(block)


def deleted_key_remnant(name: str, when: datetime) -> bytes:
    """The nk record of a key deleted from a live hive, as it lingers in a free cell.

    Deleting a key frees its cells without wiping them: a raw copy of the hive file keeps
    the record (and examiners recover it), while ``reg save`` writes only live cells.
    """
    encoded, compressed = encode_name(name)
    flags = KEY_COMP_NAME if compressed else 0
    counts_and_lists = (0, NIL, 0, 0, NIL, NIL, 0, NIL, NIL, NIL, 0, 0, 0, 0, 0)
    header = _NK.pack(b"nk", flags, filetime(when), *counts_and_lists, len(encoded), 0)
    return header + encoded


def build_hive(
    root: HiveKey, *, file_name: str, when: datetime, slack: tuple[bytes, ...] = ()
) -> bytes:
    """Serialize the tree as a REGF hive file.

    The root nk is the first cell of the first bin (as in hives Windows saves); one sk
    cell holds the security descriptor shared by every key. ``slack`` is what free cells
    still hold (``deleted_key_remnant``): a hive file on disk has it, a saved one does not.
    Pure and deterministic.
    """
    stamp = filetime(when)
    cells = _Cells(stamp)
    root_name, _ = encode_name(root.name)
    root_offset = cells.alloc(_NK.size + len(root_name))
    descriptor = security_descriptor()
    sk_offset = cells.alloc(20 + len(descriptor))
    writer = _Writer(cells, sk_offset)
    writer.write_key(root, root_offset, NIL, KEY_HIVE_ENTRY | KEY_NO_DELETE)
    # The only sk links to itself both ways; every nk holds one reference to it.
    sk = struct.pack("<2sHIIII", b"sk", 0, sk_offset, sk_offset, writer.key_count, len(descriptor))
    cells.put(sk_offset, sk + descriptor)
    for remnant in slack:
        freed = cells.add(remnant)
        (size,) = struct.unpack_from("<i", cells.data, freed)
        struct.pack_into("<i", cells.data, freed, -size)  # a free cell: positive size
    bins = cells.finish()
    return _base_block(root_offset, len(bins), stamp, file_name) + bins
