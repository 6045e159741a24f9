"""Site configuration: TOML → pydantic models, validated once at start-up.

Every model forbids unknown keys. ``load_config`` raises one ``ConfigError`` listing every
problem it found, each with the file, the dotted field path, what was expected and what was
found, so an installer can fix a whole file in one pass. See docs/configuration.md.

Secrets (any `password`, `token`, `secret`, `scbk` or `pin` key) may be written as ``"env:NAME"``
(read from the environment variable NAME) or ``"file:/path"`` (the file's first line) instead of
inline. ``run`` needs them; ``check`` lists the ones it cannot read and goes on without them.

The file itself decides what the gateway does and whom it pages: a file its group or others
may write is refused by every command (``file_mode_problems``), and a file everyone may read
that holds a secret written into it gets a warning (``warn_inline_secrets``).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import urllib3
from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
)

from drivers import SERIAL_CODECS, rtl433, zigbee2mqtt
from drivers.modbus_profiles import Profile, builtin_profiles, load_profile
from edge_rules import RuleSet, available_packs, load_rules
from edge_rules.rules import resident_thresholds
from edge_rules.schedule import format_duration_en, parse_duration
from gateway.errors import ConfigError, ConfigProblem, PayloadError
from gateway.models import Family, Kind
from gateway.site.alerting import (
    CHANNEL_TAGS,
    ChannelSettings,
    DingTalkChannelSettings,
    Ladder,
    NotifySettings,
    Route,
    Shift,
    WebhookChannelSettings,
    WeComChannelSettings,
)
from gateway.site.console import ConsoleSettings
from gateway.site.locate import key_lines, line_of
from gateway.site.records import Shared, record
from gateway.site.testmode import TestModeSettings
from gateway.site.validation import ID_PATTERN, SECRET_KEYS, URL_PATTERN, FilePath, problems_from_validation

_ID = ID_PATTERN
log = logging.getLogger("sensegate.config")


# The config is validated in pydantic's strict mode (``parse_config``): ``lives_alone = "yes"``
# or ``port = "1883"`` are mistakes, not values to coerce. TOML has no paths or enums, so those
# fields take their string here.


def _member(enum: type[StrEnum], *also: str) -> Any:
    """A before-validator taking an ``enum`` member by its value (or one of ``also`` as is)."""
    values = [m.value for m in enum] + list(also)
    words = ", ".join(repr(v) for v in values[:-1]) + f" or {values[-1]!r}"

    def member(value: Any) -> Any:
        if isinstance(value, enum) or value in also:
            return value
        if isinstance(value, str) and value in values:
            return enum(value)
        raise ValueError(words)

    return BeforeValidator(member)


FamilyName = Annotated[Family, _member(Family)]
KindName = Annotated[Kind, _member(Kind)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySettings(_Model):
    id: Annotated[str, Field(pattern=_ID, max_length=64)]
    site: str = ""
    data_dir: FilePath = Path("sensegate-data")


class TlsSettings(_Model):
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    insecure: bool = False  # skip hostname verification; for a broker on the same LAN only


class MqttSettings(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    client_id: str = ""  # default: "sensegate-<gateway id>"
    username: str = ""
    password: SecretStr = SecretStr("")
    tls: TlsSettings | None = None
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    # A persistent session makes the broker queue QoS 1 events while the gateway is down.
    persistent_session: bool = True
    topic_prefix: str = ""  # where the gateway publishes; default "sensegate/<gateway id>"
    zigbee2mqtt_base: str = "zigbee2mqtt"
    rtl_433_topic: str = "rtl_433/+/events"
    native_base: str = "sensegate/in"
    # Receive, decode, commit and acknowledge in a process of its own, on a core of its own,
    # beside the rules and alerts (gateway/ingest/process.py; `sensegate run` only).
    ingest_process: bool = False
    # Alarm devices' messages on a connection of their own, so that an alarm never queues at the
    # broker behind other devices' telemetry (gateway/ingest/lane.py): true for fall radars,
    # smoke, gas and water detectors and SOS buttons, or a list of those families. Needs a broker
    # that queues a client's messages in the order it received them, as Mosquitto does.
    alarm_lane: bool | list[FamilyName] = False


# A smaller reserve would checkpoint the WAL every few pages (its size is a quarter of the reserve).
RESERVE_MIN = 256 * 1024


class StoreSettings(_Model):
    path: FilePath | None = None  # default: <data_dir>/store.sqlite3
    max_bytes: ByteSize = ByteSize(512 * 1024 * 1024)
    # "full" survives a power cut; "normal" only a crash of the process.
    synchronous: Literal["full", "normal"] = "full"
    # Held on the store's filesystem for the day it fills up (docs/store.md, "A full disk"):
    # default 1/16 of max_bytes within 1-8 MiB; 0: none.
    reserve_bytes: ByteSize | None = None
    # Group commit: events are written in batches before the broker is acknowledged. An alarm
    # ends its batch at once (gateway/ingest/mqtt.py): the window only ever delays telemetry,
    # and a longer one means fewer commits (fsyncs, pages rewritten) at a busy site.
    commit_batch: Annotated[int, Field(ge=1, le=10_000)] = 500
    commit_interval_ms: Annotated[int, Field(ge=0, le=1000)] = 25


class _OutputBase(_Model):
    name: Annotated[str, Field(pattern=_ID)]
    batch_size: Annotated[int, Field(ge=1, le=50_000)] = 1000
    flush_interval: Annotated[float, Field(gt=0, le=3600)] = 1.0
    timeout: Annotated[float, Field(gt=0, le=600)] = 10.0
    gzip: bool = True
    backoff_initial: Annotated[float, Field(gt=0, le=3600)] = 1.0
    backoff_max: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    families: list[FamilyName] | None = None  # only these families; default all


_URL = URL_PATTERN


class InfluxV1Output(_OutputBase):
    type: Literal["influxdb_v1"]
    url: Annotated[str, Field(pattern=_URL)]
    database: Annotated[str, Field(min_length=1)]  # the sink refuses an empty one
    retention_policy: str = ""
    username: str = ""
    password: SecretStr = SecretStr("")
    create_database: bool = False


class InfluxV2Output(_OutputBase):
    type: Literal["influxdb_v2"]
    url: Annotated[str, Field(pattern=_URL)]
    org: str = ""
    bucket: Annotated[str, Field(min_length=1)]  # the sink refuses an empty one
    token: SecretStr = SecretStr("")


Output = Annotated[InfluxV1Output | InfluxV2Output, Field(discriminator="type")]


class AlertSettings(_Model):
    console: bool = True  # print alerts on the terminal (the demo turns this on)
    # A repeat of the same problem within this window updates the open alert instead of
    # raising a new one.
    repeat_window: Annotated[float, Field(gt=0)] = 600.0
    # Flapping (抖动): a problem raised this many times within flap_window is held open (one
    # alert with a count and a visible note) until it has stayed clear for flap_window.
    flap_threshold: Annotated[int, Field(ge=2, le=1000)] = 3
    flap_window: Annotated[float, Field(gt=0, le=86_400)] = 600.0


class RulesSettings(_Model):
    """Which rules run: shipped packs by name and the site's own rule files (edge_rules/README.md).

    Order matters where rules share a dedup key: the first rule to match an event words the
    alert, so the more specific pack goes first.
    """

    packs: list[str] = ["elderly_care", "smart_community"]
    files: list[FilePath] = []  # relative to this config file


class Building(_Model):
    id: Annotated[str, Field(pattern=_ID)]
    name: str = ""  # e.g. "3号楼"
    units: list[str] = []


# Households, residents and devices are records (gateway/site/records.py): a site has them by
# the thousand, and a record is a tenth of a model's size.


@record
@dataclass(frozen=True, slots=True)
class Household:
    id: Annotated[str, Field(pattern=_ID)]  # e.g. "3-2-502"
    building: Shared
    unit: Shared = ""
    number: Shared = ""  # the door number shown to people, e.g. "502"


# A duration such as "7d", "14d", "30d" (or seconds), kept as seconds.
Duration = Annotated[float, BeforeValidator(parse_duration)]


# As access controllers report them in values.credential, e.g. "card:123-4567".
_CREDENTIAL = r"^[a-z][a-z0-9_]*:\S+$"


@record
@dataclass(frozen=True, slots=True)
class Contact:
    name: Shared
    phone: str = ""
    relation: Shared = ""  # 子女, 邻居, 网格员 …


@record
@dataclass(frozen=True, slots=True)
class Resident:
    id: Annotated[str, Field(pattern=_ID)]
    name: Shared
    household: Shared
    lives_alone: bool = False
    risk_tier: Literal["high", "medium", "low"] = "low"
    contacts: list[Contact] = field(default_factory=list)
    visit_every: Duration | None = None  # overrides the [visits] plan of the risk tier
    credentials: list[Annotated[str, Field(pattern=_CREDENTIAL)]] = field(default_factory=list)  # own door cards
    # Their own rule windows, by the names the rules declare (resident_threshold), e.g.
    # { no_activity = "5h", fall_recovery = "45s" }: wins over the risk tier's. Checked against
    # the loaded rules in _check_resident_thresholds.
    thresholds: dict[str, Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]] = field(default_factory=dict)


VisitorRole = Literal["community_worker", "volunteer", "grid_worker", "family", "doctor"]


class Visitor(_Model):
    """A registered visitor (探访人): who may be recorded as visiting elders."""

    id: Annotated[str, Field(pattern=_ID)]
    name: str
    role: VisitorRole
    phone: str = ""
    # As access controllers report them in values.credential, e.g. "card:123-4567".
    credentials: list[Annotated[str, Field(pattern=_CREDENTIAL)]] = []
    households: list[str] = []  # households this visitor looks after (building doors count for them)


StaffRole = Literal["property", "security", "maintenance", "fire_station", "community_worker", "manager"]


class Staff(_Model):
    """Property staff, security, maintenance, the mini fire station (微型消防站), community workers:
    the people alerts are routed to and who may open doors."""

    id: Annotated[str, Field(pattern=_ID)]
    name: str
    role: StaffRole
    phone: str = ""
    buildings: list[str] = []  # the buildings they cover; empty: the whole block
    credentials: list[Annotated[str, Field(pattern=_CREDENTIAL)]] = []


class VisitPlans(_Model):
    """探访周期 per risk tier."""

    high: Duration = 7 * 86_400.0
    medium: Duration = 14 * 86_400.0
    low: Duration = 30 * 86_400.0


class VisitSettings(_Model):
    """Visit tracking (探访): plans, who is covered, the overdue alert. See docs/visits.md."""

    plans: VisitPlans = VisitPlans()
    lives_alone: bool = True  # cover residents living alone (特殊困难老年人); false: every resident
    include: list[str] = []  # residents covered in addition
    exclude: list[str] = []  # residents not covered
    # A card swipe at the building's door counts as a visit to the households the visitor
    # looks after in that building (false: only a household's own door counts).
    building_door_counts: bool = True
    overdue_severity: Literal[3, 4] = 3


@record
@dataclass(frozen=True, slots=True)
class Zigbee2MqttSource:
    format: Literal["zigbee2mqtt"]
    friendly_name: str  # the device topic is "<zigbee2mqtt_base>/<friendly_name>"
    actions: dict[str, KindName] | None = None  # button action → kind, e.g. HS1EB {single = "sos_pressed"}


@record
@dataclass(frozen=True, slots=True)
class Rtl433Source:
    format: Literal["rtl_433"]
    id: str  # the decoder's device id, decimal as rtl_433 prints it
    channel: Shared = ""
    # Code (decimal or 0x-hex) → kind for EV1527-style devices; field name → kind for flag
    # models (Honeywell "alarm", Interlogix "switch2"); "" means "known, means nothing".
    codes: dict[str, Annotated[Kind | Literal[""], _member(Kind, "")]] | None = None


@record
@dataclass(frozen=True, slots=True)
class NativeSource:
    format: Literal["native"]  # topic "<native_base>/<device id>"


Source = Annotated[Zigbee2MqttSource | Rtl433Source | NativeSource, Field(discriminator="format")]


class RadarSettings(_Model):
    """Written to an MR60FDA2 / LD6002C radar after every open of its port (ranges: LD6002C reference)."""

    install_height: Annotated[float, Field(ge=0.5, le=5.0)] | None = None  # metres above the floor
    fall_threshold: Annotated[float, Field(ge=0.1, le=2.0)] | None = None  # metres; firmware default 0.6
    sensitivity: Annotated[int, Field(ge=3, le=30)] | None = None

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.model_dump().items() if v is not None}


_PORT = r"^/\S+$"


class SerialSource(_Model):
    """A device on its own UART: ``serial = { port = "/dev/serial/by-id/…", protocol = "mr60fda1" }``."""

    port: Annotated[str, Field(pattern=_PORT)]  # absolute; prefer /dev/serial/by-id/… over /dev/ttyUSBn
    protocol: Literal["mr60fda1", "mr60fda2"]  # a key of drivers.SERIAL_CODECS
    baudrate: Annotated[int, Field(ge=1200, le=4_000_000)] = 115200
    # No valid frame for this long → the device is offline; the port is closed and reopened.
    idle_timeout: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    backoff_initial: Annotated[float, Field(gt=0, le=3600)] = 1.0
    backoff_max: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    # Unchanged presence / motion / heartbeat is stored again at most this often (seconds).
    refresh_interval: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    radar: RadarSettings | None = None  # mr60fda2 only


class ModbusBusSettings(_Model):
    """One RS-485 bus of Modbus RTU detectors (``[[modbus_buses]]``); defaults as ``ModbusBus``'s."""

    id: Annotated[str, Field(pattern=_ID, max_length=64)]
    port: Annotated[str, Field(pattern=_PORT)]  # absolute; prefer /dev/serial/by-id/…
    baudrate: Annotated[int, Field(ge=1200, le=921_600)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout: Annotated[float, Field(gt=0, le=10)] = 1.0  # seconds to wait for one answer
    poll_interval: Annotated[float, Field(gt=0, le=3600)] = 2.0  # one round of every detector
    offline_after: Annotated[int, Field(ge=1, le=1000)] = 3  # consecutive failed polls
    telemetry_interval: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    deadband: Annotated[float, Field(ge=0)] = 1.0  # concentration change stored at once
    backoff_initial: Annotated[float, Field(gt=0, le=3600)] = 1.0
    backoff_max: Annotated[float, Field(gt=0, le=86_400)] = 30.0


class ModbusSource(_Model):
    """A detector on a Modbus bus: ``modbus = { bus = "b1", unit_id = 3, profile = "GENERIC-GAS" }``."""

    bus: str  # the id of a [[modbus_buses]] entry
    unit_id: Annotated[int, Field(ge=1, le=247)]  # the detector's slave address
    profile: Annotated[str, Field(min_length=1)]  # a shipped profile or a [modbus_profiles.<MODEL>] table


class OsdpBusSettings(_Model):
    """One RS-485 bus of OSDP door readers (``[[osdp_buses]]``), the gateway its control panel.
    See drivers/README-osdp.md."""

    id: Annotated[str, Field(pattern=_ID, max_length=64)]
    port: Annotated[str, Field(pattern=_PORT)]  # absolute; prefer /dev/serial/by-id/…
    baudrate: Literal[9600, 19200, 38400, 57600, 115200, 230400] = 9600
    # No reader answering for this long: the port is closed and reopened.
    online_timeout: Annotated[float, Field(gt=0, le=3600)] = 15.0
    backoff_initial: Annotated[float, Field(gt=0, le=3600)] = 1.0
    backoff_max: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    # The lock stays released this long after a grant or an exit request; a door that opens
    # outside it while locked is reported forced (door_opened with secured = true).
    unlock_window: Annotated[float, Field(gt=0, le=25)] = 5.0
    # A door open longer than this warns at the reader and is stored as held_open on closing.
    held_open_after: Annotated[Duration, Field(gt=0, le=86_400)] = 30.0
    # The readers' output that drives the door strike, pulsed on a grant; -1: none (the
    # strike is wired elsewhere).
    strike_output: Annotated[int, Field(ge=-1, le=255)] = 0
    # Secure channel base key: 32 hex digits, or "env:NAME" / "file:/path". Without one the
    # readers talk in plain text (install mode).
    scbk: SecretStr | None = None


class OsdpSource(_Model):
    """A door reader on an OSDP bus: ``osdp = { bus = "door-bus", address = 0 }``."""

    bus: str  # the id of an [[osdp_buses]] entry
    address: Annotated[int, Field(ge=0, le=126)]  # the reader's OSDP address (127 is broadcast)
    door_input: Annotated[int, Field(ge=0, le=63)] = 0  # the input wired to the door contact
    rex_input: Annotated[int, Field(ge=-1, le=63)] = 1  # the exit-button input; -1: none


@record
@dataclass(frozen=True, slots=True)
class Device:
    """A configured device, reached over MQTT (``mqtt = {…}``), on its own serial port
    (``serial = {…}``), on a Modbus bus (``modbus = {…}``) or on an OSDP bus (``osdp = {…}``)
    — exactly one of them (checked in
    ``cross_check``)."""

    id: Annotated[str, Field(pattern=_ID, max_length=128)]
    family: FamilyName
    model: Shared
    household: Shared = ""  # empty for public areas: then building is required
    building: Shared = ""
    room: Shared = ""
    mqtt: Source | None = None
    serial: SerialSource | None = None
    modbus: ModbusSource | None = None
    osdp: OsdpSource | None = None
    # How often the device reports when all is well (seconds): device supervision raises a
    # maintenance ticket after a multiple of it in silence. Unset: the rule's own default.
    report_interval: Annotated[float, Field(gt=0)] | None = None


_HA_ID = r"^[A-Za-z0-9_-]+$"
_TOPIC = r"^[^#+\s]+[^#+\s/]$"  # a plain topic: no wildcards, no trailing slash


class HaSettings(BaseModel):
    """``[home_assistant]`` in the site config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    discovery_prefix: Annotated[str, Field(pattern=_TOPIC)] = "homeassistant"
    status_topic: Annotated[str, Field(pattern=_TOPIC)] = "homeassistant/status"  # HA's birth / will
    node_id: Annotated[str, Field(pattern=_HA_ID, max_length=64)] | None = None  # default: the gateway id
    # Seconds a stateless trigger (an SOS press, an alarm that is never cleared) shows ON.
    off_delay: Annotated[int, Field(ge=1, le=86_400)] = 300


class SiteConfig(_Model):
    gateway: GatewaySettings
    mqtt: MqttSettings = MqttSettings()
    store: StoreSettings = StoreSettings()
    alerts: AlertSettings = AlertSettings()
    rules: RulesSettings = RulesSettings()
    outputs: list[Output] = []
    buildings: list[Building] = []
    households: list[Household] = []
    residents: list[Resident] = []
    devices: list[Device] = []
    staff: list[Staff] = []
    visitors: list[Visitor] = []
    visits: VisitSettings = VisitSettings()
    modbus_buses: list[ModbusBusSettings] = []
    osdp_buses: list[OsdpBusSettings] = []
    # Getting alerts to people (docs/alerts.md).
    notify: NotifySettings = NotifySettings()
    channels: list[ChannelSettings] = []
    roster: list[Shift] = []
    ladders: list[Ladder] = []
    routes: list[Route] = []
    home_assistant: HaSettings = HaSettings()  # MQTT discovery (docs/home-assistant.md)
    console: ConsoleSettings = ConsoleSettings()  # the duty desk, 值班台 (docs/console.md)
    test_mode: TestModeSettings = TestModeSettings()  # 测试模式 and walk tests (docs/installer.md)
    # Register maps by model, as in drivers/profiles/*.toml; validated in cross_check with
    # drivers.modbus_profiles.load_profile so a mistake is named by its path in this file.
    modbus_profiles: dict[str, dict[str, Any]] = {}

    # Derived settings, resolved against the gateway id.
    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"sensegate-{self.gateway.id}"

    @property
    def topic_prefix(self) -> str:
        return (self.mqtt.topic_prefix or f"sensegate/{self.gateway.id}").rstrip("/")

    @property
    def store_path(self) -> Path:
        return self.store.path or self.gateway.data_dir / "store.sqlite3"


# --------------------------------------------------------------------------- loading


def load_config(
    path: str | Path,
    *,
    unset_secrets: list[ConfigProblem] | None = None,
    mode_problems: list[ConfigProblem] | None = None,
) -> SiteConfig:
    """Read, validate and cross-check a site config file. Raises ``ConfigError``.

    A secret whose environment variable is unset or whose file cannot be read is a config
    error, unless ``unset_secrets`` is given (by commands that do not use the secrets:
    ``check``, ``simulate``): then it is listed there and the config holds a stand-in for it.
    Likewise a file others may write, unless ``mode_problems`` is given (``doctor``, which
    reports it with the rest)."""
    file = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
        mode = stat.S_IMODE(Path(path).stat().st_mode)
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(file, "", "an existing file", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(file, "", "a readable UTF-8 file", str(exc))]) from None
    problems = file_mode_problems(file, mode)
    if problems and mode_problems is None:
        raise ConfigError(problems)
    if mode_problems is not None:
        mode_problems.extend(problems)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(file, "", "valid TOML", str(exc))]) from None
    base_dir = Path(path).resolve().parent
    config = parse_config(data, file=file, base_dir=base_dir, unset_secrets=unset_secrets, source=text)
    warn_inline_secrets(file, mode, data)
    return config


def file_mode_problems(file: str, mode: int) -> list[ConfigProblem]:
    """A config file its group or others may write is refused: whoever can change it decides
    who is paged, and can silence an alarm."""
    writers = [who for who, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if mode & bit]
    if not writers:
        return []
    return [
        ConfigProblem(
            file,
            "",
            f"a file only its owner may write (chmod go-w {file})",
            f"mode {mode:04o}, writable by its {' and '.join(writers)}",
        )
    ]


def inline_secrets(data: Any, path: str = "") -> list[str]:
    """The paths of secret keys whose value is written in the file (not ``env:`` / ``file:``)."""
    found: list[str] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            sub = f"{path}.{key}" if path else str(key)
            if key in _SECRET_KEYS and isinstance(value, str):
                if value and not value.startswith(("env:", "file:")):
                    found.append(sub)
            else:
                found.extend(inline_secrets(value, sub))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            found.extend(inline_secrets(item, f"{path}[{i}]"))
    return found


def warn_inline_secrets(file: str, mode: int, data: Mapping[str, Any]) -> list[str]:
    """Warn (and return the paths) when a file everyone may read holds secrets written into it."""
    if not mode & stat.S_IROTH:
        return []
    paths = inline_secrets(data)
    if paths:
        log.warning(
            '%s is readable by everyone and holds secrets written into it (%s): use "env:NAME" or '
            '"file:/path" for them, or chmod o-r %s (docs/configuration.md#secrets)',
            file,
            ", ".join(paths),
            file,
        )
    return paths


def parse_config(
    data: Mapping[str, Any],
    file: str = "<config>",
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    unset_secrets: list[ConfigProblem] | None = None,
    source: str | None = None,
) -> SiteConfig:
    """Validate an already-parsed config mapping (used by ``load_config`` and the demo);
    ``unset_secrets`` as for ``load_config``. ``source``: the TOML text, for the line of each
    problem."""
    env = os.environ if environ is None else environ
    missing: list[ConfigProblem] = []
    resolved = _resolve_secrets(data, file, env, missing)
    try:
        config = _validate(resolved, file, base_dir)
    except ConfigError as exc:
        # A stand-in is no judge of the value that will be set: nothing more is said about it.
        skipped = {p.path for p in missing}
        problems = [p for p in exc.problems if p.file != file or p.path not in skipped]
        if unset_secrets is None:
            problems = missing + problems
        raise ConfigError(_placed(problems or exc.problems, file, data, source)) from None
    if unset_secrets is not None:
        unset_secrets.extend(_placed(missing, file, data, source))
    elif missing:
        raise ConfigError(_placed(missing, file, data, source))
    return config


# The lists whose items a person names: a problem says devices['3-2-502-smoke'], not devices[2].
_NAMED_BY = {
    "buildings": "id",
    "households": "id",
    "residents": "id",
    "devices": "id",
    "staff": "id",
    "visitors": "id",
    "channels": "id",
    "ladders": "id",
    "modbus_buses": "id",
    "osdp_buses": "id",
    "outputs": "name",
}
_ITEM = re.compile(rf"(?<![\w.])({'|'.join(_NAMED_BY)})\[(\d+)\]")


def _placed(
    problems: list[ConfigProblem], file: str, data: Mapping[str, Any], source: str | None
) -> list[ConfigProblem]:
    """``problems`` of ``file`` with their line in ``source`` and each named item by its id
    (in the path and where ``expected`` refers to one); an id that is missing or not unique
    keeps the index."""
    lines = key_lines(source) if source is not None else {}

    def name(match: re.Match[str]) -> str:
        section, index = match.group(1), int(match.group(2))
        items = data.get(section)
        if not isinstance(items, list) or index >= len(items) or not isinstance(items[index], Mapping):
            return match.group(0)
        key = items[index].get(_NAMED_BY[section])
        same = sum(1 for item in items if isinstance(item, Mapping) and item.get(_NAMED_BY[section]) == key)
        return f"{section}[{key!r}]" if isinstance(key, str) and key and same == 1 else match.group(0)

    return [
        replace(
            p,
            path=_ITEM.sub(name, p.path),
            expected=_ITEM.sub(name, p.expected),
            line=line_of(lines, p.path) if p.path else None,
        )
        if p.file == file
        else p
        for p in problems
    ]


def _validate(resolved: Any, file: str, base_dir: Path | None) -> SiteConfig:
    problems: list[ConfigProblem] = []
    try:
        config = SiteConfig.model_validate(resolved, strict=True)
    except ValidationError as exc:
        problems.extend(
            problems_from_validation(exc, file, root=SiteConfig, drop=_UNION_TAGS, pattern_words=_PATTERN_WORDS)
        )
        raise ConfigError(problems) from None
    problems.extend(cross_check(config, file))
    if problems:
        raise ConfigError(problems)
    if base_dir is not None:
        config = _anchor_paths(config, base_dir)
    rules = site_rules(config, file)  # rule files are part of the config: their mistakes fail start-up too
    problems.extend(_check_resident_thresholds(config, rules, file))
    if problems:
        raise ConfigError(problems)
    return config


def output_families(config: SiteConfig) -> dict[str, frozenset[str] | None]:
    """Each output's name and the families it takes (None: all): a stored event gets a pending
    row for each output that takes it."""
    return {o.name: None if o.families is None else frozenset(f.value for f in o.families) for o in config.outputs}


def site_rules(config: SiteConfig, file: str = "<config>") -> RuleSet:
    """Load the rule packs and files the config names; ``ConfigError`` locates every mistake."""
    known = set(available_packs())
    unknown = [
        ConfigProblem(file, f"rules.packs[{i}]", f"a shipped pack ({', '.join(sorted(known))})", repr(p))
        for i, p in enumerate(config.rules.packs)
        if p not in known
    ]
    if unknown:
        raise ConfigError(unknown)
    return load_rules(*config.rules.packs, *config.rules.files)


_SECRET_KEYS = SECRET_KEYS


def _check_resident_thresholds(config: SiteConfig, rules: RuleSet, file: str) -> list[ConfigProblem]:
    """A resident's ``thresholds`` may only name what the site's rules declare as
    ``resident_threshold``, and a sequence's window must stay longer than its ``min_gap``."""
    declared = resident_thresholds(rules.rules)
    known = f"a threshold the rules declare ({', '.join(sorted(declared)) or 'none'})"
    problems: list[ConfigProblem] = []
    for i, r in enumerate(config.residents):
        for name, value in r.thresholds.items():
            path = f"residents[{i}].thresholds.{name}"
            if name not in declared:
                problems.append(ConfigProblem(file, path, known, repr(name)))
                continue
            for rule in declared[name]:
                gap = getattr(rule, "min_gap", None)
                if gap is not None and value <= gap:
                    expected = f"more than {rule.id}'s min_gap ({format_duration_en(gap)})"
                    problems.append(ConfigProblem(file, path, expected, format_duration_en(value)))
    return problems


# What an unavailable secret stands in as when the command does not use it: a value every
# secret field accepts (32 hex digits: an OSDP key; long enough for a token), a SIM PIN none.
_STAND_IN = "0" * 32
_STAND_IN_BY_KEY = {"pin": ""}


def _resolve_secrets(
    data: Any, file: str, env: Mapping[str, str], problems: list[ConfigProblem], path: str = ""
) -> Any:
    """Replace ``"env:NAME"`` / ``"file:PATH"`` in secret fields with their value; one that is
    not available goes to ``problems`` and gets a stand-in. Tables and lists with nothing to
    replace are returned as they are, not copied: a block's thousands of device tables would
    otherwise be held twice while the config is validated."""
    if isinstance(data, Mapping):
        out = data if type(data) is dict else dict(data)
        for key, value in data.items():
            if key in _SECRET_KEYS and isinstance(value, str):
                found = _secret_value(value, file, _sub(path, key), env, problems)
                new = _STAND_IN_BY_KEY.get(key, _STAND_IN) if found is None else found
            elif isinstance(value, Mapping | list):
                new = _resolve_secrets(value, file, env, problems, _sub(path, key))
            else:
                continue
            if new is not value:
                out = dict(data) if out is data else out
                out[key] = new
        return out
    if isinstance(data, list):
        items = data
        for i, value in enumerate(data):
            if isinstance(value, Mapping | list):
                new = _resolve_secrets(value, file, env, problems, f"{path}[{i}]")
                if new is not value:
                    items = list(data) if items is data else items
                    items[i] = new
        return items
    return data


def _sub(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _secret_value(
    value: str, file: str, path: str, env: Mapping[str, str], problems: list[ConfigProblem]
) -> str | None:
    if value.startswith("env:"):
        name = value[4:]
        if name not in env:
            problems.append(ConfigProblem(file, path, f"environment variable {name} to be set", "unset"))
            return None
        return env[name]
    if value.startswith("file:"):
        try:
            lines = Path(value[5:]).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            problems.append(ConfigProblem(file, path, "a readable secret file", exc.strerror or str(exc)))
            return None
        return lines[0].strip() if lines else ""
    return value


# pydantic puts the discriminator value ("influxdb_v1", "zigbee2mqtt") into the location of
# errors inside a tagged union member; people do not write that key.
_UNION_TAGS = frozenset({"influxdb_v1", "influxdb_v2", "zigbee2mqtt", "rtl_433", "native"}) | CHANNEL_TAGS

_PATTERN_WORDS = {
    _ID: "an id of letters, digits, '-', '_' or '.' (no spaces)",
    _PORT: "an absolute device path, e.g. /dev/serial/by-id/usb-1a86_USB_Serial-if00-port0 or /dev/ttyUSB0",
    _URL: "an http:// or https:// URL, e.g. http://127.0.0.1:8086",
}


def cross_check(config: SiteConfig, file: str) -> list[ConfigProblem]:
    """Checks that span several sections: references, duplicates, models known to the codecs."""
    problems: list[ConfigProblem] = []

    def dup(items: list[Any], section: str, attr: str = "id") -> set[str]:
        seen: set[str] = set()
        for i, item in enumerate(items):
            key = getattr(item, attr)
            if key in seen:
                problems.append(ConfigProblem(file, f"{section}[{i}].{attr}", f"a unique {attr}", repr(key)))
            seen.add(key)
        return seen

    buildings = dup(config.buildings, "buildings")
    households = {h.id: h for h in config.households}
    dup(config.households, "households")
    dup(config.residents, "residents")
    dup(config.devices, "devices")
    dup(config.outputs, "outputs", "name")
    dup(config.staff, "staff")
    dup(config.visitors, "visitors")
    dup(config.channels, "channels")
    dup(config.ladders, "ladders")

    for i, b in enumerate(config.buildings):
        if len(set(b.units)) != len(b.units):
            problems.append(ConfigProblem(file, f"buildings[{i}].units", "unit names without repeats", repr(b.units)))
    units = {b.id: set(b.units) for b in config.buildings}
    for i, h in enumerate(config.households):
        if h.building not in buildings:
            problems.append(_unknown(file, f"households[{i}].building", "building", h.building, buildings))
        elif h.unit and units[h.building] and h.unit not in units[h.building]:
            problems.append(
                _unknown(file, f"households[{i}].unit", f"unit of building {h.building}", h.unit, units[h.building])
            )
    for i, r in enumerate(config.residents):
        if r.household not in households:
            problems.append(_unknown(file, f"residents[{i}].household", "household", r.household, set(households)))

    problems.extend(_check_visits(config, file, set(households)))
    problems.extend(_check_people(config, file))
    problems.extend(_check_notify(config, file))
    problems.extend(_check_built_at_run(config, file))
    reserve = config.store.reserve_bytes
    if reserve is not None and 0 < reserve < RESERVE_MIN:
        problems.append(ConfigProblem(file, "store.reserve_bytes", "0 (no reserve) or at least 256KiB", str(reserve)))

    z2m_names: dict[str, int] = {}
    rtl_keys: dict[tuple[str, str, str], int] = {}
    ports: dict[str, int] = {}
    for i, d in enumerate(config.devices):
        where = f"devices[{i}]"
        if d.household and d.household not in households:
            problems.append(_unknown(file, f"{where}.household", "household", d.household, set(households)))
        if d.building and d.building not in buildings:
            problems.append(_unknown(file, f"{where}.building", "building", d.building, buildings))
        if not d.household and not d.building:
            problems.append(
                ConfigProblem(file, where, "a household, or a building for a public-area device", "neither")
            )
        if d.household in households and d.building and households[d.household].building != d.building:
            problems.append(
                ConfigProblem(
                    file,
                    f"{where}.building",
                    f"building {households[d.household].building!r} (the household's) or nothing",
                    repr(d.building),
                )
            )
        reached = [name for name in ("mqtt", "serial", "modbus", "osdp") if getattr(d, name) is not None]
        if len(reached) != 1:
            problems.append(
                ConfigProblem(
                    file,
                    where,
                    "exactly one of mqtt = {…}, serial = {…}, modbus = {…} or osdp = {…} (how the device is reached)",
                    " and ".join(reached) if reached else "none",
                )
            )
            continue
        if d.serial is not None:
            problems.extend(_check_serial(file, where, d, d.serial, ports, i))
            continue
        if d.modbus is not None or d.osdp is not None:
            continue  # checked with the buses, below
        src = d.mqtt
        if isinstance(src, Zigbee2MqttSource):
            model = zigbee2mqtt.MODELS.get(d.model)
            if model is None:
                problems.append(_unknown(file, f"{where}.model", "zigbee2mqtt model", d.model, set(zigbee2mqtt.MODELS)))
            elif model.family != d.family:
                problems.append(
                    ConfigProblem(
                        file,
                        f"{where}.family",
                        f"{model.family.value!r} for model {d.model}",
                        repr(d.family.value),
                    )
                )
            if src.friendly_name in z2m_names:
                problems.append(
                    ConfigProblem(
                        file,
                        f"{where}.mqtt.friendly_name",
                        f"a name not used by devices[{z2m_names[src.friendly_name]}]",
                        repr(src.friendly_name),
                    )
                )
            z2m_names[src.friendly_name] = i
        elif isinstance(src, Rtl433Source):
            if d.model not in rtl433.MODELS:
                problems.append(_unknown(file, f"{where}.model", "rtl_433 model", d.model, set(rtl433.MODELS)))
            key = (d.model, src.id, src.channel)
            if key in rtl_keys:
                problems.append(
                    ConfigProblem(
                        file,
                        f"{where}.mqtt.id",
                        f"a (model, id, channel) not used by devices[{rtl_keys[key]}]",
                        repr(key),
                    )
                )
            rtl_keys[key] = i
            if d.model in rtl433.MODELS:
                try:
                    rtl433.normalise_codes(d.model, {k: str(v) for k, v in (src.codes or {}).items()})
                except PayloadError as exc:
                    problems.append(
                        ConfigProblem(
                            file,
                            f"{where}.mqtt.codes",
                            f"keys that are codes (decimal or 0x-hex) or fields of {d.model}",
                            str(exc),
                        )
                    )
    problems.extend(_check_modbus(config, file, ports))
    problems.extend(_check_osdp(config, file, ports))
    return problems


def site_profiles(config: SiteConfig, file: str = "<config>") -> dict[str, Profile]:
    """The Modbus profiles a site can use, by model: the shipped examples, then the config's
    ``[modbus_profiles.<MODEL>]`` tables (a table named like a shipped profile replaces it).
    ``ConfigError`` names every wrong field by its path in the file."""
    problems: list[ConfigProblem] = []
    profiles = _profiles(config, file, problems)
    if problems:
        raise ConfigError(problems)
    return profiles


def _profiles(config: SiteConfig, file: str, problems: list[ConfigProblem]) -> dict[str, Profile]:
    """The profiles that validate; the mistakes of the others go to ``problems``."""
    profiles = builtin_profiles()
    for model, table in config.modbus_profiles.items():
        where = f"modbus_profiles.{model}"
        named = table.get("model", model)
        if named != model:
            problems.append(
                ConfigProblem(file, f"{where}.model", f"{model!r} (the table's name) or nothing", repr(named))
            )
            continue
        try:
            profiles[model] = load_profile({**table, "model": model}, file, prefix=where)
        except ConfigError as exc:
            problems.extend(exc.problems)
            profiles.pop(model, None)  # a broken table does not fall back to a shipped one
    return profiles


def _check_modbus(config: SiteConfig, file: str, serial_ports: dict[str, int]) -> list[ConfigProblem]:
    """Buses, the detectors on them and their profiles."""
    problems: list[ConfigProblem] = []
    if not (config.modbus_buses or config.modbus_profiles or any(d.modbus for d in config.devices)):
        return problems
    profiles = _profiles(config, file, problems)
    buses: dict[str, int] = {}
    bus_ports: dict[str, int] = {}
    for k, b in enumerate(config.modbus_buses):
        where = f"modbus_buses[{k}]"
        if b.id in buses:
            problems.append(ConfigProblem(file, f"{where}.id", "a unique id", repr(b.id)))
        buses.setdefault(b.id, k)
        port = os.path.normpath(b.port)
        if port in bus_ports:
            problems.append(
                ConfigProblem(
                    file, f"{where}.port", f"a port not used by modbus_buses[{bus_ports[port]}]", repr(b.port)
                )
            )
        elif port in serial_ports:
            # One process, one owner of a port: a radar and a Modbus master cannot share a line.
            problems.append(
                ConfigProblem(
                    file,
                    f"{where}.port",
                    f"a port not used by devices[{serial_ports[port]}] (a serial device has its port to itself)",
                    repr(b.port),
                )
            )
        bus_ports.setdefault(port, k)
        problems.extend(_check_backoff(file, where, b))
    units: dict[tuple[str, int], int] = {}
    used: set[str] = set()
    for i, d in enumerate(config.devices):
        src = d.modbus
        if src is None or d.mqtt is not None or d.serial is not None:
            continue
        where = f"devices[{i}]"
        if src.bus not in buses:
            problems.append(_unknown(file, f"{where}.modbus.bus", "Modbus bus", src.bus, buses))
        else:
            used.add(src.bus)
            key = (src.bus, src.unit_id)
            if key in units:
                problems.append(
                    ConfigProblem(
                        file,
                        f"{where}.modbus.unit_id",
                        f"a unit id not used on bus {src.bus} by devices[{units[key]}]",
                        str(src.unit_id),
                    )
                )
            units.setdefault(key, i)
        profile = profiles.get(src.profile)
        if profile is None:
            if src.profile not in config.modbus_profiles:  # a broken table is reported above
                problems.append(_unknown(file, f"{where}.modbus.profile", "Modbus profile", src.profile, profiles))
        elif profile.kind_family != d.family:
            problems.append(
                ConfigProblem(
                    file,
                    f"{where}.family",
                    f"{profile.family!r} for profile {profile.model}",
                    repr(d.family.value),
                )
            )
    for k, b in enumerate(config.modbus_buses):
        if b.id not in used and buses.get(b.id) == k:
            problems.append(
                ConfigProblem(
                    file,
                    f"modbus_buses[{k}]",
                    f"a device with modbus = {{ bus = {b.id!r}, … }}",
                    "no device on this bus",
                )
            )
    return problems


def _check_backoff(file: str, where: str, b: SerialSource | ModbusBusSettings | OsdpBusSettings) -> list[ConfigProblem]:
    if b.backoff_max >= b.backoff_initial:
        return []
    expected = f"at least backoff_initial ({b.backoff_initial:g})"
    return [ConfigProblem(file, f"{where}.backoff_max", expected, f"{b.backoff_max:g}")]


def check_targets(config: SiteConfig) -> list[tuple[str, str, str]]:
    """(path, expected, found) for ladder targets, roster entries and routes that name
    nothing known; used by the config cross-check."""
    problems: list[tuple[str, str, str]] = []
    people = {s.id for s in config.staff} | {v.id for v in config.visitors}
    roles = {s.role for s in config.staff}
    ladders = {lad.id for lad in config.ladders}
    channels = {c.id for c in config.channels}
    for i, shift in enumerate(config.roster):
        if shift.person not in {s.id for s in config.staff}:
            problems.append((f"roster[{i}].person", "a staff id", repr(shift.person)))
    for i, lad in enumerate(config.ladders):
        for j, tier in enumerate(lad.tiers):
            for k, target in enumerate(tier.to):
                if target in ("family", "visitors", "on_duty") or target in people:
                    continue
                kind, _, role = target.partition(":")
                if kind in ("on_duty", "role") and role in roles:
                    continue
                problems.append(
                    (
                        f"ladders[{i}].tiers[{j}].to[{k}]",
                        "family, visitors, on_duty[:role], role:<role> of some staff, or a staff / visitor id",
                        repr(target),
                    )
                )
            for k, ch in enumerate(tier.channels):
                if ch not in channels:
                    problems.append(
                        (
                            f"ladders[{i}].tiers[{j}].channels[{k}]",
                            f"a channel id ({', '.join(sorted(channels)) or 'none configured'})",
                            repr(ch),
                        )
                    )
            if j and tier.after < lad.tiers[j - 1].after:
                problems.append((f"ladders[{i}].tiers[{j}].after", "not earlier than the tier before", str(tier.after)))
    fallback = config.notify.fallback
    if fallback is not None and fallback not in channels:
        problems.append(
            ("notify.fallback", f"a channel id ({', '.join(sorted(channels)) or 'none configured'})", repr(fallback))
        )
    for i, route in enumerate(config.routes):
        if route.ladder not in ladders:
            problems.append(
                (
                    f"routes[{i}].ladder",
                    f"a ladder id ({', '.join(sorted(ladders)) or 'none configured'})",
                    repr(route.ladder),
                )
            )
    return problems


def _check_notify(config: SiteConfig, file: str) -> list[ConfigProblem]:
    return [ConfigProblem(file, path, expected, found) for path, expected, found in check_targets(config)]


def _check_built_at_run(config: SiteConfig, file: str) -> list[ConfigProblem]:
    """What the runtime builds from settings that the models alone accept: the roster's
    schedules (``Shift.schedule()``, as the notifier calls it), URLs as the HTTP clients parse
    them. A mistake here would otherwise pass ``check`` and stop ``run``."""
    problems: list[ConfigProblem] = []
    for i, shift in enumerate(config.roster):
        try:
            shift.schedule()
        except ValidationError as exc:
            problems.extend(problems_from_validation(exc, file, prefix=f"roster[{i}]"))
    urls = [(f"outputs[{k}].url", o.url) for k, o in enumerate(config.outputs)]
    urls += [
        (f"channels[{k}].url", c.url)
        for k, c in enumerate(config.channels)
        if isinstance(c, WebhookChannelSettings | WeComChannelSettings | DingTalkChannelSettings)
    ]
    for path, url in urls:
        try:
            urllib3.util.parse_url(url)
        except urllib3.exceptions.LocationParseError:
            problems.append(ConfigProblem(file, path, "an http(s):// URL with a port of at most 65535", repr(url)))
    return problems


def _check_osdp(config: SiteConfig, file: str, serial_ports: dict[str, int]) -> list[ConfigProblem]:
    """OSDP buses and the readers on them: unique ids, ports and addresses, a 16-byte key."""
    problems: list[ConfigProblem] = []
    buses: dict[str, int] = {}
    bus_ports: dict[str, int] = {}
    modbus_ports = {os.path.normpath(b.port): k for k, b in enumerate(config.modbus_buses)}
    for k, b in enumerate(config.osdp_buses):
        where = f"osdp_buses[{k}]"
        if b.id in buses:
            problems.append(ConfigProblem(file, f"{where}.id", "a unique id", repr(b.id)))
        buses.setdefault(b.id, k)
        port = os.path.normpath(b.port)
        others = (
            (bus_ports, "osdp_buses", ""),
            (modbus_ports, "modbus_buses", ""),
            (serial_ports, "devices", " (a serial device has its port to itself)"),
        )
        for taken, section, why in others:
            if port in taken:
                problems.append(
                    ConfigProblem(
                        file, f"{where}.port", f"a port not used by {section}[{taken[port]}]{why}", repr(b.port)
                    )
                )
                break
        bus_ports.setdefault(port, k)
        problems.extend(_check_backoff(file, where, b))
        if b.scbk is not None:
            key = b.scbk.get_secret_value()
            try:
                ok = len(bytes.fromhex(key)) == 16
            except ValueError:
                ok = False
            if not ok:  # never echo the key itself
                problems.append(
                    ConfigProblem(file, f"{where}.scbk", "32 hex digits (a 16-byte key)", f"{len(key)} characters")
                )
    addresses: dict[tuple[str, int], int] = {}
    used: set[str] = set()
    for i, d in enumerate(config.devices):
        src = d.osdp
        if src is None or d.mqtt is not None or d.serial is not None or d.modbus is not None:
            continue
        where = f"devices[{i}]"
        if d.family != Family.DOOR:
            problems.append(ConfigProblem(file, f"{where}.family", "'door' for an OSDP reader", repr(d.family.value)))
        if src.bus not in buses:
            problems.append(_unknown(file, f"{where}.osdp.bus", "OSDP bus", src.bus, buses))
            continue
        used.add(src.bus)
        slot = (src.bus, src.address)
        if slot in addresses:
            problems.append(
                ConfigProblem(
                    file,
                    f"{where}.osdp.address",
                    f"an address not used on bus {src.bus} by devices[{addresses[slot]}]",
                    str(src.address),
                )
            )
        addresses.setdefault(slot, i)
        if src.rex_input == src.door_input:
            problems.append(
                ConfigProblem(
                    file, f"{where}.osdp.rex_input", "an input other than door_input, or -1", str(src.rex_input)
                )
            )
    for k, b in enumerate(config.osdp_buses):
        if b.id not in used and buses.get(b.id) == k:
            problems.append(
                ConfigProblem(
                    file, f"osdp_buses[{k}]", f"a device with osdp = {{ bus = {b.id!r}, … }}", "no device on this bus"
                )
            )
    return problems


def _check_people(config: SiteConfig, file: str) -> list[ConfigProblem]:
    """Staff buildings exist; a credential (door card) belongs to one person only, whether
    resident, staff or visitor: the door reader must name one person."""
    problems: list[ConfigProblem] = []
    buildings = {b.id for b in config.buildings} | {h.building for h in config.households}
    for i, s in enumerate(config.staff):
        for j, b in enumerate(s.buildings):
            if b not in buildings:
                problems.append(_unknown(file, f"staff[{i}].buildings[{j}]", "building", b, buildings))
    owners: dict[str, str] = {}
    holders: list[tuple[str, list[str]]] = [(f"residents[{i}]", r.credentials) for i, r in enumerate(config.residents)]
    holders += [(f"staff[{i}]", s.credentials) for i, s in enumerate(config.staff)]
    holders += [(f"visitors[{i}]", v.credentials) for i, v in enumerate(config.visitors)]
    for where, credentials in holders:
        for j, c in enumerate(credentials):
            if c in owners:
                problems.append(
                    ConfigProblem(file, f"{where}.credentials[{j}]", f"a credential not used by {owners[c]}", repr(c))
                )
            owners.setdefault(c, where)
    return problems


def _check_visits(config: SiteConfig, file: str, households: set[str]) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for i, v in enumerate(config.visitors):
        for j, h in enumerate(v.households):
            if h not in households:
                problems.append(_unknown(file, f"visitors[{i}].households[{j}]", "household", h, households))
    residents = {r.id for r in config.residents}
    for key in ("include", "exclude"):
        for j, rid in enumerate(getattr(config.visits, key)):
            if rid not in residents:
                problems.append(_unknown(file, f"visits.{key}[{j}]", "resident", rid, residents))
    return problems


def _check_serial(
    file: str, where: str, d: Device, src: SerialSource, ports: dict[str, int], index: int
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    codec = SERIAL_CODECS[src.protocol]
    if d.model not in codec.MODELS:
        problems.append(_unknown(file, f"{where}.model", f"{src.protocol} model", d.model, set(codec.MODELS)))
    elif d.family != codec.FAMILY:
        problems.append(
            ConfigProblem(file, f"{where}.family", f"{codec.FAMILY.value!r} for model {d.model}", repr(d.family.value))
        )
    if src.radar is not None and src.protocol != "mr60fda2":
        problems.append(
            ConfigProblem(
                file, f"{where}.serial.radar", f"no radar settings for {src.protocol} (mr60fda2 only)", "a table"
            )
        )
    problems.extend(_check_backoff(file, f"{where}.serial", src))
    port = os.path.normpath(src.port)
    if port in ports:
        # A UART radar is point-to-point: two readers on one port would each get half the bytes.
        problems.append(
            ConfigProblem(
                file,
                f"{where}.serial.port",
                f"a port not used by devices[{ports[port]}] (a radar needs its own port)",
                repr(src.port),
            )
        )
    ports[port] = index
    return problems


def _unknown(file: str, path: str, what: str, value: str, known: Iterable[str]) -> ConfigProblem:
    names = sorted(known)
    hint = f" ({', '.join(names[:8])}{', …' if len(names) > 8 else ''})" if names else " (none defined)"
    return ConfigProblem(file, path, f"a known {what}{hint}", repr(value))


def _anchor_paths(config: SiteConfig, base_dir: Path) -> SiteConfig:
    """Relative paths in a config file are relative to that file, not to the cwd."""

    def anchor(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base_dir / p

    gateway = config.gateway.model_copy(update={"data_dir": anchor(config.gateway.data_dir)})
    store = config.store.model_copy(update={"path": anchor(config.store.path)}) if config.store.path else config.store
    rules = config.rules.model_copy(update={"files": [anchor(f) for f in config.rules.files]})
    return config.model_copy(update={"gateway": gateway, "store": store, "rules": rules})
