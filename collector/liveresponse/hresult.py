"""Names of the HRESULTs a Windows sensor reports in a command's ``result_code``.

The server sends the code as a signed or an unsigned 32-bit integer (0x80070002 is also
-2147024894); ``normalise_code`` folds both onto the unsigned form. A bare Win32 error code
(below 0x10000) is read as HRESULT_FROM_WIN32 of it, as some sensors report those.
"""

from __future__ import annotations

S_OK = 0x00000000

FILE_NOT_FOUND = 0x80070002
PATH_NOT_FOUND = 0x80070003
ACCESS_DENIED = 0x80070005
INVALID_HANDLE = 0x80070006
NOT_ENOUGH_MEMORY = 0x80070008
OUTOFMEMORY = 0x8007000E
INVALID_DRIVE = 0x8007000F
NO_MORE_FILES = 0x80070012
WRITE_PROTECT = 0x80070013
NOT_READY = 0x80070015
SHARING_VIOLATION = 0x80070020
LOCK_VIOLATION = 0x80070021
HANDLE_EOF = 0x80070026
FILE_EXISTS = 0x80070050
INVALID_PARAMETER = 0x80070057
DISK_FULL = 0x80070070
INVALID_NAME = 0x8007007B
DIR_NOT_EMPTY = 0x80070091
ALREADY_EXISTS = 0x800700B7
FILENAME_EXCED_RANGE = 0x800700CE
MORE_DATA = 0x800700EA
PARTIAL_COPY = 0x8007012B
PRIVILEGE_NOT_HELD = 0x80070522

E_NOTIMPL = 0x80004001
E_NOINTERFACE = 0x80004002
E_POINTER = 0x80004003
E_ABORT = 0x80004004
E_FAIL = 0x80004005
E_UNEXPECTED = 0x8000FFFF

# COM aliases of Win32-wrapped codes: the same numbers under the names of winerror.h.
E_ACCESSDENIED = ACCESS_DENIED
E_HANDLE = INVALID_HANDLE
E_OUTOFMEMORY = OUTOFMEMORY
E_INVALIDARG = INVALID_PARAMETER

HRESULT_NAMES: dict[int, str] = {
    S_OK: "S_OK",
    FILE_NOT_FOUND: "FILE_NOT_FOUND",
    PATH_NOT_FOUND: "PATH_NOT_FOUND",
    ACCESS_DENIED: "ACCESS_DENIED",
    INVALID_HANDLE: "INVALID_HANDLE",
    NOT_ENOUGH_MEMORY: "NOT_ENOUGH_MEMORY",
    OUTOFMEMORY: "E_OUTOFMEMORY",
    INVALID_DRIVE: "INVALID_DRIVE",
    NO_MORE_FILES: "NO_MORE_FILES",
    WRITE_PROTECT: "WRITE_PROTECT",
    NOT_READY: "NOT_READY",
    SHARING_VIOLATION: "SHARING_VIOLATION",
    LOCK_VIOLATION: "LOCK_VIOLATION",
    HANDLE_EOF: "HANDLE_EOF",
    FILE_EXISTS: "FILE_EXISTS",
    INVALID_PARAMETER: "INVALID_PARAMETER",
    DISK_FULL: "DISK_FULL",
    INVALID_NAME: "INVALID_NAME",
    DIR_NOT_EMPTY: "DIR_NOT_EMPTY",
    ALREADY_EXISTS: "ALREADY_EXISTS",
    FILENAME_EXCED_RANGE: "FILENAME_EXCED_RANGE",
    MORE_DATA: "MORE_DATA",
    PARTIAL_COPY: "PARTIAL_COPY",
    PRIVILEGE_NOT_HELD: "PRIVILEGE_NOT_HELD",
    E_NOTIMPL: "E_NOTIMPL",
    E_NOINTERFACE: "E_NOINTERFACE",
    E_POINTER: "E_POINTER",
    E_ABORT: "E_ABORT",
    E_FAIL: "E_FAIL",
    E_UNEXPECTED: "E_UNEXPECTED",
}

_WIN32_FACILITY_PREFIX = 0x80070000
_HRESULT_RESULT_TYPES = {"", "winhresult", "hresult"}


def normalise_code(code: int) -> int:
    """Fold a signed or unsigned 32-bit result code onto its unsigned form."""
    return code & 0xFFFFFFFF


def as_hresult(code: int) -> int:
    """The HRESULT of a result code: a bare Win32 error code is wrapped as FACILITY_WIN32."""
    code = normalise_code(code)
    if 0 < code < 0x10000:
        return _WIN32_FACILITY_PREFIX | code
    return code


def hresult_name(code: int, result_type: str | None = None) -> str | None:
    """The symbolic name of a result code, or None when unknown or not an HRESULT.

    Codes whose ``result_type`` names another scheme (for example "CbError") are not decoded,
    since their numbers mean something else.
    """
    if result_type is not None and result_type.strip().lower() not in _HRESULT_RESULT_TYPES:
        return None
    return HRESULT_NAMES.get(as_hresult(code))
