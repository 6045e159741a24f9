"""Publish a simulated block to an MQTT broker (``run_simulation``), play its wired devices on
pseudo-terminals (``SerialSimulators``), and the demo's incidents.

The activity model (``simulators.activity``) decides what happens when; this module paces it
on the injected clock and publishes each message with aiomqtt at QoS 1, waiting for the
broker's PUBACK before the next, so the broker sees them in order. If the broker goes away
(restart, network), the publish is retried on a new connection with capped back-off; a
message whose PUBACK was lost may arrive twice (at-least-once, like a real device).

    stats = await run_simulation(config, "127.0.0.1", 1883, clock=SystemClock(), speed=60,
                                 incidents=default_demo_incidents(config), duration=120)

The config's serial radars and Modbus buses are simulated on ptys at their configured port
paths (``SerialSimulators``): a symlink at ``serial.port`` / ``modbus_buses[].port`` to a new
/dev/pts/N, as the gateway's config expects. That is possible only where the simulator may
create files — a path in a data or temporary directory, not ``/dev/ttyUSB0`` or
``/dev/serial/by-id/…`` (udev owns those, and a real device may be there): such a device is
skipped with a message saying so, and the rest run.

Command line (a config's devices, against its broker or ``--broker host:port``)::

    sensegate simulate -c config/demo.toml --speed 60 --incidents
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from gateway.clock import Clock
from gateway.models import Family
from gateway.mqtt_util import connection_lost, reason_lost
from gateway.site.config import Device, SiteConfig, site_profiles
from simulators.activity import BlockActivity, Emission, Incident, IncidentKind, play, sleep_or_stop
from simulators.modbus_detector import PtyModbusBus, SimDetector
from simulators.osdp_reader import PtyOsdpReader
from simulators.serial_radar import PtyRadar

log = logging.getLogger("sensegate.simulator")

PUBLISH_TIMEOUT = 10.0  # seconds to wait for a PUBACK before taking the connection for dead
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 10.0


@dataclass
class SimStats:
    """What a run published. ``events`` counts what the gateway should decode (a zigbee2mqtt
    door message is a door event and a battery event); ``messages`` counts publishes."""

    messages: int = 0
    events: int = 0
    by_family: Counter[str] = field(default_factory=Counter)  # messages per device family
    by_kind: Counter[str] = field(default_factory=Counter)  # events per kind
    by_cause: Counter[str] = field(default_factory=Counter)  # messages: routine / incident:<kind>
    reconnects: int = 0  # connections lost and made again
    retried: int = 0  # publishes sent again on a new connection
    seconds: float = 0.0  # run-clock seconds played

    def record(self, emission: Emission) -> None:
        m = emission.message
        self.messages += 1
        self.events += len(m.kinds)
        self.by_family[m.family.value] += 1
        self.by_kind.update(k.value for k in m.kinds)
        self.by_cause[emission.cause] += 1

    def __str__(self) -> str:
        families = ", ".join(f"{k} {v}" for k, v in sorted(self.by_family.items()))
        incidents = ", ".join(f"{k[9:]} {v}" for k, v in sorted(self.by_cause.items()) if k.startswith("incident:"))
        return (
            f"published {self.messages} messages ({self.events} events) in {self.seconds:.1f} s: {families}"
            + (f"; incidents: {incidents}" if incidents else "")
            + (f"; reconnects {self.reconnects}, retried {self.retried}" if self.reconnects else "")
        )


class _Publisher:
    """One aiomqtt connection at a time; a failed publish reconnects (capped back-off) and retries."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        clock: Clock,
        qos: int,
        identifier: str,
        stats: SimStats,
        stop: asyncio.Event | None,
    ) -> None:
        self.host = host
        self.port = port
        self.clock = clock
        self.qos = qos
        self.identifier = identifier
        self.stats = stats
        self.stop = stop
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: aiomqtt.Client | None = None
        self._connected_once = False

    async def _connect(self) -> aiomqtt.Client:
        backoff = BACKOFF_INITIAL
        while True:
            stack = contextlib.AsyncExitStack()
            client = aiomqtt.Client(self.host, self.port, identifier=self.identifier, timeout=PUBLISH_TIMEOUT)
            try:
                await stack.enter_async_context(client)
            except aiomqtt.MqttError as exc:
                await stack.aclose()
                log.warning(
                    "simulator: cannot connect to %s:%d (%s); retrying in %.1f s", self.host, self.port, exc, backoff
                )
                if await self._pause(backoff):
                    raise _Stopped from None
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if self._connected_once:
                self.stats.reconnects += 1
            self._connected_once = True
            self._stack, self._client = stack, client
            return client

    async def _pause(self, seconds: float) -> bool:
        return await sleep_or_stop(self.clock, seconds, self.stop)

    async def _drop(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await stack.aclose()

    async def publish(self, emission: Emission) -> None:
        first = True
        while True:
            client = self._client or await self._connect()
            try:
                await self._publish(client, emission)
                return
            except aiomqtt.MqttError as exc:
                log.warning("simulator: publish to %s failed (%s); reconnecting", emission.topic, exc)
                await self._drop()
                if first:
                    self.stats.retried += 1
                    first = False

    async def _publish(self, client: aiomqtt.Client, emission: Emission) -> None:
        publish = asyncio.ensure_future(
            client.publish(
                emission.topic,
                emission.payload,
                qos=self.qos,
                retain=emission.message.retain,
                timeout=PUBLISH_TIMEOUT,
            )
        )
        # aiomqtt keeps waiting for the PUBACK of a message whose connection has dropped until
        # the timeout; its "disconnected" future (private, aiomqtt 2.x) says so at once.
        lost = connection_lost(client)
        if lost is None:
            await publish
            return
        await asyncio.wait({publish, lost}, return_when=asyncio.FIRST_COMPLETED)
        if publish.done():
            publish.result()
            return
        publish.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await publish
        raise aiomqtt.MqttError(f"connection lost before the broker acknowledged the message ({reason_lost(lost)})")

    async def close(self) -> None:
        await self._drop()


class _Stopped(Exception):
    """Stop was set while waiting for the broker."""


async def run_simulation(
    site: SiteConfig,
    host: str,
    port: int,
    *,
    clock: Clock,
    seed: int = 1,
    speed: float = 60.0,
    incidents: Sequence[Incident] = (),
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    qos: int = 1,
    on_publish: Callable[[str, bytes], None] | None = None,
    start_hour: float | None = None,
    legacy_availability: bool = False,
) -> SimStats:
    """Publish the simulated activity of ``site`` to the broker at ``host:port``.

    Runs for ``duration`` run-clock seconds, or until ``stop`` is set (forever if neither).
    ``speed`` compresses the daily routine (simulated seconds per clock second); ``incidents``
    happen at their ``at`` on the clock, whatever the speed. ``start_hour``: local time of day
    the routine starts at (default: the clock's, at speed 1; 07:00 when compressed). Returns
    what was published; ``on_publish(topic, payload)`` is called after each PUBACK.
    """
    activity = BlockActivity(
        site,
        random.Random(seed),
        start_time=clock.now(),
        speed=speed,
        start_hour=start_hour,
        incidents=incidents,
        legacy_availability=legacy_availability,
    )
    stats = SimStats()
    publisher = _Publisher(
        host,
        port,
        clock=clock,
        qos=qos,
        identifier=f"sensegate-sim-{site.gateway.id}-{seed}",
        stats=stats,
        stop=stop,
    )

    async def publish(emission: Emission) -> None:
        await publisher.publish(emission)
        stats.record(emission)
        if on_publish is not None:
            on_publish(emission.topic, emission.payload)

    started = clock.monotonic()
    try:
        await play(activity, clock, publish, duration=duration, stop=stop)
    except _Stopped:
        pass
    finally:
        stats.seconds = clock.monotonic() - started
        await publisher.close()
    return stats


@dataclass(frozen=True, slots=True)
class ScriptStep:
    """One incident of the demo's script: when, what, on which device family and whose flat."""

    at: float
    kind: IncidentKind
    family: Family
    alone_first: bool  # a lone elder's flat first, else a family's
    second: bool = False  # the second such flat when there are two (another elder than the SOS)
    duration: float | None = None


DEMO_SCRIPT = (
    ScriptStep(8.0, "sos", Family.SOS, alone_first=True),
    ScriptStep(18.0, "smoke", Family.SMOKE, alone_first=False, duration=40.0),
    ScriptStep(28.0, "fall_no_recovery", Family.FALL, alone_first=True, second=True),
)


def default_demo_incidents(site: SiteConfig | None = None) -> list[Incident]:
    """The demo's script (``DEMO_SCRIPT``), all within 45 s so alerts show in the terminal
    within a minute:

    - 8 s: an elder living alone presses the SOS button;
    - 18 s: a smoke alarm in a family's kitchen, clearing 40 s later;
    - 28 s: another lone elder falls and does not get up.

    Each goes to a household that has an MQTT device of its family (lone elders first, for the
    smoke alarm a family's flat when one has a detector); a step no household has a device for
    is left out, so every site can play the script. Without a site, the households come from
    ``simulators.block.demo_site()``. The wired devices have a script of their own
    (``SerialSimulators.run``): a gas leak on the Modbus bus at 10 s, a fall on the wired radar
    at 38 s.
    """
    if site is None:
        from gateway.site.config import parse_config
        from simulators.block import demo_site

        site = parse_config(demo_site())
    # The activity model plays MQTT devices only; a flat's wired (serial) radar has its own
    # pty simulator (``sensegate demo`` scripts that radar separately).
    order = {h.id: k for k, h in enumerate(site.households)}
    found: dict[Family, set[str]] = {}
    for d in site.devices:
        if d.household in order and d.mqtt is not None:
            found.setdefault(d.family, set()).add(d.household)
    alone = {r.household for r in site.residents if r.lives_alone}
    incidents = []
    for step in DEMO_SCRIPT:
        flats = sorted(found.get(step.family, ()), key=order.__getitem__)
        preferred = [h for h in flats if (h in alone) == step.alone_first] or flats
        if preferred:
            flat = preferred[1] if step.second and len(preferred) > 1 else preferred[0]
            incidents.append(Incident(step.at, flat, step.kind, duration=step.duration))
    return incidents


def check_simulation(site: SiteConfig, incidents: Sequence[Incident] = ()) -> None:
    """``ValueError`` in one line if ``run_simulation`` could not play ``site`` with
    ``incidents`` (a device without a simulator, an incident no device can play), so a command
    can say so before it starts anything."""
    try:
        BlockActivity(site, random.Random(0), start_time=0.0, incidents=incidents)
    except KeyError as exc:  # simulator_for names the device that has none
        raise ValueError(str(exc.args[0]) if exc.args else str(exc)) from None


# ---------------------------------------------------------------------- serial devices

# The demo's script for the wired devices, in seconds after the start (next to the MQTT
# incidents of default_demo_incidents): a gas leak on the Modbus bus, alarming and clearing;
# a fall on the wired radar that the elder gets up from (raised, then downgraded, kept).
GAS_LEAK_AT, GAS_LEAK_FOR, GAS_LEAK_LEVEL = 10.0, 30.0, 55.0  # concentration read with the alarm
WIRED_FALL_AT, WIRED_FALL_RECOVER = 38.0, 12.0
# At an OSDP door: a registered card at 20 s (the door opens and closes), then at 60 s the
# door is pushed open with no card (forced: door_opened with secured = true).
CARD_AT, FORCED_AT = 20.0, 60.0


def pty_place_problem(port: str) -> str:
    """Why a simulator cannot put its pty at ``port`` ("" when it can): the path must be in a
    directory the simulator may write, and hold nothing, or a link left by a simulator that
    has stopped (its /dev/pts/N is gone)."""
    path = Path(port)
    if path.is_symlink():
        target = os.readlink(path)
        if not target.startswith("/dev/pts/"):
            return f"{port} is a link to {target}, not to a simulator's pty: a real device may be there"
        if path.exists():
            return f"{port} is in use: a running simulator's {target}"
    elif path.exists():
        return f"{port} exists and is not a simulator's pty link: a real device may be there"
    if not path.parent.is_dir():
        return f"its directory {path.parent} does not exist"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"{path.parent} is not writable"
    return ""


class SerialSimulators:
    """The site's wired devices on pseudo-terminals: one ``PtyRadar`` per serial radar, one
    ``PtyModbusBus`` per Modbus bus with a ``SimDetector`` per device on it (its profile from
    the config, so the simulated registers are the map the gateway reads).

        sims = SerialSimulators(config, clock=SystemClock())
        for line in sims.skipped: print(line)   # devices whose port a simulator cannot create
        sims.open()                             # inside the event loop, before the gateway opens them
        await sims.run(stop, incidents=True)    # idle radars; the scripted gas leak and fall
        sims.close()
    """

    def __init__(self, site: SiteConfig, *, clock: Clock, seed: int = 1) -> None:
        self.clock = clock
        self.radars: dict[str, PtyRadar] = {}  # device id → its radar
        self.buses: dict[str, PtyModbusBus] = {}  # bus id → its bus
        self.detectors: dict[str, SimDetector] = {}  # device id → its detector
        self.skipped: list[str] = []  # one line per device not simulated, saying why
        self.families: dict[str, Family] = {}
        hint = "put the port in a writable directory (e.g. the data dir) to simulate it"
        for d in site.devices:
            if d.serial is None:
                continue
            problem = pty_place_problem(d.serial.port)
            if problem:
                self.skipped.append(f"serial radar {d.id}: not simulated on {d.serial.port}: {problem}; {hint}")
                continue
            self.radars[d.id] = PtyRadar(d.serial.port, d.serial.protocol, clock=clock, seed=seed)
        on_bus = [d for d in site.devices if d.modbus is not None]
        profiles = site_profiles(site) if on_bus else {}
        self.readers: dict[str, PtyOsdpReader] = {}  # device id → the reader on its bus's port
        self.cards: dict[str, tuple[int, int]] = {}  # device id → a card that may open it (fc, cn)
        for ob in site.osdp_buses:
            on_osdp = sorted((d for d in site.devices if d.osdp is not None and d.osdp.bus == ob.id), key=_address)
            problem = pty_place_problem(ob.port)
            if problem or not on_osdp:
                if on_osdp:
                    names = ", ".join(d.id for d in on_osdp)
                    self.skipped.append(f"OSDP bus {ob.id} ({names}): not simulated on {ob.port}: {problem}; {hint}")
                continue
            first, *rest = on_osdp
            for d in rest:
                self.skipped.append(f"OSDP reader {d.id}: not simulated (the simulator plays one reader per port)")
            scbk = bytes.fromhex(ob.scbk.get_secret_value()) if ob.scbk is not None else None
            self.readers[first.id] = PtyOsdpReader(ob.port, _address(first), scbk=scbk)
            card = _card_for(site, first.building or _building_of(site, first.household))
            if card is not None:
                self.cards[first.id] = card
        for b in site.modbus_buses:
            devices = [d for d in on_bus if d.modbus is not None and d.modbus.bus == b.id]
            problem = pty_place_problem(b.port)
            if problem:
                names = ", ".join(d.id for d in devices)
                self.skipped.append(f"Modbus bus {b.id} ({names}): not simulated on {b.port}: {problem}; {hint}")
                continue
            bus = self.buses[b.id] = PtyModbusBus(b.port)
            for d in devices:
                assert d.modbus is not None
                self.detectors[d.id] = bus.add(d.modbus.unit_id, profiles[d.modbus.profile])
                self.families[d.id] = d.family

    def __bool__(self) -> bool:
        return bool(self.radars or self.buses or self.readers)

    def describe(self) -> list[str]:
        """One line per simulated port: what is on it."""
        lines = [f"serial radar {d} ({r.sim.protocol}) on {r.link} → {r.device}" for d, r in self.radars.items()]
        for bus_id, bus in self.buses.items():
            units = ", ".join(
                f"{d} (unit {det.unit_id}, {det.profile.model})"
                for d, det in self.detectors.items()
                if bus.units.get(det.unit_id) is det
            )
            lines.append(f"Modbus bus {bus_id} on {bus.link} → {bus.device}: {units}")
        for d, reader in self.readers.items():
            lines.append(f"OSDP reader {d} (address {reader.address}) on {reader.link} → {reader.device}")
        return lines

    def open(self) -> None:
        """Create the ptys and their links. Needs the running loop (they answer the gateway)."""
        for port in [*self.radars.values(), *self.buses.values(), *self.readers.values()]:
            port.open()

    def close(self) -> None:
        for port in [*self.radars.values(), *self.buses.values(), *self.readers.values()]:
            port.close()

    async def run(self, stop: asyncio.Event, *, incidents: bool = False) -> None:
        """Until ``stop``: the radars idle with someone present (heartbeats, body movement); the
        buses answer polls by themselves. With ``incidents``, the demo's script on the first gas
        detector (a smoke transmitter when there is none) and the first radar."""
        async with asyncio.TaskGroup() as tg:
            for radar in self.radars.values():
                radar.presence(True)
                tg.create_task(radar.run(stop))
            if incidents:
                tg.create_task(self._leak(stop))
                tg.create_task(self._fall(stop))
                tg.create_task(self._door(stop))

    async def _leak(self, stop: asyncio.Event) -> None:
        order = sorted(self.detectors, key=lambda d: self.families[d] != Family.GAS)
        if not order or await sleep_or_stop(self.clock, GAS_LEAK_AT, stop):
            return
        detector = self.detectors[order[0]]
        levels = ("high",) if "high" in detector.profile.alarm.levels else ()
        detector.alarm(*levels, concentration=GAS_LEAK_LEVEL if detector.profile.concentration else None)
        if await sleep_or_stop(self.clock, GAS_LEAK_FOR, stop):
            return
        detector.clear()

    async def _door(self, stop: asyncio.Event) -> None:
        """The first reader: a registered card and a normal passage, then a forced door."""
        if not self.readers:
            return
        device, reader = next(iter(self.readers.items()))
        card = self.cards.get(device)
        if await sleep_or_stop(self.clock, CARD_AT, stop):
            return
        if card is not None:
            reader.present_card(*card)
            for is_open, after in ((True, 1.5), (False, 4.0)):
                if await sleep_or_stop(self.clock, after, stop):
                    return
                reader.door(is_open)
        if await sleep_or_stop(self.clock, FORCED_AT - CARD_AT - 5.5, stop):
            return
        reader.door(True)
        if not await sleep_or_stop(self.clock, 3.0, stop):
            reader.door(False)

    async def _fall(self, stop: asyncio.Event) -> None:
        if not self.radars or await sleep_or_stop(self.clock, WIRED_FALL_AT, stop):
            return
        radar = next(iter(self.radars.values()))
        await radar.fall(recover=True, recover_after=WIRED_FALL_RECOVER)


def _address(device: Device) -> int:
    assert device.osdp is not None
    return device.osdp.address


def _building_of(site: SiteConfig, household: str) -> str:
    return next((h.building for h in site.households if h.id == household), "")


def _card_for(site: SiteConfig, building: str) -> tuple[int, int] | None:
    """A Wiegand card (facility, number) of someone who may open a door of ``building``: a
    visitor looking after a household there, else a resident or staff member; None if no one
    has a ``card:<fc>-<cn>`` credential."""
    homes = {h.id for h in site.households if h.building == building}
    visitors = [v.credentials for v in site.visitors if homes & set(v.households)]
    residents = [r.credentials for r in site.residents if r.household in homes]
    staff = [s.credentials for s in site.staff if not s.buildings or building in s.buildings]
    for credentials in (*visitors, *residents, *staff):
        for c in credentials:
            kind, _, value = c.partition(":")
            fc, _, cn = value.partition("-")
            if kind == "card" and fc.isdigit() and cn.isdigit():
                return int(fc), int(cn)
    return None
