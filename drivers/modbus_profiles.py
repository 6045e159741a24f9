"""Register maps of Modbus RTU gas and smoke detectors, as data, and the pure decoder.

There is no standard register map for these detectors (no public standard exists; vendors each publish their own):
each model gets a *profile* — which registers to read and what their bits and numbers mean —
written from the vendor manual. A profile is a TOML table (``drivers/profiles/*.toml``, or
inline in a site config) validated by ``Profile`` (pydantic, unknown keys are errors)::

    model = "GENERIC-GAS"           # family = "gas" | "smoke"
    family = "gas"
    reads = [{ function = 3, address = 0x6000, count = 7 }]   # FC03 holding / FC04 input

    [alarm]                          # a bitfield register
    address = 0x6000                 # wire address (the manual's "40001" is wire address 0)
    valid_bit = 15                   # the other bits mean something only while this bit is 1
    levels = { low = 0, high = 1 }   # alarm bits, least severe first
    faults = { sensor_lost = 5 }     # fault bits
    ignored = [2, 3]                 # bits known to mean nothing for us

    [concentration]
    address = 0x6001
    unit = "%LEL"
    scale = 1.0                      # fixed scale, or
    decimals_address = 0x6002        # a register holding the number of decimal places (0–4)

    [status]
    address = 0x6006
    ok = [1]
    warmup = [0]
    fault = [2]

Every register a field names must lie inside one of ``reads`` (checked when the profile is
loaded). ``function`` on ``alarm`` / ``concentration`` / ``status`` defaults to 3.

``decode(profile, blocks)`` is pure: ``blocks`` holds the registers read, one list per entry of
``reads``, in order. It returns the detector's *level* state, in a fixed order — the poller
(``drivers.modbus_bus``) turns it into edges:

1. the alarm state, when the alarm register is valid and the detector is not warming up:
   ``gas_alarm`` / ``smoke_alarm`` {level: the most severe level bit set}, else ``gas_clear`` /
   ``smoke_clear``;
2. ``sensor_fault`` {fault: the active fault names, comma-separated} when a fault bit is set or
   the status register says fault;
3. ``heartbeat`` — the telemetry: {concentration, unit} when the profile has a concentration,
   {status} when it has a status register, {fault} (``""`` when none).

A set alarm-register bit that the profile does not declare is ``PayloadError("unknown_code")``:
an alarm nobody can read must be loud, as for rtl_433 codes. Other reasons: ``bad_length``
(blocks do not match ``reads``), ``bad_value`` (a register outside 0–65535, decimals > 4).

``encode(profile, state)`` is the inverse for the simulator: a ``DetectorState`` → the
register blocks the device would answer, so the fake detector and this decoder cannot drift.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.errors import ConfigError, ConfigProblem, PayloadError
from gateway.models import Family, Kind, Observation
from gateway.site.validation import problems_from_validation

PROFILE_DIR = Path(__file__).parent / "profiles"
MAX_DECIMALS = 4
Address = Field(ge=0, le=0xFFFF)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Read(_Strict):
    """One request per poll: FC03 (holding registers) or FC04 (input registers)."""

    function: Literal[3, 4] = 3
    address: int = Address
    count: int = Field(ge=1, le=125)  # the Modbus limit for one read


class AlarmRegister(_Strict):
    function: Literal[3, 4] = 3
    address: int = Address
    valid_bit: int | None = Field(default=None, ge=0, le=15)
    levels: dict[str, int] = Field(min_length=1)  # name → bit, least severe first
    faults: dict[str, int] = Field(default_factory=dict)  # name → bit
    ignored: list[int] = Field(default_factory=list)

    @field_validator("levels", "faults")
    @classmethod
    def _bits(cls, value: dict[str, int]) -> dict[str, int]:
        for name, bit in value.items():
            if not name or not 0 <= bit <= 15:
                raise ValueError(f"{name!r} = {bit}: a name and a bit 0–15")
        return value

    @field_validator("ignored")
    @classmethod
    def _ignored(cls, value: list[int]) -> list[int]:
        if any(not 0 <= b <= 15 for b in value):
            raise ValueError("bits 0–15")
        return value

    @model_validator(mode="after")
    def _no_bit_twice(self) -> AlarmRegister:
        bits = [*self.levels.values(), *self.faults.values(), *self.ignored]
        if self.valid_bit is not None:
            bits.append(self.valid_bit)
        if len(bits) != len(set(bits)):
            raise ValueError(f"a bit is used twice: {sorted(bits)}")
        return self


class Concentration(_Strict):
    function: Literal[3, 4] = 3
    address: int = Address
    signed: bool = False
    unit: Literal["%LEL", "ppm", "%VOL", "mg/m3", "dB/m", "%obs/m"]
    scale: float = Field(default=1.0, gt=0)
    decimals_address: int | None = Field(default=None, ge=0, le=0xFFFF)


class Status(_Strict):
    function: Literal[3, 4] = 3
    address: int = Address
    ok: list[int] = Field(min_length=1)
    warmup: list[int] = Field(default_factory=list)
    fault: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _disjoint(self) -> Status:
        seen = [*self.ok, *self.warmup, *self.fault]
        if len(seen) != len(set(seen)):
            raise ValueError("a status value is listed twice")
        return self


class Profile(_Strict):
    model: str = Field(min_length=1)
    family: Literal["gas", "smoke"]
    description: str = ""
    example: bool = False  # an example to adapt from the vendor manual, not a verified map
    reads: list[Read] = Field(min_length=1, max_length=8)
    alarm: AlarmRegister
    concentration: Concentration | None = None
    status: Status | None = None

    @model_validator(mode="after")
    def _covered(self) -> Profile:
        refs: list[tuple[str, int, int]] = [("alarm", self.alarm.function, self.alarm.address)]
        if self.concentration is not None:
            c = self.concentration
            refs.append(("concentration", c.function, c.address))
            if c.decimals_address is not None:
                refs.append(("concentration.decimals_address", c.function, c.decimals_address))
        if self.status is not None:
            refs.append(("status", self.status.function, self.status.address))
        for name, function, address in refs:
            if self.locate(function, address) is None:
                raise ValueError(f"{name}: FC{function:02d} register {address:#06x} is not inside any of `reads`")
        return self

    def locate(self, function: int, address: int) -> tuple[int, int] | None:
        """(index of the read, offset in it) holding this register, or None."""
        for i, r in enumerate(self.reads):
            if r.function == function and r.address <= address < r.address + r.count:
                return i, address - r.address
        return None

    @property
    def kind_family(self) -> Family:
        return Family(self.family)

    @property
    def emits(self) -> frozenset[Kind]:
        alarm = (Kind.GAS_ALARM, Kind.GAS_CLEAR) if self.family == "gas" else (Kind.SMOKE_ALARM, Kind.SMOKE_CLEAR)
        return frozenset({*alarm, Kind.SENSOR_FAULT, Kind.HEARTBEAT})


# ------------------------------------------------------------------ loading


def load_profile(data: Mapping[str, Any], source: str = "<profile>", prefix: str = "") -> Profile:
    """Validate one profile table; ``ConfigError`` naming every wrong field by its path."""
    try:
        return Profile.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(problems_from_validation(exc, source, root=Profile, prefix=prefix)) from None


def load_profile_file(path: str | Path) -> Profile:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([ConfigProblem(str(p), "", "a readable TOML file", str(exc))]) from exc
    return load_profile(data, str(p))


def builtin_profiles() -> dict[str, Profile]:
    """The shipped example profiles (``drivers/profiles/*.toml``), by model."""
    out: dict[str, Profile] = {}
    for path in sorted(PROFILE_DIR.glob("*.toml")):
        profile = load_profile_file(path)
        out[profile.model] = profile
    return out


# ------------------------------------------------------------------ decode


@dataclass(frozen=True, slots=True)
class Reading:
    """What one poll's registers say, before it becomes observations."""

    valid: bool  # the alarm register's valid bit (True when the profile has none)
    levels: tuple[str, ...]  # alarm levels set, in the profile's order
    faults: tuple[str, ...]  # fault bits set, in bit order, then "status" when status says fault
    status: str  # "ok" | "warmup" | "fault" | "unknown:<n>" | "" (no status register)
    concentration: float | None


def _register(profile: Profile, blocks: Sequence[Sequence[int]], function: int, address: int) -> int:
    where = profile.locate(function, address)
    assert where is not None  # the profile validator guarantees it
    return blocks[where[0]][where[1]]


def read(profile: Profile, blocks: Sequence[Sequence[int]]) -> Reading:
    """The ``Reading`` in ``blocks`` (one register list per ``profile.reads``)."""
    if len(blocks) != len(profile.reads):
        raise PayloadError("bad_length", f"{len(blocks)} register blocks for {len(profile.reads)} reads")
    for r, block in zip(profile.reads, blocks, strict=True):
        if len(block) != r.count:
            raise PayloadError(
                "bad_length", f"FC{r.function:02d} {r.address:#06x}: {len(block)} registers, expected {r.count}"
            )
        for value in block:
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
                raise PayloadError("bad_value", f"register value {value!r:.20}, expected 0–65535")
    a = profile.alarm
    word = _register(profile, blocks, a.function, a.address)
    valid = a.valid_bit is None or bool(word >> a.valid_bit & 1)
    levels: tuple[str, ...] = ()
    faults: list[str] = []
    if valid:
        known = {*a.levels.values(), *a.faults.values(), *a.ignored}
        if a.valid_bit is not None:
            known.add(a.valid_bit)
        unknown = [b for b in range(16) if word >> b & 1 and b not in known]
        if unknown:
            raise PayloadError("unknown_code", f"alarm register {word:#06x}: bits {unknown} are not in the profile")
        levels = tuple(name for name, bit in a.levels.items() if word >> bit & 1)
        faults = [name for name, bit in sorted(a.faults.items(), key=lambda kv: kv[1]) if word >> bit & 1]
    status = ""
    if profile.status is not None:
        s = profile.status
        value = _register(profile, blocks, s.function, s.address)
        status = (
            "ok"
            if value in s.ok
            else "warmup"
            if value in s.warmup
            else "fault"
            if value in s.fault
            else f"unknown:{value}"
        )
        if status == "fault":
            faults.append("status")
    concentration: float | None = None
    if profile.concentration is not None:
        c = profile.concentration
        raw = _register(profile, blocks, c.function, c.address)
        if c.signed and raw >= 0x8000:
            raw -= 0x10000
        scale = c.scale
        if c.decimals_address is not None:
            decimals = _register(profile, blocks, c.function, c.decimals_address)
            if decimals > MAX_DECIMALS:
                raise PayloadError("bad_value", f"decimal-point register {decimals}, expected 0–{MAX_DECIMALS}")
            scale = scale / 10**decimals
        concentration = round(raw * scale, 6)
    return Reading(valid, levels, tuple(faults), status, concentration)


def observations(profile: Profile, reading: Reading) -> list[Observation]:
    """The level state of a ``Reading`` (see the module docstring for the order)."""
    out: list[Observation] = []
    gas = profile.family == "gas"
    if reading.valid and reading.status != "warmup":
        if reading.levels:
            out.append(Observation(Kind.GAS_ALARM if gas else Kind.SMOKE_ALARM, {"level": reading.levels[-1]}))
        else:
            out.append(Observation(Kind.GAS_CLEAR if gas else Kind.SMOKE_CLEAR))
    fault = ",".join(reading.faults)
    if fault:
        out.append(Observation(Kind.SENSOR_FAULT, {"fault": fault}))
    values: dict[str, bool | int | float | str] = {}
    if profile.concentration is not None and reading.concentration is not None:
        values["concentration"] = reading.concentration
        values["unit"] = profile.concentration.unit
    if reading.status:
        values["status"] = reading.status
    values["fault"] = fault
    out.append(Observation(Kind.HEARTBEAT, values))
    return out


def decode(profile: Profile, blocks: Sequence[Sequence[int]]) -> list[Observation]:
    """Registers → level observations. Pure; raises nothing but ``PayloadError``."""
    return observations(profile, read(profile, blocks))


# ------------------------------------------------------------------ encode (for the simulator)


@dataclass(frozen=True, slots=True)
class DetectorState:
    """What a simulated detector is doing; ``encode`` turns it into its registers."""

    levels: tuple[str, ...] = ()  # alarm level names set (e.g. ("low", "high"))
    faults: tuple[str, ...] = ()  # fault bit names set
    status: Literal["ok", "warmup", "fault"] = "ok"
    valid: bool = True
    concentration: float = 0.0
    decimals: int = 0  # written to the decimal-point register when the profile has one


def encode(profile: Profile, state: DetectorState) -> list[list[int]]:
    """The register blocks (one per ``profile.reads``) a detector in ``state`` answers with.
    ``PayloadError("not_encodable")`` for names the profile does not have or values that do not fit."""
    blocks = [[0] * r.count for r in profile.reads]

    def put(function: int, address: int, value: int) -> None:
        where = profile.locate(function, address)
        assert where is not None
        blocks[where[0]][where[1]] = value

    a = profile.alarm
    word = 0
    for name in state.levels:
        if name not in a.levels:
            raise PayloadError("not_encodable", f"{profile.model} has no alarm level {name!r}")
        word |= 1 << a.levels[name]
    for name in state.faults:
        if name not in a.faults:
            raise PayloadError("not_encodable", f"{profile.model} has no fault bit {name!r}")
        word |= 1 << a.faults[name]
    if a.valid_bit is not None and state.valid:
        word |= 1 << a.valid_bit
    elif a.valid_bit is None and not state.valid:
        raise PayloadError("not_encodable", f"{profile.model} has no valid bit")
    put(a.function, a.address, word)
    if profile.status is not None:
        s = profile.status
        choices = {"ok": s.ok, "warmup": s.warmup, "fault": s.fault}[state.status]
        if not choices:
            raise PayloadError("not_encodable", f"{profile.model} has no status value for {state.status!r}")
        put(s.function, s.address, choices[0])
    elif state.status != "ok":
        raise PayloadError("not_encodable", f"{profile.model} has no status register")
    if profile.concentration is not None:
        c = profile.concentration
        scale = c.scale
        if c.decimals_address is not None:
            if not 0 <= state.decimals <= MAX_DECIMALS:
                raise PayloadError("not_encodable", f"decimals {state.decimals}")
            put(c.function, c.decimals_address, state.decimals)
            scale = scale / 10**state.decimals
        raw = round(state.concentration / scale)
        lo, hi = (-0x8000, 0x7FFF) if c.signed else (0, 0xFFFF)
        if not lo <= raw <= hi:
            raise PayloadError("not_encodable", f"concentration {state.concentration} does not fit the register")
        put(c.function, c.address, raw & 0xFFFF)
    return blocks
