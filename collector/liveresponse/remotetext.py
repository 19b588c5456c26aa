"""Text from the server or the endpoint, made safe to show on a terminal or in an error line.

Remote names, hostnames and server messages are attacker-controlled. Printed raw, an escape
sequence in a file name can retitle the window, rewrite what the examiner sees above it, or
(with some terminals) answer back as keystrokes; a bidirectional override can make
``exe.txt`` read as ``txt.exe``. Every human-readable output passes such text through
:func:`printable`; ``--json`` output needs nothing more than JSON's own escaping. It sits in
the lowest layer, where remote text comes in, so that every layer above (the CLI, a delivery
destination quoting an SSH server) escapes the same way.
"""

from __future__ import annotations

DISPLAY_LIMIT = 300
"""Characters of one remote-controlled string shown; the rest is cut with an ellipsis."""


def printable(text: object, limit: int = DISPLAY_LIMIT) -> str:
    """``text`` with every non-printable character written as ``\\xNN`` or ``\\uNNNN``.

    Control characters (ESC, BEL, CR, C1 controls such as CSI), format characters (bidi
    overrides, zero-width joiners), line and paragraph separators and unassigned code points
    are escaped; everything printable, including the backslashes of Windows paths, is kept.
    """
    value = str(text)
    shown = value if len(value) <= limit else value[:limit]
    escaped = "".join(c if c.isprintable() else _escape(c) for c in shown)
    return escaped if shown is value else escaped + "…"


def _escape(character: str) -> str:
    code = ord(character)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )
