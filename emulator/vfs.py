"""The endpoint's disks: a tree of directories and files with Windows semantics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .content import BytesContent, Content, MountedContent
from .protocol import (
    E_ACCESS_DENIED,
    E_ALREADY_EXISTS,
    E_DIR_NOT_EMPTY,
    E_FILE_EXISTS,
    E_FILE_NOT_FOUND,
    E_INVALID_NAME,
    E_PATH_NOT_FOUND,
    E_SHARING_VIOLATION,
)
from .scenario import Mutation
from .winpath import (
    BadPath,
    has_wildcard,
    join_path,
    name_key,
    ntfs_order,
    short_name,
    split_path,
    wildcard_match,
)


class SensorError(Exception):
    """A Win32 failure, reported by the sensor as a WinHresult."""

    def __init__(self, hresult: int, detail: str = "") -> None:
        super().__init__(f"0x{hresult:08X} {detail}".strip())
        self.hresult = hresult
        self.detail = detail


@dataclass
class Node:
    name: str
    is_dir: bool
    created: float
    modified: float
    accessed: float
    content: Content | None = None
    attributes: tuple[str, ...] = ()
    alt_name: str = ""
    locked: bool = False
    mutate: Mutation | None = None
    reads: int = 0
    children: dict[str, Node] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return 0 if self.is_dir or self.content is None else self.content.size

    @property
    def last_write(self) -> float:
        if isinstance(self.content, MountedContent):
            try:
                return self.content.mtime()
            except OSError:
                return self.modified
        return self.modified

    def listing_entry(self, name: str | None = None) -> dict:
        """This node as a ``directory list`` file object of the reference.

        Listed under another name (``.`` or ``..``), the entry has no alternate name.
        """
        if self.is_dir:
            attributes = ["DIRECTORY", *self.attributes]
        else:
            attributes = list(self.attributes) or ["ARCHIVE"]
        return {
            "attributes": attributes,
            "create_time": int(self.created),
            "last_access_time": int(self.accessed),
            "last_write_time": int(self.last_write),
            "size": self.size,
            "name": self.name if name is None else name,
            "alt_name": self.alt_name if name is None else "",
        }


class VirtualFileSystem:
    """Drives of the endpoint, each a tree of :class:`Node`."""

    def __init__(self, drives: tuple[str, ...], when: float) -> None:
        self.when = when
        self.drives = {d[:2].upper(): self._new(d[:2].upper(), True, when) for d in drives}

    @staticmethod
    def _new(name: str, is_dir: bool, when: float, **extra) -> Node:
        return Node(name=name, is_dir=is_dir, created=when, modified=when, accessed=when, **extra)

    @staticmethod
    def _parts(path: str) -> tuple[str, list[str]]:
        try:
            return split_path(path)
        except BadPath:
            raise SensorError(E_INVALID_NAME, path) from None

    def _find(self, drive: str, parts: list[str]) -> tuple[Node | None, int]:
        """The deepest node along ``parts`` and how many parts it matched."""
        node = self.drives.get(drive)
        if node is None:
            return None, -1
        for depth, part in enumerate(parts):
            child = node.children.get(name_key(part)) if node.is_dir else None
            if child is None:
                return node, depth
            node = child
        return node, len(parts)

    def lookup(self, path: str) -> Node:
        drive, parts = self._parts(path)
        node, depth = self._find(drive, parts)
        if node is not None and depth == len(parts):
            return node
        missing_leaf = node is not None and node.is_dir and depth == len(parts) - 1
        raise SensorError(E_FILE_NOT_FOUND if missing_leaf else E_PATH_NOT_FOUND, path)

    def exists(self, path: str) -> bool:
        try:
            self.lookup(path)
        except SensorError:
            return False
        return True

    def parent_of(self, path: str) -> tuple[Node, str]:
        """The existing directory that would hold ``path``, and the name in it."""
        drive, parts = self._parts(path)
        if not parts:
            raise SensorError(E_ACCESS_DENIED, path)
        parent, depth = self._find(drive, parts[:-1])
        if parent is None or depth != len(parts) - 1 or not parent.is_dir:
            raise SensorError(E_PATH_NOT_FOUND, path)
        return parent, parts[-1]

    def makedirs(self, path: str, when: float | None = None) -> Node:
        return self._makedirs(*self._parts(path), when)

    def _makedirs(self, drive: str, parts: list[str], when: float | None = None) -> Node:
        node = self.drives.get(drive)
        if node is None:
            raise SensorError(E_PATH_NOT_FOUND, f"{drive} is not one of its drives")
        for depth, part in enumerate(parts):
            child = node.children.get(name_key(part))
            if child is None:
                child = self._attach(node, self._new(part, True, when or self.when))
            elif not child.is_dir:
                raise SensorError(
                    E_PATH_NOT_FOUND, join_path(drive, parts[: depth + 1]) + " is a file"
                )
            node = child
        return node

    def _attach(self, parent: Node, node: Node) -> Node:
        key = name_key(node.name)
        taken = {c.alt_name for k, c in parent.children.items() if c.alt_name and k != key}
        node.alt_name = short_name(node.name, taken)
        parent.children[key] = node
        return node

    def add_file(self, path: str, content: Content, *, when: float | None = None, **extra) -> Node:
        """Create or replace a file, making its folders as needed (scenario building).

        A file never replaces a folder, and no file or folder goes under a file.
        """
        drive, parts = self._parts(path)
        if not parts:
            raise SensorError(E_ACCESS_DENIED, path)
        parent = self._makedirs(drive, parts[:-1])
        existing = parent.children.get(name_key(parts[-1]))
        if existing is not None and existing.is_dir:
            raise SensorError(E_ACCESS_DENIED, f"{join_path(drive, parts)} is a folder")
        t = self.when if when is None else when
        return self._attach(parent, self._new(parts[-1], False, t, content=content, **extra))

    def list(self, pattern: str) -> list[dict]:
        """``directory list``: FindFirstFile semantics on a path or a wildcard filter."""
        if pattern.endswith(("\\", "/")):
            pattern += "*"
        drive, parts = self._parts(pattern)
        if not parts:
            parts = ["*"]
        folder, depth = self._find(drive, parts[:-1])
        if folder is None or depth != len(parts) - 1 or not folder.is_dir:
            raise SensorError(E_PATH_NOT_FOUND, pattern)
        last = parts[-1]
        if not has_wildcard(last):
            child = folder.children.get(name_key(last))
            if child is None:
                raise SensorError(E_FILE_NOT_FOUND, pattern)
            return [child.listing_entry()]
        entries = []
        if len(parts) > 1 and wildcard_match(last, "."):
            entries += [folder.listing_entry("."), folder.listing_entry("..")]
        matching = [
            child
            for child in folder.children.values()
            if wildcard_match(last, child.name)
            or (child.alt_name and wildcard_match(last, child.alt_name))
        ]
        matching.sort(key=lambda child: ntfs_order(child.name))
        entries += [child.listing_entry() for child in matching]
        if not entries:
            raise SensorError(E_FILE_NOT_FOUND, pattern)
        return entries

    def open_for_read(self, path: str) -> Node:
        node = self.lookup(path)
        if node.is_dir:
            raise SensorError(E_ACCESS_DENIED, path)
        if node.locked:
            raise SensorError(E_SHARING_VIOLATION, path)
        return node

    def create_directory(self, path: str) -> Node:
        parent, name = self.parent_of(path)
        if name_key(name) in parent.children:
            raise SensorError(E_ALREADY_EXISTS, path)
        return self._attach(parent, self._new(name, True, time.time()))

    def write_file(self, path: str, data: bytes) -> Node:
        """``put file`` and process output: a new file; an existing one is refused."""
        parent, name = self.parent_of(path)
        if name_key(name) in parent.children:
            raise SensorError(E_FILE_EXISTS, path)
        return self._attach(parent, self._new(name, False, time.time(), content=BytesContent(data)))

    def replace_content(self, path: str, content: Content) -> Node:
        """Write a file whether or not it exists (a program overwriting its output)."""
        parent, name = self.parent_of(path)
        existing = parent.children.get(name_key(name))
        if existing is not None:
            if existing.is_dir:
                raise SensorError(E_ACCESS_DENIED, path)
            if existing.locked:
                raise SensorError(E_SHARING_VIOLATION, path)
            existing.content, existing.modified = content, time.time()
            return existing
        return self._attach(parent, self._new(name, False, time.time(), content=content))

    def delete(self, path: str) -> None:
        """``delete file``: files, and empty directories as RemoveDirectory would."""
        node = self.lookup(path)
        parent, name = self.parent_of(path)
        if node is parent or node in self.drives.values():
            raise SensorError(E_ACCESS_DENIED, path)
        if node.locked:
            raise SensorError(E_SHARING_VIOLATION, path)
        if node.is_dir and node.children:
            raise SensorError(E_DIR_NOT_EMPTY, path)
        del parent.children[name_key(name)]
