"""Configuration: one TOML file, loaded, validated and resolved in three steps.

1. **load** (:func:`read_toml`): bytes → dict with ``tomllib``; a syntax error
   becomes ``<path>: line N: ...``.
2. **validate** (:func:`parse_config`): dict → :class:`Config`, one pydantic
   model per section, unknown keys rejected, every number bounded, types
   strict (TOML is typed: ``port = "1883"`` is a mistake worth reporting).
   Secrets are refused here with a line saying where they go.
3. **resolve** (:func:`resolve`): fill what depends on the machine — the
   device id from the host name, the MQTT client id, state paths under
   ``$STATE_DIRECTORY`` (systemd) or the user's state dir — and make relative
   paths absolute against the config file's folder.

Every problem is a :class:`ConfigError` (exit 78, so systemd does not restart
a unit whose configuration is wrong) whose message starts with the dotted key:
``mqtt.port: must be 1..65535, got "x"``. :func:`config_problems` lists all of
them for ``check-config``.

:func:`plan_reload` compares two configurations for SIGHUP: which changed keys
the running daemon may apply live and which need a restart.

The names of sections and keys are a contract with the other modules and with
deployed files; add keys, never rename them. Every key is documented, with
its default, in ``provisioning/config.example.toml``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import re
import socket
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from microexpr import secrets
from microexpr.errors import ConfigError

log = logging.getLogger(__name__)

APP_NAME = "microexpr"
DEFAULT_CONFIG_PATH = Path("/etc/microexpr/config.toml")

_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: Keys that would hold a secret: refused wherever they appear in the file.
_SECRET_KEYS = frozenset(
    {"password", "passwd", "mqtt_password", "api_key", "apikey", "openai_api_key", "secret", "token"}
)


# --------------------------------------------------------------------------
# Field helpers


def _to_path(value: Any) -> Any:
    # TOML has no null: "" is how a file says "use the default". Other
    # strings become paths; anything else is left for the type check to refuse.
    if value == "":
        return None
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return Path(value)
    return value


def _exact_int(value: Any) -> Any:
    # Literal[0, 1, 2] alone would accept true and 1.0 (they compare equal).
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("literal_error", "wrong type", {"expected": ""})
    return value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


#: A filesystem path; "" in the file means "the default", resolved later.
OptionalPath = Annotated[Path | None, BeforeValidator(_to_path)]
QoS = Annotated[Literal[0, 1, 2], BeforeValidator(_exact_int)]
LogLevel = Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)]


def _cross(field: str, message: str) -> PydanticCustomError:
    """An error found by comparing fields, attributed to ``field``."""
    return PydanticCustomError("cross_field", "{message}", {"field": field, "message": message})


def _check_topic(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if any(c in value for c in "+#\x00"):
        raise ValueError(f"must not contain MQTT wildcards (+, #), got {json.dumps(value)}")
    if value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValueError(f"must not start or end with / or contain empty levels, got {json.dumps(value)}")
    return value


class _Section(BaseModel):
    """Common rules: unknown keys are errors, types are strict, values frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=False)


# --------------------------------------------------------------------------
# Sections


class SourceConfig(_Section):
    """``[source]``: where frames come from."""

    #: "0" (camera index), "/dev/video0", "picamera2", a video file, an image
    #: or a folder of images; "" = none configured (``run --source`` decides).
    uri: str = ""
    #: Frame rate requested from a camera / used for file timestamps; 0 = the source's own.
    fps: float = Field(0.0, ge=0, le=1000)
    #: Requested width/height in pixels; 0 = native.
    width: int = Field(0, ge=0, le=7680)
    height: int = Field(0, ge=0, le=4320)
    #: Restart a file source at its end (demo kiosks).
    loop: bool = False
    #: Camera lost: first retry after this, doubling up to reconnect_max_s.
    reconnect_initial_s: float = Field(1.0, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _backoff_order(self) -> SourceConfig:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise _cross(
                "reconnect_max_s",
                f"must be >= source.reconnect_initial_s ({self.reconnect_initial_s:g}), got {self.reconnect_max_s:g}",
            )
        return self


class ModelConfig(_Section):
    """``[model]``: the FaceLandmarker bundle (always sha256-verified before loading)."""

    #: An explicit model file; "" = the provisioned one in models_dir.
    path: OptionalPath = None
    #: Where ``provision-model`` installs models; "" = $STATE_DIRECTORY/models
    #: under systemd, /var/lib/microexpr/models as root, else the user data dir.
    models_dir: OptionalPath = None


class TrackerConfig(_Section):
    """``[tracker]``: the face tracker backend."""

    #: "auto": MediaPipe where the CPU runs it, ONNX Runtime where it cannot
    #: (an ARMv8.0 core such as a Pi 4's: ``tracking.cpu``).
    backend: Literal["auto", "mediapipe", "onnx"] = "auto"
    num_faces: int = Field(1, ge=1, le=4)
    #: Inference threads; 0 = let the backend choose.
    threads: int = Field(0, ge=0, le=64)
    #: Analyse frame t on a second thread while the tracker works on frame
    #: t+1 (``microexpr.overlap``): same results, a frame costs about the
    #: tracker's time instead of the sum. Left unset, it follows the core
    #: count (``cores.py``): off on a single-core board.
    overlap: bool = True


class OnnxConfig(_Section):
    """``[onnx]``: the ONNX Runtime backend (used when tracker.backend = "onnx")."""

    variant: Literal["fp32", "int8"] = "fp32"
    #: Where the converted .onnx files live; "" = <model.models_dir>/onnx.
    models_dir: OptionalPath = None


class EngineConfig(_Section):
    """``[engine]``: spotting and decision thresholds (applied live on SIGHUP)."""

    #: Longest onset→offset that still counts as a micro-expression.
    micro_max_s: float = Field(0.5, gt=0, le=2.0)
    #: How long after an episode's offset it is emitted (causal spotting latency).
    emit_delay_s: float = Field(0.2, ge=0, le=5.0)
    #: Below this confidence, or this margin to the runner-up, an episode is ambiguous.
    ambiguous_confidence: float = Field(0.45, ge=0, le=1)
    ambiguous_margin: float = Field(0.15, ge=0, le=1)
    #: Robust z-score over the subject's baseline an AU needs to count as evidence.
    min_evidence_z: float = Field(3.0, ge=0, le=50)
    #: Whose label conventions the classifier follows (classify/profiles.py):
    #: "generic" (all labels, prototypes pooled over datasets) or "casme2"
    #: (CASME II's five classes and its own prototypes). Needs a restart.
    label_profile: Literal["generic", "casme2"] = "generic"
    #: A ``microexpr fit-prototypes`` file used instead of the profile's
    #: packaged prototypes; "" = the profile's. Needs a restart.
    prototypes: OptionalPath = None

    @field_validator("prototypes")
    @classmethod
    def _prototypes_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Relative to the config file's folder, like every path key (the
        # validation context carries it; without one, the working directory).
        base = (info.context or {}).get("base_dir") if isinstance(info.context, Mapping) else None
        if value is not None and not (_absolute(value, Path(base)) if base else value.expanduser()).is_file():
            raise ValueError(f"no prototypes file at {value}")
        return value


class MqttConfig(_Section):
    """``[mqtt]``: the broker. The password comes only from the secret ``mqtt_password``."""

    enabled: bool = True
    host: str = Field("localhost", min_length=1, max_length=253)
    port: int = Field(1883, ge=1, le=65535)
    tls: bool = False
    #: CA bundle for TLS; "" = the system's trust store.
    ca_file: OptionalPath = None
    #: Client certificate and key for brokers that require them (both or neither).
    cert_file: OptionalPath = None
    key_file: OptionalPath = None
    #: "" = "microexpr-<device_id>".
    client_id: str = Field("", max_length=128)
    #: "" = anonymous.
    username: str = ""
    topic_prefix: str = "microexpr"
    keepalive_s: int = Field(30, ge=5, le=3600)
    qos: QoS = 1
    #: Publish a throttled per-frame AU stream on <prefix>/<device_id>/aus.
    aus_stream: bool = False
    aus_interval_s: float = Field(0.5, ge=0.05, le=60)
    stats_interval_s: float = Field(10.0, ge=1, le=3600)
    #: Also publish the event lifecycle on <prefix>/<device_id>/event/lifecycle:
    #: "new" at onset, "update" past the apex, "end" with the decision, one
    #: event_id (docs/mqtt.md). The single ``event`` message is sent either way.
    event_lifecycle: bool = False
    #: Home Assistant MQTT discovery.
    discovery: bool = True
    discovery_prefix: str = "homeassistant"

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _topics(cls, value: str) -> str:
        return _check_topic(value)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if value != value.strip() or any(c.isspace() for c in value) or "/" in value:
            raise ValueError(f"must be a host name or address, got {json.dumps(value)}")
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> MqttConfig:
        for name in ("ca_file", "cert_file", "key_file"):
            if getattr(self, name) is not None and not self.tls:
                raise _cross(name, "is set but mqtt.tls is false")
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise _cross(missing, "set mqtt.cert_file and mqtt.key_file together")
        return self


class OutboxConfig(_Section):
    """``[outbox]``: the durable SQLite queue events wait in until the broker acknowledges them."""

    #: "" = $STATE_DIRECTORY/outbox.sqlite under systemd, else the user state dir.
    path: OptionalPath = None
    max_events: int = Field(100_000, ge=100, le=10_000_000)
    #: What happens when max_events are waiting: forget the oldest, or refuse the new one.
    when_full: Literal["drop_oldest", "reject_new"] = "drop_oldest"
    #: Free space (MB) kept on the outbox's file system: below it the outbox
    #: stops growing (the policy above applies) before SQLite fails. 0 = off.
    reserve_mb: float = Field(16.0, ge=0, le=1_000_000)
    #: Events held in memory while commits fail (disk full), written back when
    #: space returns; beyond it the oldest held is lost (counted). 0 = none.
    spill_max: int = Field(1000, ge=0, le=1_000_000)


class ReasonerConfig(_Section):
    """``[reasoner]``: ambiguous episodes to an OpenAI model. Off unless a person enables it.

    The API key comes only from the secret ``openai_api_key``.
    """

    enabled: bool = False
    model: str = Field("gpt-4o-mini", min_length=1, max_length=200)
    #: "" = the official endpoint; else any OpenAI-compatible server (http/https URL).
    base_url: str = ""
    timeout_s: float = Field(20.0, gt=0, le=600)
    concurrency: int = Field(1, ge=1, le=8)
    max_requests_per_day: int = Field(500, ge=0, le=1_000_000)
    max_tokens_per_day: int = Field(200_000, ge=0, le=1_000_000_000)
    max_requests_per_minute: int = Field(10, ge=1, le=10_000)
    #: "" = $STATE_DIRECTORY/reasoner.sqlite3 under systemd, else the user state dir.
    queue_path: OptionalPath = None
    #: Distinct AU signatures whose answers are remembered.
    cache_size: int = Field(2048, ge=0, le=1_000_000)
    temperature: float = Field(0.0, ge=0, le=2)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(f"must be an http:// or https:// URL, got {json.dumps(value)}")
        return value


class StatusConfig(_Section):
    """``[status]``: the local status page and Prometheus ``/metrics`` (``microexpr.status``).

    Off by default: when off the daemon does not even import the server.
    The page is read-only. It listens on loopback unless a person says
    otherwise twice (``bind`` and ``allow_remote``), because it shows what
    the device sees people feel.
    """

    enabled: bool = False
    #: An IP address to listen on; loopback unless ``allow_remote``.
    bind: str = "127.0.0.1"
    port: int = Field(8090, ge=1, le=65535)
    #: Must be true for a ``bind`` that is not a loopback address.
    allow_remote: bool = False
    #: Basic auth user; "" = no auth. The password comes only from the secret ``status_password``.
    username: str = Field("", max_length=64)
    #: Serve the latest camera frame at /preview.jpg, to loopback clients only.
    preview: bool = False
    #: Episodes the page lists (newest first).
    recent_episodes: int = Field(20, ge=1, le=500)
    #: How often the page's live AU bars are updated (server-sent events), seconds.
    live_interval_s: float = Field(0.2, ge=0.05, le=10)

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        import ipaddress

        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"must be an IP address (127.0.0.1, ::1, 0.0.0.0, ...), got {json.dumps(value)}") from None
        return value

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if ":" in value or any(not c.isprintable() for c in value):
            raise ValueError(f"must not contain ':' or control characters, got {json.dumps(value)}")
        return value

    def loopback(self) -> bool:
        import ipaddress

        return ipaddress.ip_address(self.bind).is_loopback

    @model_validator(mode="after")
    def _exposure(self) -> StatusConfig:
        if not self.loopback() and not self.allow_remote:
            raise _cross("bind", f"{self.bind} is not a loopback address; set status.allow_remote = true "
                                 "to serve other machines (and status.username for a password)")
        if self.preview and not self.loopback():
            raise _cross("preview", "camera pixels are served on a loopback bind only; "
                                    "set status.bind = \"127.0.0.1\" or status.preview = false")
        return self


class LoggingConfig(_Section):
    """``[logging]``."""

    #: debug | info | warning | error (case-insensitive). ``-v`` forces debug.
    level: LogLevel = "info"


class Config(_Section):
    """The whole file. Section defaults apply to sections the file leaves out."""

    #: Names this device in topics and the client id; "" = the host name,
    #: lower-cased, other characters replaced by "-".
    device_id: str = ""
    source: SourceConfig = SourceConfig()
    model: ModelConfig = ModelConfig()
    tracker: TrackerConfig = TrackerConfig()
    onnx: OnnxConfig = OnnxConfig()
    engine: EngineConfig = EngineConfig()
    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    reasoner: ReasonerConfig = ReasonerConfig()
    logging: LoggingConfig = LoggingConfig()
    status: StatusConfig = StatusConfig()

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        if value and not _DEVICE_ID.fullmatch(value):
            raise ValueError(
                f"must be 1-64 characters of A-Z, a-z, 0-9, _ and - (starting with a letter or digit), got {json.dumps(value)}"
            )
        return value

    def topic_base(self) -> str:
        """``<topic_prefix>/<device_id>``, the root of every topic this device publishes."""
        return f"{self.mqtt.topic_prefix}/{self.device_id}"

    def log_level(self) -> int:
        return int(getattr(logging, self.logging.level.upper()))


# --------------------------------------------------------------------------
# Step 1: load


def read_toml(path: Path) -> dict[str, Any]:
    """The file's contents as a dict; every failure is a ``ConfigError`` naming the path."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        # utf-8-sig: editors on Windows save a byte-order mark, which tomllib
        # would report as "line 1: Invalid statement" on an invisible character.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {_toml_message(str(exc))}") from None


def _toml_message(message: str) -> str:
    """``Expected '=' ... (at line 3, column 5)`` → ``line 3: Expected '=' ... (column 5)``."""
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message)
    if match:
        return f"line {match.group(1)}: {message[: match.start()]} (column {match.group(2)})"
    match = re.search(r"\s*\(at end of document\)\s*$", message)
    if match:
        return f"end of file: {message[: match.start()]}"
    return message


# --------------------------------------------------------------------------
# Step 2: validate


def _refuse_secrets(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    problems = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            problems.extend(_refuse_secrets(value, f"{dotted}."))
        elif key.lower() in _SECRET_KEYS:
            spec = secrets.OPENAI_API_KEY if (prefix.startswith("reasoner") or "api" in key.lower()) else secrets.MQTT_PASSWORD
            problems.append(f"{dotted}: secrets are not read from the config file; {spec.hint()}")
    return problems


def _field_at(loc: tuple[str | int, ...]) -> FieldInfo | None:
    """The pydantic field a validation error location points at."""
    model: type[BaseModel] | None = Config
    info: FieldInfo | None = None
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        annotation = info.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return info


def _fmt_number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _expected(info: FieldInfo) -> str:
    """What a field accepts, in words: ``1..65535``, ``one of "fp32", "int8"``, ``true or false``."""
    annotation = info.annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in get_args(annotation))
    if annotation is bool:
        return "true or false"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a table"
    if annotation is str:
        return "a string"
    if annotation is Path or Path in args:
        return 'a path (or "" for the default)'
    lo = hi = None
    lo_open = hi_open = False
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            lo = meta.ge
        elif isinstance(meta, annotated_types.Gt):
            lo, lo_open = meta.gt, True
        elif isinstance(meta, annotated_types.Le):
            hi = meta.le
        elif isinstance(meta, annotated_types.Lt):
            hi, hi_open = meta.lt, True
    closed = lo is not None and hi is not None and not lo_open and not hi_open
    if annotation is int:
        if closed:
            return f"{lo}..{hi}"
        kind = "an integer"
    else:
        if closed:
            return f"a number {_fmt_number(lo)}..{_fmt_number(hi)}"
        kind = "a number"
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {_fmt_number(lo)}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {_fmt_number(hi)}")
    return f"{kind} {' and '.join(parts)}" if parts else kind


def _shown(value: Any) -> str:
    """A value as the user wrote it in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (datetime, date, time)):
        return f"a date/time ({value.isoformat()})"
    return repr(value)


def _raw(data: Mapping[str, Any], loc: tuple[str | int, ...], fallback: Any) -> Any:
    """The value as written in the file (validators may have normalised the input)."""
    value: Any = data
    for part in loc:
        if not isinstance(value, Mapping) or part not in value:
            return fallback
        value = value[part]
    return value


def _problem(error: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """One validation error as ``dotted.key: what is wrong``."""
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "cross_field":
        return f"{'.'.join(map(str, (*loc, ctx['field'])))}: {ctx['message']}"
    key = ".".join(map(str, loc)) or "(top level)"
    if kind == "extra_forbidden":
        parent = _field_at(loc[:-1]) if len(loc) > 1 else None
        model = Config if len(loc) == 1 else (parent.annotation if parent is not None else None)
        hint = ""
        if isinstance(model, type) and issubclass(model, BaseModel):
            close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
            if close:
                hint = f' (did you mean "{close[0]}"?)'
        return f"{key}: unknown key{hint}"
    if kind == "value_error":
        return f"{key}: {ctx.get('error', error['msg'])}"
    if kind in {"string_too_short"} and error.get("input") == "":
        return f"{key}: must not be empty"
    info = _field_at(loc)
    if info is None:
        return f"{key}: {error['msg']}"
    if kind in {"string_too_long"}:
        return f"{key}: must be at most {ctx.get('max_length')} characters"
    return f"{key}: must be {_expected(info)}, got {_shown(_raw(data, loc, error.get('input')))}"


def config_problems(data: Mapping[str, Any], *, base_dir: Path | None = None) -> list[str]:
    """Every problem in a parsed file, one line each, in file order (empty = valid).

    ``base_dir`` is the config file's folder: relative paths are checked from there.
    """
    problems = _refuse_secrets(data)
    secret_keys = {problem.split(":", 1)[0] for problem in problems}
    try:
        Config.model_validate(data, context=_context(base_dir))
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            problem = _problem(error, data)
            # A refused secret is not also an "unknown key"; unions may repeat a line.
            if problem.split(":", 1)[0] not in secret_keys and problem not in problems:
                problems.append(problem)
    return problems


class ConfigProblems(ConfigError):
    """A file with validation problems: the message is the first, ``problems`` has them all."""

    def __init__(self, message: str, problems: tuple[str, ...]) -> None:
        super().__init__(message)
        self.problems = problems


def _context(base_dir: Path | None) -> dict[str, Any] | None:
    return {"base_dir": str(base_dir.absolute())} if base_dir is not None else None


def validate(data: Mapping[str, Any], *, origin: str | None = None, base_dir: Path | None = None) -> Config:
    """Validate a parsed file (without resolving); raise the first problem as ``ConfigError``."""
    problems = config_problems(data, base_dir=base_dir)
    if problems:
        more = f" (+{len(problems) - 1} more; run `microexpr check-config`)" if len(problems) > 1 else ""
        where = f" [{origin}]" if origin else ""
        raise ConfigProblems(f"{problems[0]}{more}{where}", tuple(problems))
    return Config.model_validate(data, context=_context(base_dir))


# --------------------------------------------------------------------------
# Step 3: resolve


def hostname_device_id(hostname: str | None = None) -> str:
    """The host name as a device id: lower case, [a-z0-9_-] only, at most 64 characters."""
    name = (hostname if hostname is not None else socket.gethostname()).split(".")[0].lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", name).strip("-_")[:64].strip("-_")
    return name or APP_NAME


#: Set by the template unit ``microexpr@.service`` to its instance name (``%i``).
ENV_INSTANCE = "MICROEXPR_INSTANCE"


def default_device_id(env: Mapping[str, str] | None = None, hostname: str | None = None) -> str:
    """The device id when the file leaves it empty: the host name, and under the
    template unit ``<host>-<instance>``, so several cameras on one board never
    share topics, availability or a client id (which the broker would fight over)."""
    env = os.environ if env is None else env
    host = hostname_device_id(hostname)
    instance = env.get(ENV_INSTANCE, "")
    if not instance:
        return host
    return hostname_device_id(f"{host}-{instance.replace('.', '-')}")


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the outbox and the reasoner queue live: systemd's StateDirectory, else the user state dir."""
    env = os.environ if env is None else env
    state = env.get("STATE_DIRECTORY", "")
    if state:
        # A colon-separated list when the unit names several; ours is the first.
        return Path(state.split(":")[0])
    from platformdirs import user_state_dir

    return Path(user_state_dir(APP_NAME))


def _absolute(path: Path | None, base: Path) -> Path | None:
    if path is None:
        return None
    path = path.expanduser()
    return path if path.is_absolute() else base / path


#: ``source.uri`` values that name a camera, not a path: an index, a device
#: node, the Pi camera. They are never made relative to anything.
CAMERA_SPEC = re.compile(r"\d+|/dev/.+|picamera2(:\d+)?")


def resolve_source_uri(uri: str, base: Path) -> str:
    """``source.uri`` with a relative file, folder or ``replay:FILE`` taken from ``base``.

    The same rule as every other path key (base = the config file's folder;
    for ``run --source`` the working directory, where the user typed it).
    Camera specs (:data:`CAMERA_SPEC`) and "" are returned unchanged.
    """
    text = uri.strip()
    if not text or CAMERA_SPEC.fullmatch(text) or "://" in text or text.lower().startswith("picamera"):
        return uri  # a URL or a misspelt camera is refused by the source in the user's own spelling
    if text.startswith("replay:"):
        inner = text.removeprefix("replay:")
        return f"replay:{_absolute(Path(inner), base)}" if inner else uri
    return str(_absolute(Path(text), base))


def resolve(config: Config, *, base_dir: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Fill the machine-dependent defaults; relative paths are taken from ``base_dir``
    (the config file's folder, else the working directory)."""
    from microexpr.models import default_models_dir

    env = os.environ if env is None else env
    base = (base_dir or Path.cwd()).absolute()
    state = state_dir(env)
    device_id = config.device_id or default_device_id(env)
    models_dir = _absolute(config.model.models_dir, base) or default_models_dir(env)
    return config.model_copy(
        update={
            "device_id": device_id,
            "source": config.source.model_copy(update={"uri": resolve_source_uri(config.source.uri, base)}),
            "engine": config.engine.model_copy(update={"prototypes": _absolute(config.engine.prototypes, base)}),
            "model": config.model.model_copy(
                update={"path": _absolute(config.model.path, base), "models_dir": models_dir}
            ),
            "onnx": config.onnx.model_copy(
                update={"models_dir": _absolute(config.onnx.models_dir, base) or models_dir / "onnx"}
            ),
            "mqtt": config.mqtt.model_copy(
                update={
                    "client_id": config.mqtt.client_id or f"{APP_NAME}-{device_id}",
                    "ca_file": _absolute(config.mqtt.ca_file, base),
                    "cert_file": _absolute(config.mqtt.cert_file, base),
                    "key_file": _absolute(config.mqtt.key_file, base),
                }
            ),
            "outbox": config.outbox.model_copy(
                update={"path": _absolute(config.outbox.path, base) or state / "outbox.sqlite"}
            ),
            "reasoner": config.reasoner.model_copy(
                update={"queue_path": _absolute(config.reasoner.queue_path, base) or state / "reasoner.sqlite3"}
            ),
        }
    )


# --------------------------------------------------------------------------
# All three


def find_config_file(explicit: Path | None, default: Path | None = None) -> Path | None:
    """The file to read: ``--config`` if given (it must exist), else the default
    (:data:`DEFAULT_CONFIG_PATH`) if it exists, else None (run on built-in
    defaults: the demo case)."""
    if explicit is not None:
        return explicit
    default = DEFAULT_CONFIG_PATH if default is None else default
    return default if default.exists() else None


def parse_config(
    data: Mapping[str, Any], *, base_dir: Path | None = None, env: Mapping[str, str] | None = None,
    origin: str | None = None,
) -> Config:
    """Validate and resolve an already-parsed mapping."""
    return resolve(validate(data, origin=origin, base_dir=base_dir), base_dir=base_dir, env=env)


def load_config(
    path: Path | None = None, *, default_path: Path | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read, validate and resolve the configuration.

    ``path`` is ``--config``: it must exist. Without it the default file is
    used when present, and the built-in defaults otherwise.
    """
    chosen = find_config_file(path, default_path)
    if chosen is None:
        log.debug("no configuration file at %s: using defaults", default_path or DEFAULT_CONFIG_PATH)
        return resolve(Config(), env=env)
    data = read_toml(chosen)
    config = parse_config(data, base_dir=chosen.absolute().parent, env=env, origin=str(chosen))
    log.debug("configuration loaded from %s", chosen)
    return config


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--config`` option shared by ``run`` and ``check-config``."""
    parser.add_argument(
        "--config", type=Path, default=None, metavar="PATH",
        help=f"configuration file (default: {DEFAULT_CONFIG_PATH} if it exists, else built-in defaults)",
    )


# --------------------------------------------------------------------------
# Reload (SIGHUP)

#: ``[engine]`` keys that rebuild the classifier: read once at start.
RESTART_ENGINE_KEYS = frozenset({"label_profile", "prototypes"})
#: Keys the daemon applies without a restart. Everything else (the source,
#: the model, the tracker, the broker connection, the outbox, the reasoner's
#: worker set-up, the device id) is read once at start.
LIVE_KEYS: frozenset[str] = frozenset(
    {f"engine.{name}" for name in EngineConfig.model_fields if name not in RESTART_ENGINE_KEYS}
    | {
        "logging.level",
        "mqtt.stats_interval_s",
        "mqtt.aus_stream",
        "mqtt.aus_interval_s",
        "reasoner.max_requests_per_day",
        "reasoner.max_tokens_per_day",
        "reasoner.max_requests_per_minute",
    }
)


def flatten(config: Config) -> dict[str, Any]:
    """``{"mqtt.port": 1883, ...}``: every key of a configuration, dotted."""
    flat: dict[str, Any] = {}
    for name, value in config:
        if isinstance(value, BaseModel):
            for key, inner in value:
                flat[f"{name}.{key}"] = inner
        else:
            flat[name] = value
    return flat


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload changes: keys applied now, keys that wait for a restart."""

    live: tuple[str, ...]
    restart: tuple[str, ...]
    #: The configuration to run with: the old one plus the live changes.
    effective: Config

    @property
    def changed(self) -> bool:
        return bool(self.live or self.restart)

    def sections(self) -> frozenset[str]:
        """Sections with a live change (``{"engine", "logging"}``) — what to re-apply."""
        return frozenset(key.split(".")[0] for key in self.live)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare the running configuration with a freshly loaded one."""
    before, after = flatten(old), flatten(new)
    changed = [key for key in after if before.get(key) != after[key]]
    live = tuple(key for key in changed if key in LIVE_KEYS)
    restart = tuple(key for key in changed if key not in LIVE_KEYS)
    effective = old
    for section in {key.split(".")[0] for key in live}:
        updates = {key.split(".", 1)[1]: after[key] for key in live if key.startswith(f"{section}.")}
        effective = effective.model_copy(update={section: getattr(effective, section).model_copy(update=updates)})
    return ReloadPlan(live=live, restart=restart, effective=effective)


# --------------------------------------------------------------------------
# Display (check-config)


def to_plain(config: Config) -> dict[str, Any]:
    """JSON-ready nested dict; unset optional paths become ""."""
    def plain(value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, Path):
            return str(value)
        return value

    out: dict[str, Any] = {}
    for name, value in config:
        if isinstance(value, BaseModel):
            out[name] = {key: plain(inner) for key, inner in value}
        else:
            out[name] = plain(value)
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def to_toml(plain: Mapping[str, Any]) -> str:
    """Render :func:`to_plain` output as TOML that :func:`load_config` reads back."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in plain.items() if not isinstance(value, Mapping)]
    for section, values in plain.items():
        if isinstance(values, Mapping):
            lines.append("")
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def iter_keys() -> Iterable[str]:
    """Every dotted key the file may contain (for documentation checks)."""
    for name, info in Config.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from (f"{name}.{key}" for key in annotation.model_fields)
        else:
            yield name
