"""Names and codes of the Live Response API, as the reference spells them."""

from __future__ import annotations

API_ROOT = "/integrationServices/v3"
CBLR_ROOT = f"{API_ROOT}/cblr"

# The v6 dialect (Carbon Black Cloud): every route under the tenant's org key.
V6_ROOT = "/appservices/v6"
V6_ORGS = f"{V6_ROOT}/orgs"
DEFAULT_ORG_KEY = "EMUORG01"
CUSTOM_KEY = "CUSTOM"  # the v6 key type: an API key with a custom access level (RBAC)

LIVE_RESPONSE_KEY = "LIVE_RESPONSE"

SUPPORTED_COMMANDS = (
    "put file",
    "get file",
    "memdump",
    "create directory",
    "delete file",
    "directory list",
    "reg enum key",
    "reg query value",
    "reg create key",
    "reg delete key",
    "reg delete value",
    "reg set value",
    "process list",
    "kill",
    "create process",
)

# Session statuses are upper case, command statuses lower case, exactly as in the reference.
SESSION_PENDING = "PENDING"
SESSION_ACTIVE = "ACTIVE"
SESSION_TIMEOUT = "TIMEOUT"
SESSION_INACTIVE = "INACTIVE"
SESSION_CLOSE = "CLOSE"

COMMAND_PENDING = "pending"
COMMAND_IN_PROGRESS = "in progress"
COMMAND_COMPLETE = "complete"
COMMAND_ERROR = "error"
COMMAND_CANCEL = "cancel"

# v6 names of the command statuses (lower case by default; ``status_case`` upper-cases them).
V6_COMMAND_STATUS = {
    COMMAND_PENDING: "pending",
    COMMAND_IN_PROGRESS: "in progress",
    COMMAND_COMPLETE: "complete",
    COMMAND_ERROR: "error",
    COMMAND_CANCEL: "cancelled",
}

# ``error_code`` of a JSON error reply by HTTP status, where the handler names none.
ERROR_CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    416: "RANGE_NOT_SATISFIABLE",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_SERVER_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
}

RESULT_TYPE_HRESULT = "WinHresult"

# HRESULTs a Windows sensor reports (FACILITY_WIN32 wrapping of the Win32 error codes).
S_OK = 0
E_FAIL = 0x80004005
E_FILE_NOT_FOUND = 0x80070002
E_PATH_NOT_FOUND = 0x80070003
E_ACCESS_DENIED = 0x80070005
E_SHARING_VIOLATION = 0x80070020
E_HANDLE_EOF = 0x80070026
E_FILE_EXISTS = 0x80070050
E_INVALID_PARAMETER = 0x80070057
E_INVALID_NAME = 0x8007007B
E_DIR_NOT_EMPTY = 0x80070091
E_DIRECTORY = 0x8007010B
E_ALREADY_EXISTS = 0x800700B7

HRESULT_TEXT = {
    E_FAIL: "Unspecified error",
    E_FILE_NOT_FOUND: "The system cannot find the file specified.",
    E_PATH_NOT_FOUND: "The system cannot find the path specified.",
    E_ACCESS_DENIED: "Access is denied.",
    E_SHARING_VIOLATION: (
        "The process cannot access the file because it is being used by another process."
    ),
    E_HANDLE_EOF: "Reached the end of the file.",
    E_FILE_EXISTS: "The file exists.",
    E_INVALID_PARAMETER: "The parameter is incorrect.",
    E_INVALID_NAME: "The filename, directory name, or volume label syntax is incorrect.",
    E_DIR_NOT_EMPTY: "The directory is not empty.",
    E_DIRECTORY: "The directory name is invalid.",
    E_ALREADY_EXISTS: "Cannot create a file when that file already exists.",
}

REGISTRY_TYPES = (
    "REG_NONE",
    "REG_SZ",
    "REG_EXPAND_SZ",
    "REG_BINARY",
    "REG_DWORD",
    "REG_QWORD",
    "REG_MULTI_SZ",
)


def initial_fields(name: str) -> dict[str, object]:
    """The command-specific response fields a command object carries from its POST on.

    The reference's worked example shows a pending ``process list`` with ``"processes": []``;
    the other commands whose Response Object holds lists start the same way, and ``memdump``
    starts with its progress fields at rest. A command that ends in error drops them.
    """
    if name == "process list":
        return {"processes": []}
    if name == "directory list":
        return {"files": []}
    if name == "reg enum key":
        return {"values": [], "sub_keys": []}
    if name == "memdump":
        return {"return_code": 0, "complete": False, "percentdone": 0, "dumping": False}
    return {}
