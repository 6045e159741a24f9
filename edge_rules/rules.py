"""Rule definitions as data: pydantic models, loaded from TOML, validated once.

A rule file has an optional ``[pack]`` table, optional ``[settings]`` (timezone) and a list of
``[[rules]]``, each one of six primitives chosen by ``type``: ``match``, ``absence``,
``count``, ``sequence``, ``held``, ``correlation``. See edge_rules/README.md for the format.

Every model forbids unknown keys. ``load_rules`` raises one ``ConfigError`` listing every
problem, each with the file, the dotted path of the field, what was expected and what was found.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from edge_rules.context import TIER_ORDER, DeviceInfo, ResidentInfo, RiskTier
from edge_rules.schedule import WEEKDAYS, Window, parse_clock, parse_duration, zone
from gateway.errors import ConfigError, ConfigProblem
from gateway.models import Event, Family, Kind, Scalar
from gateway.site.validation import problems_from_validation

PACKS_DIR = Path(__file__).parent / "packs"
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str | int | float | bool) else value


def _conditions(value: Any) -> Any:
    return [value] if isinstance(value, Mapping) else value


def _comparison(value: Any) -> Any:
    return {"eq": value} if isinstance(value, str | int | float | bool) else value


Duration = Annotated[float, BeforeValidator(parse_duration)]
StrList = Annotated[list[str], BeforeValidator(_listify)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Comparison(_Model):
    """Comparisons on one value of the event; all given must hold. A missing value fails
    every comparison except ``ne`` and ``exists = false``."""

    eq: Scalar | None = None
    ne: Scalar | None = None
    lt: float | None = None
    le: float | None = None
    gt: float | None = None
    ge: float | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    exists: bool | None = None

    def test(self, present: bool, value: Scalar | None) -> bool:
        if self.exists is not None and self.exists != present:
            return False
        if not present or value is None:
            return (
                self.eq is None
                and self.lt is None
                and self.le is None
                and self.gt is None
                and self.ge is None
                and self.in_ is None
            )
        if self.eq is not None and not _same(value, self.eq):
            return False
        if self.ne is not None and _same(value, self.ne):
            return False
        if self.in_ is not None and not any(_same(value, x) for x in self.in_):
            return False
        if self.lt is not None or self.le is not None or self.gt is not None or self.ge is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            if self.lt is not None and not value < self.lt:
                return False
            if self.le is not None and not value <= self.le:
                return False
            if self.gt is not None and not value > self.gt:
                return False
            if self.ge is not None and not value >= self.ge:
                return False
        return True

    def compiled(self) -> Callable[[bool, Scalar | None], bool]:
        """``test`` as a function of its own: the engine's hot path calls one per condition value.
        The usual shapes (``eq`` alone; bounds alone) read nothing of the model, the others are
        ``test`` itself."""
        eq, bounds = self.eq, (self.lt, self.le, self.gt, self.ge)
        if self.exists is not None or self.ne is not None or self.in_ is not None:
            return self.test
        if eq is not None and bounds == (None, None, None, None):
            flag = isinstance(eq, bool)

            def equal(present: bool, value: Scalar | None) -> bool:
                return present and value is not None and isinstance(value, bool) == flag and value == eq

            return equal
        if eq is None and bounds != (None, None, None, None):
            lt, le, gt, ge = bounds

            def within(present: bool, value: Scalar | None) -> bool:
                if not present or value is None or isinstance(value, bool) or not isinstance(value, int | float):
                    return False
                return (
                    (lt is None or value < lt)
                    and (le is None or value <= le)
                    and (gt is None or value > gt)
                    and (ge is None or value >= ge)
                )

            return within
        return self.test


def _same(a: Scalar, b: Scalar) -> bool:
    # True must not equal 1: a flag and a number are different things in a payload.
    return isinstance(a, bool) == isinstance(b, bool) and a == b


class Schedule(_Model):
    """A daily window in local time; ``end`` not after ``start`` crosses midnight."""

    start: str
    end: str
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        parse_clock(value)
        return value

    def window(self, tz: str) -> Window:
        start, end = parse_clock(self.start), parse_clock(self.end)
        days = frozenset(range(7)) if self.days is None else frozenset(WEEKDAYS.index(d) for d in self.days)
        return Window(start, end, days, tz)


class Condition(_Model):
    """An event meeting all of: family, kind, value comparisons, place, time of day."""

    family: Annotated[list[Family], BeforeValidator(_listify)] | None = None
    kind: Annotated[list[Kind], BeforeValidator(_listify)] | None = None
    kind_not: Annotated[list[Kind], BeforeValidator(_listify)] | None = None
    where: dict[str, Annotated[Comparison, BeforeValidator(_comparison)]] = {}
    device: StrList | None = None
    room: StrList | None = None
    household: StrList | None = None  # household ids
    building: StrList | None = None
    public: bool | None = None  # true: public areas only (no household); false: households only
    schedule: Schedule | None = None

    def static_match(self, info: DeviceInfo) -> bool:
        """What can be known from the device alone (used to arm absence timers)."""
        if self.family is not None and info.family is not None and info.family not in self.family:
            return False
        if self.device is not None and info.id not in self.device:
            return False
        if self.room is not None and info.location.room not in self.room:
            return False
        if self.household is not None and info.household not in self.household:
            return False
        if self.building is not None and info.building not in self.building:
            return False
        return self.public is None or self.public == (info.household == "")

    @property
    def any_device(self) -> bool:
        """Whether ``static_match`` holds for every device (no test on the device's place)."""
        return (
            self.family is None
            and self.device is None
            and self.room is None
            and self.household is None
            and self.building is None
            and self.public is None
        )

    def event_match(self, kind: Kind, family: Family) -> bool:
        """What can be known from the event's kind and family alone (the engine's rule index)."""
        if self.kind is not None and kind not in self.kind:
            return False
        if self.kind_not is not None and kind in self.kind_not:
            return False
        return self.family is None or family in self.family

    def matches(self, ev: Event, info: DeviceInfo, t: float, tz: str) -> bool:
        if not self.event_match(ev.kind, ev.family):
            return False
        if not self.static_match(info):
            return False
        for name, cmp in self.where.items():
            present = name in ev.values
            if not cmp.test(present, ev.values.get(name)):
                return False
        return self.schedule is None or self.schedule.window(tz).contains(t)


Conditions = Annotated[list[Condition], BeforeValidator(_conditions)]


def any_match(conds: Sequence[Condition], ev: Event, info: DeviceInfo, t: float, tz: str) -> bool:
    return any(c.matches(ev, info, t, tz) for c in conds)


class Messages(_Model):
    zh: str
    en: str


class AppliesTo(_Model):
    """Resident filters: the rule applies to a subject only through residents that pass."""

    lives_alone: bool | None = None
    risk_tier: Annotated[list[RiskTier], BeforeValidator(_listify)] | None = None

    @property
    def filters_residents(self) -> bool:
        return self.lives_alone is not None or self.risk_tier is not None


Per = Literal["household", "resident", "device", "building", "location"]


class _Rule(_Model):
    id: Annotated[str, Field(pattern=_ID, max_length=64)]
    description: str = ""
    severity: Annotated[int, Field(ge=1, le=4)]
    per: Per = "device"
    dedup: str = "{rule}:{subject}"
    message: Messages
    resolved_message: Messages | None = None
    applies_to: AppliesTo = AppliesTo()
    thresholds: dict[RiskTier, Duration] | None = None
    # The name under which a resident's own ``thresholds`` set this rule's duration (rules that
    # must move together share one name: fall_no_recovery and fall_recovered, "fall_recovery").
    resident_threshold: Annotated[str, Field(pattern=_ID, max_length=64)] | None = None
    # true: the rule's own clearing condition (absence: the activity; held: the end; sequence
    # not_followed_by: the awaited event); a list: these events resolve the open alert.
    auto_resolve: bool | Conditions = False
    # "ignore": a trigger while the dedup key is open decides nothing (unless more severe)
    on_repeat: Literal["update", "ignore"] = "update"
    downgrade: bool = False  # an update from this rule may lower the open alert's severity
    # Alarm class (fire, smoke, gas, fall, SOS, a forced door): a page about it is never held,
    # delayed or summarised by a per-person cap or a quiet window (docs/alerts.md, paging policy).
    alarm: bool = False
    enabled: bool = True

    def base_duration(self) -> float | None:
        return None

    def duration_for(self, tier: str | None) -> float | None:
        if self.thresholds and tier is not None and tier in self.thresholds:
            return self.thresholds[tier]
        return self.base_duration()

    def resolve_conditions(self) -> list[Condition]:
        return list(self.auto_resolve) if isinstance(self.auto_resolve, list) else []

    def conditions(self) -> list[Condition]:
        """Every condition an event is tested against — ``when``, ``first``, ``then``, ``start``,
        ``end``, a list ``auto_resolve`` — found by walking the fields, so that a condition field
        added later cannot be missed by the engine's index (an event no condition of a rule can
        match leaves the rule alone: no decision, no state)."""
        return [cond for _, group in self.condition_fields() for cond in group]

    def condition_fields(self) -> list[tuple[str, list[Condition]]]:
        """``conditions()`` by field name, in the same order."""
        out: list[tuple[str, list[Condition]]] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, list) and all(isinstance(c, Condition) for c in value):
                out.append((name, value))
        return out


class MatchRule(_Rule):
    type: Literal["match"]
    when: Conditions


class AbsenceRule(_Rule):
    type: Literal["absence"]
    when: Conditions = [Condition()]
    duration: Duration | None = None
    interval_multiple: Annotated[float, Field(gt=0)] | None = None  # per device: k × report_interval
    schedule: Schedule | None = None  # time counts only inside this window

    def base_duration(self) -> float | None:
        return self.duration


class CountRule(_Rule):
    type: Literal["count"]
    when: Conditions
    count: Annotated[int, Field(ge=2)]
    window: Duration

    def base_duration(self) -> float | None:
        return self.window


class SequenceRule(_Rule):
    type: Literal["sequence"]
    first: Conditions
    then: Conditions
    within: Duration
    mode: Literal["followed_by", "not_followed_by", "not_preceded_by"] = "followed_by"
    min_gap: Duration | None = None  # a "then" event sooner than this after "first" does not count

    def base_duration(self) -> float | None:
        return self.within


class HeldRule(_Rule):
    type: Literal["held"]
    start: Conditions
    end: Conditions
    duration: Duration
    schedule: Schedule | None = None  # time counts only inside this window

    def base_duration(self) -> float | None:
        return self.duration


class CorrelationRule(_Rule):
    type: Literal["correlation"]
    when: Conditions
    devices: Annotated[int, Field(ge=2)] = 2
    window: Duration
    per: Per = "building"

    def base_duration(self) -> float | None:
        return self.window


Rule = Annotated[
    MatchRule | AbsenceRule | CountRule | SequenceRule | HeldRule | CorrelationRule, Field(discriminator="type")
]
AnyRule = MatchRule | AbsenceRule | CountRule | SequenceRule | HeldRule | CorrelationRule
RULE_TYPES = ("match", "absence", "count", "sequence", "held", "correlation")


class Settings(_Model):
    timezone: str = "Asia/Shanghai"
    # Which time of an event drives windows and timers: the event time (device time when
    # trusted, else receive time) or always the gateway's receive time.
    time_source: Literal["event", "received"] = "event"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            zone(value)
        except Exception as exc:
            raise ValueError('an IANA timezone such as "Asia/Shanghai"') from exc
        return value


class PackInfo(_Model):
    id: Annotated[str, Field(pattern=_ID)]
    name: str = ""
    description: str = ""


class RuleFile(_Model):
    pack: PackInfo | None = None
    settings: Settings | None = None
    rules: list[Rule] = []


class RuleSet:
    """Validated rules from one or more files, in file order, with their settings."""

    def __init__(
        self,
        rules: Sequence[AnyRule],
        settings: Settings | None = None,
        packs: Sequence[PackInfo] = (),
        pack_of: Mapping[str, str] | None = None,
    ) -> None:
        self.rules: tuple[AnyRule, ...] = tuple(rules)
        self.settings = settings or Settings()
        self.packs = tuple(packs)
        # Rule id → the id of the [pack] its file declares (routes match alerts by pack).
        self.pack_of: dict[str, str] = dict(pack_of or {})
        # Ids of the alarm-class rules: their alerts are paged past every cap and quiet window.
        self.alarm_rules: frozenset[str] = frozenset(r.id for r in self.rules if r.alarm)

    def __iter__(self) -> Any:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, rule_id: str) -> AnyRule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


# --------------------------------------------------------------------------- templates

MESSAGE_FIELDS = frozenset(
    {
        "rule",
        "subject",
        "place",
        "where",
        "where_en",
        "place_en",
        "room",
        "who",
        "who_en",
        "names",
        "count",
        "duration",
        "duration_en",
        "time",
        "device",
        "building",
        "household",
        "severity_zh",
        "severity_en",
    }
)
DEDUP_FIELDS = frozenset({"rule", "subject", "per", "device", "building", "household"})


def template_fields(template: str) -> list[str]:
    """The placeholder names in a ``str.format`` template; raises ValueError if malformed."""
    names = []
    for _, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise ValueError(f"a plain placeholder, found {{{name}}}")
        names.append(name)
    return names


# --------------------------------------------------------------------------- loading


def pack_path(name: str) -> Path:
    return PACKS_DIR / f"{name}.toml"


def available_packs() -> list[str]:
    return sorted(p.stem for p in PACKS_DIR.glob("*.toml"))


def load_rules(*sources: str | Path) -> RuleSet:
    """Load rule files (paths, or names of shipped packs such as ``"elderly_care"``)."""
    problems: list[ConfigProblem] = []
    files: list[tuple[str, RuleFile]] = []
    for source in sources:
        path = Path(source)
        if not path.suffix and not path.exists() and pack_path(str(source)).exists():
            path = pack_path(str(source))
        file = str(path)
        try:
            text = path.read_bytes().decode("utf-8")
            data = tomllib.loads(text)
        except FileNotFoundError:
            problems.append(
                ConfigProblem(
                    file, "", f"an existing rule file or pack name ({', '.join(available_packs())})", "no such file"
                )
            )
            continue
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problems.append(ConfigProblem(file, "", "a readable UTF-8 TOML file", str(exc)))
            continue
        try:
            files.append((file, parse_rule_file(data, file)))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return combine(files)


def parse_rule_file(data: Mapping[str, Any], file: str = "<rules>") -> RuleFile:
    try:
        parsed = RuleFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation(exc, file, drop=RULE_TYPES)) from None
    problems = check_rules(parsed.rules, file)
    if problems:
        raise ConfigError(problems)
    return parsed


def combine(files: Iterable[tuple[str, RuleFile]]) -> RuleSet:
    problems: list[ConfigProblem] = []
    rules: list[AnyRule] = []
    seen: dict[str, str] = {}
    settings: Settings | None = None
    settings_file = ""
    packs: list[PackInfo] = []
    pack_of: dict[str, str] = {}
    for file, rf in files:
        if rf.pack is not None:
            packs.append(rf.pack)
            pack_of.update({rule.id: rf.pack.id for rule in rf.rules})
        if rf.settings is not None:
            if settings is not None and rf.settings != settings:
                problems.append(
                    ConfigProblem(
                        file, "settings", f"the same settings as {settings_file}", repr(rf.settings.model_dump())
                    )
                )
            settings, settings_file = rf.settings, file
        for i, rule in enumerate(rf.rules):
            if rule.id in seen:
                problems.append(
                    ConfigProblem(
                        file, f"rules[{i}].id", f"a rule id not already used in {seen[rule.id]}", repr(rule.id)
                    )
                )
            seen[rule.id] = file
            rules.append(rule)
    if problems:
        raise ConfigError(problems)
    return RuleSet(rules, settings, packs, pack_of)


def check_rules(rules: Sequence[AnyRule], file: str) -> list[ConfigProblem]:
    """Checks pydantic cannot express: templates, which fields make sense for which primitive."""
    problems: list[ConfigProblem] = []
    seen: set[str] = set()

    def bad(i: int, path: str, expected: str, found: Any) -> None:
        problems.append(
            ConfigProblem(file, f"rules[{i}].{path}", expected, found if isinstance(found, str) else repr(found))
        )

    for i, rule in enumerate(rules):
        if rule.id in seen:
            bad(i, "id", "a unique rule id", rule.id)
        seen.add(rule.id)
        templates = [
            ("message.zh", rule.message.zh, MESSAGE_FIELDS),
            ("message.en", rule.message.en, MESSAGE_FIELDS),
            ("dedup", rule.dedup, DEDUP_FIELDS),
        ]
        if rule.resolved_message is not None:
            templates += [
                ("resolved_message.zh", rule.resolved_message.zh, MESSAGE_FIELDS),
                ("resolved_message.en", rule.resolved_message.en, MESSAGE_FIELDS),
            ]
        for path, template, allowed in templates:
            try:
                names = template_fields(template)
            except ValueError as exc:
                bad(i, path, "a template with {placeholders}", str(exc))
                continue
            for name in names:
                if name not in allowed:
                    bad(i, path, f"placeholders among {', '.join(sorted(allowed))}", f"{{{name}}}")
        if rule.thresholds is not None and isinstance(rule, MatchRule):
            bad(i, "thresholds", "no thresholds on a match rule (it has no duration)", rule.thresholds)
        if rule.resident_threshold is not None and (
            isinstance(rule, MatchRule | CountRule | CorrelationRule)
            or (isinstance(rule, AbsenceRule) and rule.interval_multiple is not None)
        ):
            # Residents may only shorten or lengthen a wait (absence, held, sequence); a count
            # or correlation window, or a device's report interval, is not theirs to set.
            bad(i, "resident_threshold", "only on absence, held or sequence rules with a duration", rule.type)
        if rule.auto_resolve is True and isinstance(rule, MatchRule | CountRule | CorrelationRule):
            bad(
                i,
                "auto_resolve",
                f"a list of clearing conditions ({rule.type} has no clearing event of its own)",
                "true",
            )
        if rule.auto_resolve is True and isinstance(rule, SequenceRule) and rule.mode != "not_followed_by":
            bad(i, "auto_resolve", "a list of clearing conditions (only not_followed_by clears by itself)", "true")
        if isinstance(rule, AbsenceRule):
            if rule.duration is None and rule.interval_multiple is None:
                bad(i, "duration", "a duration, or interval_multiple for device supervision", "nothing")
            if rule.interval_multiple is not None and rule.per != "device":
                bad(i, "interval_multiple", 'per = "device" (it multiplies the device report interval)', rule.per)
        if isinstance(rule, SequenceRule) and rule.min_gap is not None and rule.min_gap >= rule.within:
            bad(i, "min_gap", f"less than within ({rule.within:g} s)", f"{rule.min_gap:g} s")
    return problems


def subject_tier(residents: Iterable[Any]) -> str | None:
    tiers = [r.risk_tier for r in residents]
    return max(tiers, key=lambda t: TIER_ORDER[t]) if tiers else None


def effective_duration(rule: AnyRule, residents: Sequence[ResidentInfo]) -> tuple[float | None, str]:
    """The duration (window, within) a rule uses for a subject with these residents, and where
    it comes from: ``"resident r1"``, ``"risk tier high"`` or ``"rule"``.

    A resident's own value (``thresholds`` under the rule's ``resident_threshold``) wins over
    their tier's. With several residents the shortest value counts (each resident's own, else
    their tier's) — as the highest tier counts when nobody has a value of their own."""
    name = rule.resident_threshold
    own = [r.threshold(name) for r in residents] if name else []
    if all(v is None for v in own):
        return _tier_duration(rule, subject_tier(residents))
    each = [
        (v, f"resident {r.id}") if v is not None else _tier_duration(rule, r.risk_tier)
        for v, r in zip(own, residents, strict=True)
    ]
    return min(((v, src) for v, src in each if v is not None), key=lambda x: x[0])


def _tier_duration(rule: AnyRule, tier: str | None) -> tuple[float | None, str]:
    if rule.thresholds and tier is not None and tier in rule.thresholds:
        return rule.thresholds[tier], f"risk tier {tier}"
    return rule.base_duration(), "rule"


def resident_thresholds(rules: Iterable[AnyRule]) -> dict[str, list[AnyRule]]:
    """Threshold name → the rules that declare it (what a resident's ``thresholds`` may set)."""
    out: dict[str, list[AnyRule]] = {}
    for rule in rules:
        if rule.resident_threshold is not None:
            out.setdefault(rule.resident_threshold, []).append(rule)
    return out
