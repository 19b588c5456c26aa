"""How the emulated service behaves where the real one is unconfirmed or differs from the text.

One frozen :class:`ServiceBehaviour` holds every such variant. Its defaults are the reference
behaviour (the API text, and for v6 Carbon Black's SDK); a scenario's top-level ``service:``
mapping, ``EmulatorServer(service=...)`` or ``cblr-collect emulator --service KEY=VALUE,...``
switches variants on, so a test can run the client against each.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

PARTIAL_GET_MODES = ("offset", "range", "whole")
STATUS_CASES = ("lower", "upper")
OBSERVED = "observed"
REFERENCE = "reference"
BOTH = "both"
SHAPES = (REFERENCE, OBSERVED)
LISTING_SHAPES = (REFERENCE, BOTH, OBSERVED)
SHAPE_SETTINGS = ("listing_shape", "registry_shape", "process_shape")
LISTING_TIMES = ("seconds", "milliseconds", "iso")
# The limits Carbon Black's user guides document, which ``tenant_limits: true`` switches on.
TENANT_LIMITS = {
    "org_session_limit": 100,
    "max_commands_per_session": 250,
    "session_idle_timeout": 900.0,
}
SHORTHANDS = ("observed_shapes", "tenant_limits")


class ServiceSpecError(ValueError):
    """A service setting that does not exist or has a value it cannot take."""


@dataclass(frozen=True)
class ServiceBehaviour:
    """The variants of the emulated service, each a field with the reference as default.

    v6 (issue 16):

    - ``partial_get``: ``offset`` (v6 ``get file`` honours ``offset``/``count``), ``range``
      (they are ignored, the file object is the whole file, and the content target honours
      HTTP Range), ``whole`` (ignored, and the content target ignores Range too).
    - ``content_url_ttl``: seconds a content URL given by the 302 stays valid (then 403).
    - ``status_case``: ``lower`` or ``upper`` command statuses in v6 replies.

    Observed real-tenant shapes on v3 (issue 15; ``observed_shapes=True`` sets the three
    ``*_shape`` settings to ``observed``):

    - ``listing_shape``: ``directory list`` entries keyed ``name``/``alt_name``
      (``reference``), ``filename``/``alternate_name`` as real tenants send them
      (``observed``), or ``both`` pairs (the default, as issue 15 asks: it costs nothing and
      Carbon Black's own SDK reads ``filename``).
    - ``registry_shape``: ``reference`` (``REG_*`` types, typed data) or ``observed``
      (``pbREG_*`` types, data always a string: DWORD ``"1"``, binary hex, MULTI_SZ
      comma-joined).
    - ``process_shape``: ``reference`` or ``observed`` (lower-case DOS paths, times on the
      FILETIME scale as captured: ``create_time`` in FILETIME/1000, ``parent_create_time`` in
      FILETIME units; no ``proc_guid``/``parent_guid``).
    - ``listing_times``: v3 ``directory list`` times as epoch ``seconds`` (the reference),
      epoch ``milliseconds`` or ``iso`` 8601 strings (clients must parse all three).

    Tenant limits (issue 15; ``tenant_limits=True`` sets the three documented ones: 100
    sessions per organisation, 250 commands per session, 900 s idle). Each is off by default,
    as in the reference, so a client that does not yet rotate sessions still runs:

    - ``org_session_limit``: live response sessions the organisation may hold at once, shared
      with every analyst; beyond it a new session answers 403 "session limit reached".
      ``None``: only the scenario's ``session_slots`` applies (429 with Retry-After).
    - ``other_analyst_sessions``: sessions of the pool held by other analysts (not this key).
    - ``max_commands_per_session``: commands one session accepts (then 403 "command limit
      reached"); ``None``: no cap.
    - ``session_idle_timeout``: seconds without a request after which a session closes;
      ``None``: each session's own ``session_timeout`` (the scenario's, 900 s by default).
    """

    partial_get: str = "offset"
    content_url_ttl: float = 300.0
    status_case: str = "lower"
    listing_shape: str = BOTH
    registry_shape: str = REFERENCE
    process_shape: str = REFERENCE
    listing_times: str = "seconds"
    org_session_limit: int | None = None
    other_analyst_sessions: int = 0
    max_commands_per_session: int | None = None
    session_idle_timeout: float | None = None

    def __post_init__(self) -> None:
        _choice("partial_get", self.partial_get, PARTIAL_GET_MODES)
        _choice("status_case", self.status_case, STATUS_CASES)
        _choice("listing_shape", self.listing_shape, LISTING_SHAPES)
        for name in ("registry_shape", "process_shape"):
            _choice(name, getattr(self, name), SHAPES)
        _choice("listing_times", self.listing_times, LISTING_TIMES)
        _seconds("content_url_ttl", self.content_url_ttl)
        if self.session_idle_timeout is not None:
            _seconds("session_idle_timeout", self.session_idle_timeout)
        _count("other_analyst_sessions", self.other_analyst_sessions, 0)
        if self.max_commands_per_session is not None:
            _count("max_commands_per_session", self.max_commands_per_session, 1)
        if self.org_session_limit is not None:
            _count("org_session_limit", self.org_session_limit, 1)

    @classmethod
    def from_mapping(cls, values: dict[str, Any], where: str = "service") -> ServiceBehaviour:
        """From a scenario's ``service:`` mapping or parsed ``--service`` text.

        ``observed_shapes: true`` is the one setting for every observed real-tenant shape,
        ``tenant_limits: true`` the one for the documented limits; a setting named on its own
        as well wins over them.
        """
        known = [f.name for f in dataclasses.fields(cls)]
        settings: dict[str, Any] = {}
        for key in values:
            if key not in known and key not in SHORTHANDS:
                raise ServiceSpecError(
                    f"{where}: unknown setting {key!r}; known: {', '.join([*known, *SHORTHANDS])}"
                )
        if _flag(f"{where}.observed_shapes", values.get("observed_shapes", False)):
            settings.update(dict.fromkeys(SHAPE_SETTINGS, OBSERVED))
        if _flag(f"{where}.tenant_limits", values.get("tenant_limits", False)):
            settings.update(TENANT_LIMITS)
        for key, value in values.items():
            if key not in SHORTHANDS:
                settings[key] = _convert(f"{where}.{key}", key, value)
        try:
            return cls(**settings)
        except ServiceSpecError as exc:
            raise ServiceSpecError(f"{where}: {exc}") from None

    @classmethod
    def parse(cls, spec: str | None) -> ServiceBehaviour:
        """``partial_get=range,content_url_ttl=2`` as the command line gives it."""
        return ServiceBehaviour().overridden(spec)

    def overridden(self, spec: str | None) -> ServiceBehaviour:
        """These settings with those ``KEY=VALUE,...`` names (``--service``) changed."""
        values: dict[str, Any] = {}
        for item in (spec or "").split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep:
                raise ServiceSpecError(f"{item!r}: expected KEY=VALUE, e.g. partial_get=range")
            values[key.strip()] = value.strip()
        changed = ServiceBehaviour.from_mapping(values, "--service")
        named = {k for k in values if k not in SHORTHANDS}
        if changed.listing_shape == OBSERVED and "observed_shapes" in values:
            named |= set(SHAPE_SETTINGS)
        if changed.max_commands_per_session is not None and "tenant_limits" in values:
            named |= set(TENANT_LIMITS)
        return dataclasses.replace(self, **{k: getattr(changed, k) for k in named})

    def changes(self) -> dict[str, Any]:
        """The settings that differ from the defaults (what a ready line reports)."""
        default = ServiceBehaviour()
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ServiceSpecError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _seconds(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ServiceSpecError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


def _count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ServiceSpecError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _flag(where: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ServiceSpecError(f"{where} must be true or false, got {value!r}")


def _convert(where: str, key: str, value: Any) -> Any:
    """A setting's value from YAML (typed) or command-line text (always a string)."""
    if not isinstance(value, str):
        if key in ("content_url_ttl", "session_idle_timeout") and isinstance(value, int):
            return value if isinstance(value, bool) else float(value)
        return value
    text = value.strip()
    if key in ("content_url_ttl", "session_idle_timeout"):
        if key == "session_idle_timeout" and text.lower() in ("none", "null", ""):
            return None
        try:
            return float(text)
        except ValueError:
            raise ServiceSpecError(f"{where} must be a number of seconds, got {text!r}") from None
    if key in ("org_session_limit", "other_analyst_sessions", "max_commands_per_session"):
        if key != "other_analyst_sessions" and text.lower() in ("none", "null", ""):
            return None
        try:
            return int(text)
        except ValueError:
            raise ServiceSpecError(f"{where} must be an integer, got {text!r}") from None
    return text
