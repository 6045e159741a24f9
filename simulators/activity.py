"""A day in the block: plausible routine traffic plus scripted incidents, deterministically.

``BlockActivity`` is a discrete-event model of a site config. Its routine:

- residents go out and come back: the flat's door contact opens and closes, the building's
  lobby door (access controller grant, 433 MHz contact) on the way in and out; more in the
  morning and the late afternoon, rare at night. Elders make short trips; other residents
  leave for work or school in the morning and make shorter trips later;
- fall radars see people come and go (bathroom visits, a night's sleep in the bedroom) and
  repeat their state every few minutes;
- battery devices check in about hourly (battery, voltage, link quality), the access
  controllers send heartbeats, flag-type 433 MHz sensors supervise; batteries drain;
- now and then a zigbee device drops offline for a while (availability, retained), and a
  stranger's card is refused at a lobby door.

and the ``Incident`` values it is given: an SOS press, a smoke alarm that clears later, a fall
with or without recovery, a forced or held-open door, refused cards, a device going offline,
a flat battery, a tampered cover, a household that stops moving.

Two clocks, kept apart on purpose. The *run* clock is the injected ``Clock``: ``Emission.when``
and ``Incident.at`` / ``Incident.duration`` are seconds on it after the start, so "an SOS at
8 s" happens 8 s into a demo whatever the speed, and the gateway's timers see real
durations. The *routine* runs on simulated time, ``speed`` times faster: at ``speed=60`` a
day of comings and goings takes 24 minutes. Payloads that carry a time (rtl_433, native)
carry the run clock's wall time, which is what the gateway will see.

Deterministic: the same site, ``random.Random`` seed, start time, speed and incidents give the
same emissions, in the same order (every draw happens in event order; ties go to the event
scheduled first). ``emissions()`` is a plain generator; ``play()`` paces it on a clock and
hands each emission to a publish callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from gateway.clock import Clock
from gateway.models import Family
from gateway.site.config import Household, NativeSource, Resident, SiteConfig, Zigbee2MqttSource
from simulators.devices import (
    RTL_433_HOST,
    AccessControllerSim,
    DoorSim,
    FallSim,
    Message,
    SimDevice,
    SmokeSim,
    SosSim,
    simulator_for,
)

IncidentKind = Literal[
    "sos",
    "smoke",
    "smoke_test",
    "fall",
    "fall_no_recovery",
    "door_forced",
    "door_held_open",
    "access_denied",
    "offline",
    "low_battery",
    "tamper",
    "inactive",
]
INCIDENT_KINDS: tuple[str, ...] = get_args(IncidentKind)

# Run-clock seconds until an incident's second half (smoke clears, the person gets up …).
DEFAULT_DURATIONS: dict[str, float] = {
    "smoke": 60.0,
    "fall": 30.0,
    "fall_no_recovery": 30.0,  # until the radar reports stationary residence, where it can
    "door_forced": 20.0,
    "door_held_open": 600.0,
    "offline": 300.0,
    "tamper": 60.0,
    "inactive": 6 * 3600.0,
}

BEIJING = 8 * 3600.0  # UTC+8, no DST: the routine follows local time of day
DAY = 86_400.0

# Relative rate of going out, per local hour (0 h … 23 h): a morning peak, shopping, school
# and work returns in the late afternoon, almost nothing at night.
OUTING_BY_HOUR = (
    0.05, 0.02, 0.02, 0.02, 0.05, 0.3, 1.0, 2.0, 2.2, 1.8, 1.5, 1.2,
    1.0, 0.9, 1.1, 1.3, 1.6, 1.7, 1.5, 1.2, 0.9, 0.5, 0.25, 0.1,
)  # fmt: skip
# Radar presence episodes (bathroom visits; daytime naps), per local hour.
VISIT_BY_HOUR = (
    0.3, 0.3, 0.3, 0.3, 0.3, 0.6, 1.5, 1.8, 1.4, 1.0, 1.0, 1.0,
    1.1, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.3, 1.4, 1.5, 1.2, 0.6,
)  # fmt: skip

# Routine periods, simulated seconds.
CHECK_IN = {Family.DOOR: 50 * 60.0, Family.SMOKE: 60 * 60.0, Family.SOS: 60 * 60.0, Family.FALL: 10 * 60.0}
HEARTBEAT = 5 * 60.0  # native devices
SUPERVISION = 65 * 60.0  # flag-type 433 MHz sensors (Honeywell 5800: about 70 min)
FLAP_RATE = 1 / (7 * DAY)  # per zigbee device
DENIED_RATE = 3 / DAY  # refused cards per access controller


@dataclass(frozen=True, slots=True)
class Incident:
    """A scripted incident ``at`` run-clock seconds after the start.

    ``household`` is a household id; for public-area incidents (``door_forced``,
    ``access_denied``) it may be a building id. ``device`` picks a device explicitly (the SOS
    pendant, a lobby door). ``duration`` (run seconds) overrides ``DEFAULT_DURATIONS``.
    """

    at: float
    household: str
    kind: IncidentKind
    duration: float | None = None
    device: str = ""


@dataclass(frozen=True, slots=True)
class Emission:
    """One message due ``when`` run-clock seconds after the start."""

    when: float
    message: Message
    cause: str = "routine"  # or "incident:<kind>"

    @property
    def topic(self) -> str:
        return self.message.topic

    @property
    def payload(self) -> bytes:
        return self.message.payload


@dataclass(slots=True)
class _Person:
    resident: Resident
    role: Literal["elder", "adult"]
    credential: str
    method: Literal["card", "face", "pin"]
    home: bool = True
    held: bool = False  # cannot leave: fallen, or the household is "inactive"


@dataclass(slots=True)
class _Home:
    household: Household
    people: list[_Person]
    door: DoorSim | None = None
    smoke: SmokeSim | None = None
    fall: FallSim | None = None
    sos: SosSim | None = None
    others: list[SimDevice] = field(default_factory=list)
    inactive_until: float = -math.inf
    fallen: bool = False
    episode: int = 0  # radar presence episode counter: a stale "leave" is ignored

    @property
    def occupied(self) -> bool:
        return any(p.home for p in self.people)


Action = Callable[[], Iterable[tuple[Message, str]]]


class BlockActivity:
    """The routine of every household and public device of a site, plus scripted incidents."""

    def __init__(
        self,
        site: SiteConfig,
        rng: random.Random,
        *,
        start_time: float,
        speed: float = 1.0,
        start_hour: float | None = None,
        incidents: Sequence[Incident] = (),
        legacy_availability: bool = False,
        rtl_433_host: str = RTL_433_HOST,
    ) -> None:
        """``start_time``: the run clock's wall time at the start (epoch s). ``start_hour``:
        local time of day the routine starts at; default: ``start_time``'s Beijing time when
        ``speed`` is 1, else 07:00 (a compressed day starts with the block waking up)."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.site = site
        self.rng = rng
        self.start_time = start_time
        self.speed = speed
        if start_hour is None:
            start_hour = ((start_time + BEIJING) % DAY) / 3600 if speed == 1 else 7.0
        self.start_tod = (start_hour % 24) * 3600
        self.legacy_availability = legacy_availability
        self._heap: list[tuple[float, int, Action]] = []
        self._seq = itertools.count()
        self._now = 0.0  # simulated seconds since the start

        self.devices: dict[str, SimDevice] = {}
        for d in site.devices:
            if d.mqtt is None:
                continue  # serial devices have their own pty simulators (simulators/serial_radar.py)
            self.devices[d.id] = simulator_for(
                d, site.mqtt, rng=random.Random(rng.getrandbits(64)), stamp=self._wall, rtl_433_host=rtl_433_host
            )
        self.homes: dict[str, _Home] = {}
        for h in site.households:
            self.homes[h.id] = _Home(h, [self._person(r) for r in site.residents if r.household == h.id])
        self.lobby: dict[str, list[SimDevice]] = {}  # building → its public door devices
        for d in site.devices:
            sim = self.devices.get(d.id)
            if sim is None:
                continue  # a serial device: not part of the MQTT activity
            home = self.homes.get(d.household)
            if home is None:
                if isinstance(sim, DoorSim):
                    self.lobby.setdefault(d.building, []).append(sim)
                continue
            slot = {Family.DOOR: "door", Family.SMOKE: "smoke", Family.FALL: "fall", Family.SOS: "sos"}.get(d.family)
            if slot is not None and getattr(home, slot) is None:
                setattr(home, slot, sim)
            else:
                home.others.append(sim)

        targeted = {self._incident_device(i).id for i in incidents}  # validates every incident
        self._no_flaps = targeted
        self._start_routine()
        for incident in incidents:
            self._at(incident.at * speed, self._incident_action(incident))

    # ------------------------------------------------------------------ time and scheduling

    def _wall(self) -> float:
        """Wall-clock time of the event being generated: what a device's own clock would say."""
        return self.start_time + self._now / self.speed

    def _hour(self, sim_t: float) -> int:
        return int(((self.start_tod + sim_t) % DAY) // 3600)

    def _at(self, sim_t: float, action: Action) -> None:
        heapq.heappush(self._heap, (sim_t, next(self._seq), action))

    def _after(self, delay: float, action: Action) -> None:
        self._at(self._now + delay, action)

    def _after_run(self, run_seconds: float, action: Action) -> None:
        """Schedule by run-clock seconds (incidents), not by simulated time."""
        self._after(run_seconds * self.speed, action)

    def emissions(self, until: float | None = None) -> Iterator[Emission]:
        """Emissions in time order, up to ``until`` run seconds (forever when None).

        Resumable: a second call continues where the first stopped.
        """
        while self._heap:
            sim_t = self._heap[0][0]
            if until is not None and sim_t / self.speed > until:
                return
            _, _, action = heapq.heappop(self._heap)
            self._now = sim_t
            for message, cause in action():
                device = self.devices.get(message.device_id)
                if device is not None and not device.online and not message.retain:
                    continue  # an offline device's radio messages never reach the bridge
                yield Emission(sim_t / self.speed, message, cause)

    # ------------------------------------------------------------------ people

    def _person(self, r: Resident) -> _Person:
        # The config has no ages: a resident with a risk tier above "low" is taken for an elder.
        role: Literal["elder", "adult"] = "elder" if r.lives_alone or r.risk_tier != "low" else "adult"
        methods: list[Literal["card", "face", "pin"]] = ["card", "face", "pin"]
        method = self.rng.choices(methods, [0.6, 0.35, 0.05])[0]
        credential = f"{method}:{self.rng.randrange(100, 1000)}-{self.rng.randrange(10_000):04d}"
        return _Person(r, role, credential, method)

    def _outings_per_day(self, p: _Person) -> float:
        return 1.5 if p.role == "elder" else 2.0

    def _away(self, p: _Person, hour: int) -> float:
        rng = self.rng
        if p.role == "adult" and 6 <= hour <= 9:
            return rng.uniform(8, 10) * 3600  # work
        if p.role == "elder":
            return min(4 * 3600.0, max(15 * 60.0, rng.lognormvariate(math.log(75 * 60), 0.6)))
        return rng.uniform(0.5, 3) * 3600

    # ------------------------------------------------------------------ routine

    def _start_routine(self) -> None:
        rng = self.rng
        # Z2M announces every device's availability (retained) when it starts.
        self._at(0.0, self._announce)
        for sim in self.devices.values():
            period = self._check_in_period(sim)
            if period is not None:
                self._at(rng.uniform(0, period), self._check_in(sim, period))
        for home in self.homes.values():
            for person in home.people:
                self._next_outing(home, person)
            if home.fall is not None:
                self._next_visit(home)
        zigbee = [s for s in self.devices.values() if isinstance(s.device.mqtt, Zigbee2MqttSource)]
        if zigbee:
            self._after(rng.expovariate(FLAP_RATE * len(zigbee)), self._flap(zigbee))
        for sim in self.devices.values():
            if isinstance(sim, AccessControllerSim):
                self._after(rng.expovariate(DENIED_RATE), self._stranger(sim))

    def _announce(self) -> Iterable[tuple[Message, str]]:
        for sim in self.devices.values():
            for m in sim.availability(True, self.legacy_availability):
                yield m, "routine"

    def _check_in_period(self, sim: SimDevice) -> float | None:
        if isinstance(sim.device.mqtt, Zigbee2MqttSource):
            return CHECK_IN[sim.family]
        if isinstance(sim, AccessControllerSim) or isinstance(sim.device.mqtt, NativeSource):
            return HEARTBEAT
        return SUPERVISION  # rtl_433: only flag models answer; the rest return nothing

    def _check_in(self, sim: SimDevice, period: float) -> Action:
        def action() -> Iterable[tuple[Message, str]]:
            self._after(period * self.rng.uniform(0.9, 1.1), action)
            sim.drain(0.01)
            return [(m, "routine") for m in sim.check_in()]

        return action

    def _thinned(self, rate_per_day: float, weights: Sequence[float]) -> float:
        """Delay to the next event of a Poisson process whose rate follows ``weights`` by hour
        (thinning: candidates at the peak rate, each kept with weight/peak)."""
        mean = sum(weights) / len(weights)
        peak = max(weights) / mean * rate_per_day / DAY
        t = 0.0
        while True:
            t += self.rng.expovariate(peak)
            if self.rng.random() * max(weights) <= weights[self._hour(self._now + t)]:
                return t

    def _next_outing(self, home: _Home, person: _Person) -> None:
        self._after(self._thinned(self._outings_per_day(person), OUTING_BY_HOUR), self._leave(home, person))

    def _leave(self, home: _Home, person: _Person) -> Action:
        def action() -> Iterable[tuple[Message, str]]:
            if not person.home or person.held or self._now < home.inactive_until:
                self._next_outing(home, person)  # out already, or cannot go: try again later
                return []
            person.home = False
            out = self._door_pair(home.door)
            self._after(self.rng.uniform(40, 120), self._through_lobby(home, person, "out"))
            if not home.occupied and home.fall is not None and home.fall.present:
                self._after(self.rng.uniform(30, 120), self._radar(home, present=False))
            self._after(self._away(person, self._hour(self._now)), self._come_back(home, person))
            return out

        return action

    def _come_back(self, home: _Home, person: _Person) -> Action:
        def action() -> Iterable[tuple[Message, str]]:
            out = list(self._through_lobby(home, person, "in")())
            self._after(self.rng.uniform(60, 150), self._enter(home, person))
            return out

        return action

    def _enter(self, home: _Home, person: _Person) -> Action:
        def action() -> Iterable[tuple[Message, str]]:
            person.home = True
            self._next_outing(home, person)
            return self._door_pair(home.door)

        return action

    def _door_pair(self, door: DoorSim | None, close_after: float | None = None) -> list[tuple[Message, str]]:
        """Open now, close a few seconds later (scheduled)."""
        if door is None:
            return []
        out = [(m, "routine") for m in door.open()]
        delay = close_after if close_after is not None else self.rng.uniform(4, 15)
        self._after(delay, lambda: [(m, "routine") for m in door.close()])
        return out

    def _through_lobby(self, home: _Home, person: _Person, direction: Literal["in", "out"]) -> Action:
        def action() -> Iterable[tuple[Message, str]]:
            out: list[tuple[Message, str]] = []
            for sim in self.lobby.get(home.household.building, []):
                if isinstance(sim, AccessControllerSim):
                    # In: card, face or PIN. Out: the exit button, logged only by face readers.
                    if direction == "in" or person.method == "face":
                        out += [
                            (m, "routine")
                            for m in sim.grant(person.credential, person.resident.name, direction, person.method)
                        ]
                elif isinstance(sim, DoorSim):
                    out += self._door_pair(sim, self.rng.uniform(5, 10))
            return out

        return action

    def _next_visit(self, home: _Home) -> None:
        rate = 6.0 if home.fall is not None and home.fall.device.room == "卫生间" else 4.0
        self._after(self._thinned(rate, VISIT_BY_HOUR), self._visit(home))

    def _visit(self, home: _Home) -> Action:
        def action() -> Iterable[tuple[Message, str]]:
            self._next_visit(home)
            radar = home.fall
            if radar is None or radar.present or home.fallen or not home.occupied:
                return []
            if self._now < home.inactive_until:
                return []
            hour = self._hour(self._now)
            if radar.device.room != "卫生间" and (hour >= 21 or hour < 6):
                # a night's sleep in the bedroom: until 06:00–08:00
                wake = self.rng.uniform(6, 8) * 3600
                stay = (wake - (self.start_tod + self._now) % DAY) % DAY
            elif radar.device.room == "卫生间":
                stay = self.rng.uniform(3, 15) * 60
            else:
                stay = self.rng.uniform(10, 60) * 60
            home.episode += 1
            self._after(stay, self._radar(home, present=False, episode=home.episode))
            return [(m, "routine") for m in radar.presence(True)]

        return action

    def _radar(self, home: _Home, present: bool, episode: int | None = None) -> Action:
        def action() -> Iterable[tuple[Message, str]]:
            radar = home.fall
            if radar is None or home.fallen or radar.present == present:
                return []
            if episode is not None and episode != home.episode:
                return []  # a later episode (or the household emptying) took over
            if not present:
                home.episode += 1
            return [(m, "routine") for m in radar.presence(present)]

        return action

    def _flap(self, zigbee: list[SimDevice]) -> Action:
        def action() -> Iterable[tuple[Message, str]]:
            self._after(self.rng.expovariate(FLAP_RATE * len(zigbee)), action)
            sim = self.rng.choice(zigbee)
            if not sim.online or sim.id in self._no_flaps:
                return []
            self._after(self.rng.uniform(3, 40) * 60, self._back_online(sim, "routine"))
            return [(m, "routine") for m in sim.availability(False, self.legacy_availability)]

        return action

    def _back_online(self, sim: SimDevice, cause: str) -> Action:
        def action() -> Iterable[tuple[Message, str]]:
            back = sim.availability(True, self.legacy_availability)
            return [(m, cause) for m in [*back, *sim.check_in()]]

        return action

    def _stranger(self, sim: AccessControllerSim) -> Action:
        def action() -> Iterable[tuple[Message, str]]:
            self._after(self.rng.expovariate(DENIED_RATE), action)
            card = f"card:{self.rng.randrange(100, 1000)}-{self.rng.randrange(10_000):04d}"
            return [(m, "routine") for m in sim.deny(card)]

        return action

    # ------------------------------------------------------------------ incidents

    def _incident_device(self, incident: Incident) -> SimDevice:
        """The device an incident acts on; ``ValueError`` if the site has none that can."""
        if incident.kind not in INCIDENT_KINDS:
            raise ValueError(f"unknown incident kind {incident.kind!r}; known: {', '.join(INCIDENT_KINDS)}")
        if incident.device:
            sim = self.devices.get(incident.device)
            if sim is None:
                raise ValueError(f"incident {incident.kind} at {incident.at}: no device {incident.device!r}")
        else:
            sim = self._default_target(incident)
        wanted: dict[str, type[SimDevice]] = {
            "sos": SosSim,
            "smoke": SmokeSim,
            "smoke_test": SmokeSim,
            "fall": FallSim,
            "fall_no_recovery": FallSim,
            "door_forced": DoorSim,
            "door_held_open": DoorSim,
            "access_denied": AccessControllerSim,
        }
        cls = wanted.get(incident.kind)
        if cls is not None and not isinstance(sim, cls):
            raise ValueError(f"incident {incident.kind}: device {sim.id} is a {sim.family} device")
        return sim

    def _default_target(self, incident: Incident) -> SimDevice:
        kind, where = incident.kind, incident.household
        home = self.homes.get(where)
        if home is None:
            if where not in self.lobby:
                raise ValueError(f"incident {kind} at {incident.at}: no household or building {where!r}")
            doors = self.lobby[where]
            ac = [d for d in doors if isinstance(d, AccessControllerSim)]
            if kind == "access_denied" and ac:
                return ac[0]
            if kind in ("door_forced", "door_held_open", "offline", "tamper", "low_battery"):
                return (ac or doors)[0]
            raise ValueError(f"incident {kind}: building {where!r} has no device for it; name a household")
        if kind == "access_denied":
            lobby = [d for d in self.lobby.get(home.household.building, []) if isinstance(d, AccessControllerSim)]
            if not lobby:
                raise ValueError(f"incident access_denied: building {home.household.building} has no access controller")
            return lobby[0]
        slot = {
            "sos": home.sos,
            "smoke": home.smoke,
            "smoke_test": home.smoke,
            "low_battery": home.smoke,
            "tamper": home.smoke,
            "fall": home.fall,
            "fall_no_recovery": home.fall,
            "offline": home.fall,
            "inactive": home.fall or home.door,
            "door_forced": home.door,
            "door_held_open": home.door,
        }.get(kind)
        if slot is None:
            raise ValueError(f"incident {kind}: household {where!r} has no device for it")
        return slot

    def _incident_action(self, incident: Incident) -> Action:
        sim = self._incident_device(incident)
        kind = incident.kind
        cause = f"incident:{kind}"
        duration = incident.duration if incident.duration is not None else DEFAULT_DURATIONS.get(kind, 0.0)
        home = self.homes.get(incident.household) or self.homes.get(sim.device.household)

        def tag(messages: Iterable[Message]) -> list[tuple[Message, str]]:
            return [(m, cause) for m in messages]

        def later(step: Callable[[], list[Message]]) -> None:
            self._after_run(duration, lambda: tag(step()))

        def action() -> Iterable[tuple[Message, str]]:
            if isinstance(sim, SosSim) and kind == "sos":
                return tag(sim.press())
            if isinstance(sim, SmokeSim) and kind in ("smoke", "smoke_test"):
                if kind == "smoke_test":
                    return tag(sim.test())
                later(sim.clear)
                return tag(sim.alarm())
            if isinstance(sim, FallSim) and kind in ("fall", "fall_no_recovery"):
                return tag(self._fall(sim, home, recover=kind == "fall", after=duration, tag=tag))
            if isinstance(sim, AccessControllerSim) and kind == "door_forced":
                later(sim.close)
                return tag(sim.forced_open())
            if isinstance(sim, DoorSim) and kind in ("door_forced", "door_held_open"):
                later(sim.close)
                return tag(sim.open())
            if isinstance(sim, AccessControllerSim) and kind == "access_denied":
                for i in (1, 2):  # someone tries the same strange card three times
                    self._after_run(8.0 * i, lambda: tag(sim.deny("card:000-0000")))
                return tag(sim.deny("card:000-0000"))
            if kind == "offline":
                later(lambda: [m for m, _ in self._back_online(sim, cause)()])
                return tag(sim.availability(False, self.legacy_availability))
            if kind == "low_battery":
                return tag(sim.battery_low())
            if kind == "tamper" and isinstance(sim, SmokeSim | DoorSim):
                later(lambda: sim.tamper(False))
                return tag(sim.tamper(True))
            if kind == "inactive" and home is not None:
                home.inactive_until = self._now + duration * self.speed
                return []
            raise AssertionError(f"incident {kind} on {sim.id} was not validated")

        return action

    def _fall(
        self,
        radar: FallSim,
        home: _Home | None,
        *,
        recover: bool,
        after: float,
        tag: Callable[[Iterable[Message]], list[tuple[Message, str]]],
    ) -> list[Message]:
        """A fall in ``home``: the resident is there (whatever the routine said) and stays."""
        person = None
        if home is not None and home.people:
            person = next((p for p in home.people if p.home), home.people[0])
            person.home = True
            person.held = True
            home.fallen = True
        out = radar.fall()
        if recover:

            def get_up() -> list[tuple[Message, str]]:
                if person is not None:
                    person.held = False
                if home is not None:
                    home.fallen = False
                return tag(radar.clear())

            self._after_run(after, get_up)
        else:
            # Lying still where the radar sees them: stationary residence, where it can say so.
            self._after_run(after, lambda: tag(radar.residence()))
        return out


# ---------------------------------------------------------------------- pacing


async def play(
    activity: BlockActivity,
    clock: Clock,
    publish: Callable[[Emission], Awaitable[None]],
    *,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
) -> float:
    """Publish each emission when it is due on ``clock``; return the run seconds played.

    Ends at ``duration`` run seconds (having waited that long) or when ``stop`` is set. A slow
    ``publish`` (a broker reconnect) delays what follows; late emissions go out at once, in
    order, rather than being dropped.
    """
    origin = clock.monotonic()
    for emission in activity.emissions(until=duration):
        wait = origin + emission.when - clock.monotonic()
        if (wait > 0 and await sleep_or_stop(clock, wait, stop)) or (stop is not None and stop.is_set()):
            return clock.monotonic() - origin
        await publish(emission)
    if duration is not None:
        wait = origin + duration - clock.monotonic()
        if wait > 0:
            await sleep_or_stop(clock, wait, stop)
    return clock.monotonic() - origin


async def sleep_or_stop(clock: Clock, seconds: float, stop: asyncio.Event | None) -> bool:
    """Sleep on ``clock``; True if ``stop`` was set first."""
    if stop is None:
        await clock.sleep(seconds)
        return False
    if stop.is_set():
        return True
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, stopper):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return stop.is_set()
