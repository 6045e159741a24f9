"""Serial ingest: one supervised link per serial device and one poller per Modbus bus, events
committed in small group commits.

For every device configured with ``serial = {…}`` the runtime runs ``run_device(id)`` under
``supervise``: a ``drivers.serial_link.SerialLink`` on the device's port with the codec named by
``serial.protocol`` (``drivers.SERIAL_CODECS``). Each frame is decoded, passed through the
device's ``RadarLatch`` (fall and residence always stored; repeated telemetry thinned) and made
into events by the registry (identity, location, receive time from the clock, the frame in hex
as ``raw``). The link going down or coming back becomes an ``offline`` / ``online`` event with
``values.reason`` and ``values.port``.

One writer (``run_writer``) gathers what every device produced since the last commit — no
waiting: whatever is queued when the previous commit ends goes into the next, up to
``store.commit_batch`` items — and commits events, malformed-frame records and counters in one
transaction, then hands the stored events to ``on_stored`` (the alert path), as the MQTT
ingest does. A serial device cannot be asked to resend, so a frame is safe once it is read:
the link never pauses reading while the store commits.

For every ``[[modbus_buses]]`` entry the runtime runs ``run_bus(id)``: a
``drivers.modbus_bus.ModbusBus`` polling the detectors configured on it with their profiles
(``gateway.site.config.site_profiles``). What it emits (alarm / clear edges, faults, telemetry,
``online`` / ``offline``) goes through the same queue and writer, as events with
``source = "modbus:<profile model>"`` and the registers read, in hex, as ``raw``.

Counters (in the store, shown by ``sensegate status``): ``serial.<device>.bytes``,
``.frames``, ``.bad_checksums``, ``.resync_bytes``, ``.reopens``, ``.thinned``;
``modbus.<bus>.polls``, ``.failures``, ``.timeouts``, ``.exceptions``, ``.malformed``,
``.reconnects`` and the same per detector as ``modbus.<bus>.<device>.<name>``; and
``malformed.<reason>`` for frames that pass the checksum, or registers that were read, but
cannot be decoded (kept in the store's rejected payloads, topic ``serial/<device>`` or
``modbus/<bus>/<device>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from drivers import SERIAL_CODECS
from drivers.framing import FrameCodec
from drivers.modbus_bus import BusCounters, ClientFactory, Emit, ModbusBus, OnMalformed, pymodbus_client
from drivers.modbus_profiles import Profile
from drivers.osdp_door import CardRead, Directory, Door, DoorMachine, Holder, Inputs, KeyPress, Local, parse_event
from drivers.osdp_link import ChannelOpener, OsdpLink, PdDown, PdEvent, PdUp, open_channel
from drivers.radar_latch import RadarLatch
from drivers.serial_link import Frames, LinkDown, LinkItem, LinkUp, Opener, SerialLink, open_serial
from gateway.clock import Clock
from gateway.errors import PayloadError, StoreFullError
from gateway.log import LogOnce
from gateway.models import Event, Kind, Lane, Observation
from gateway.site.config import SiteConfig, site_profiles
from gateway.site.registry import Registry
from gateway.store import Store

log = logging.getLogger("sensegate.serial_ingest")

# A bus that polls without anything to report still has counters to store this often (seconds).
COUNTER_FLUSH = 10.0


@dataclass(slots=True)
class Batch:
    events: list[Event] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    rejected: list[tuple[str, str, str, bytes]] = field(default_factory=list)

    def merge(self, other: Batch) -> None:
        self.events.extend(other.events)
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.rejected.extend(other.rejected)


class SerialIngest:
    def __init__(
        self,
        config: SiteConfig,
        registry: Registry,
        store: Store,
        clock: Clock,
        outputs: dict[str, frozenset[str] | None],
        on_stored: Callable[[list[Event]], Awaitable[None]],
        opener: Opener = open_serial,
        modbus_client_factory: ClientFactory = pymodbus_client,
        osdp_opener: ChannelOpener = open_channel,
    ) -> None:
        self.config = config
        self.registry = registry
        self.store = store
        self.clock = clock
        self.outputs = outputs
        self.on_stored = on_stored
        self._queue: asyncio.Queue[Batch] = asyncio.Queue()
        self._log_once = LogOnce(log, clock)
        self.links: dict[str, SerialLink] = {}
        self.latches: dict[str, RadarLatch] = {}
        self.codecs: dict[str, FrameCodec] = {}
        for device_id, entry in registry.serial_devices.items():
            src = entry.config.serial
            assert src is not None  # serial_devices holds only those
            codec: FrameCodec = SERIAL_CODECS[src.protocol]
            self.codecs[device_id] = codec
            self.latches[device_id] = RadarLatch(refresh=src.refresh_interval)
            self.links[device_id] = SerialLink(
                src.port,
                codec,
                clock,
                baudrate=src.baudrate,
                idle_timeout=src.idle_timeout,
                backoff_initial=src.backoff_initial,
                backoff_max=src.backoff_max,
                settings=src.radar.as_dict() if src.radar is not None else None,
                opener=opener,
                name=f"radar {device_id}",
            )
        self._init_osdp(osdp_opener)
        self.buses: dict[str, ModbusBus] = {}
        self.modbus_sources: dict[str, str] = {}  # device id → "modbus:<profile model>"
        if config.modbus_buses:
            profiles = site_profiles(config)
            on_bus: dict[str, list[tuple[str, int, Profile]]] = {b.id: [] for b in config.modbus_buses}
            for device_id, entry in registry.modbus_devices.items():
                m = entry.config.modbus
                assert m is not None  # modbus_devices holds only those
                profile = profiles[m.profile]
                on_bus[m.bus].append((device_id, m.unit_id, profile))
                self.modbus_sources[device_id] = f"modbus:{profile.model}"
            for b in config.modbus_buses:
                self.buses[b.id] = ModbusBus(
                    b.port,
                    on_bus[b.id],
                    clock,
                    baudrate=b.baudrate,
                    parity=b.parity,
                    stopbits=b.stopbits,
                    timeout=b.timeout,
                    poll_interval=b.poll_interval,
                    offline_after=b.offline_after,
                    telemetry_interval=b.telemetry_interval,
                    deadband=b.deadband,
                    backoff_initial=b.backoff_initial,
                    backoff_max=b.backoff_max,
                    client_factory=modbus_client_factory,
                    name=f"modbus {b.id}",
                )

    # ------------------------------------------------------------------ per device

    async def run_device(self, device_id: str) -> None:
        await self.links[device_id].run(functools.partial(self.serial_item, device_id))

    async def serial_item(self, device_id: str, item: LinkItem) -> None:
        """What a device's link reported (frames, up, down), queued for the writer."""
        self._queue.put_nowait(self._convert(device_id, item))

    def _convert(self, device_id: str, item: LinkItem) -> Batch:
        batch = Batch()
        link = self.links[device_id]
        codec = self.codecs[device_id]
        source = f"serial:{codec.NAME}"
        if isinstance(item, LinkUp | LinkDown):
            kind = Kind.ONLINE if isinstance(item, LinkUp) else Kind.OFFLINE
            values: dict[str, str | bool | int | float] = {"port": link.path}
            if isinstance(item, LinkDown):
                values["reason"] = item.reason
            else:
                values["opens"] = link.opens
            obs = [Observation(kind, values)]
            batch.events.extend(self.registry.device_events(device_id, obs, b"", item.at, source))
        elif isinstance(item, Frames):
            latch = self.latches[device_id]
            now = self.clock.monotonic()
            for frame in item.frames:
                try:
                    decoded = codec.decode(frame)
                except PayloadError as exc:
                    name = f"malformed.{exc.reason}"
                    batch.counts[name] = batch.counts.get(name, 0) + 1
                    self._log_once.warning(
                        (exc.reason, device_id), "skipped frame: reason=%s device=%s: %s", exc.reason, device_id, exc
                    )
                    batch.rejected.append((f"serial/{device_id}", exc.reason, str(exc), frame))
                    continue
                admitted = [o for o in (latch.admit(obs, now) for obs in decoded) if o is not None]
                if admitted:
                    batch.events.extend(self.registry.device_events(device_id, admitted, frame, item.at, source))
        for name, delta in link.counters.take().items():
            batch.counts[f"serial.{device_id}.{name}"] = delta
        thinned = self.latches[device_id].thinned
        if thinned:
            batch.counts[f"serial.{device_id}.thinned"] = thinned
            self.latches[device_id].thinned = 0
        return batch

    # ------------------------------------------------------------------ per Modbus bus

    async def run_bus(self, bus_id: str) -> None:
        """Poll one bus until cancelled; what it emits goes to the writer with its counters."""
        bus = self.buses[bus_id]

        async def flush_counters() -> None:
            while True:
                await self.clock.sleep(COUNTER_FLUSH)
                self._put(f"modbus.{bus_id}", bus.counters, Batch())

        emit, bus.on_malformed = self.modbus_handlers(bus_id)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(flush_counters())
                await bus.run(emit)
        finally:
            self._put(
                f"modbus.{bus_id}", bus.counters, Batch()
            )  # the counts since the last batch; drain() commits them

    def modbus_handlers(self, bus_id: str) -> tuple[Emit, OnMalformed]:
        """What a bus's ``poll`` calls: detector observations become events, registers that
        cannot be decoded a malformed record; both queued for the writer with the bus's counters."""
        bus = self.buses[bus_id]

        async def emit(device_id: str, observations: list[Observation], raw: str) -> None:
            batch = Batch()
            batch.events.extend(
                self.registry.device_events(
                    device_id, observations, raw, self.clock.now(), self.modbus_sources[device_id]
                )
            )
            self._put(f"modbus.{bus_id}", bus.counters, batch)

        async def malformed(device_id: str, exc: PayloadError, raw: str) -> None:
            batch = Batch()
            batch.counts[f"malformed.{exc.reason}"] = 1
            batch.rejected.append((f"modbus/{bus_id}/{device_id}", exc.reason, str(exc), raw.encode()))
            self._put(f"modbus.{bus_id}", bus.counters, batch)

        return emit, malformed

    def _put(self, prefix: str, counters: BusCounters, batch: Batch) -> None:
        """Queue ``batch`` for the writer with the bus's counters since the last one
        (``<prefix>.<name>``: ``modbus.<bus>``, ``osdp.<bus>``)."""
        for name, delta in counters.take().items():
            batch.counts[f"{prefix}.{name}"] = batch.counts.get(f"{prefix}.{name}", 0) + delta
        if batch.events or batch.counts or batch.rejected:
            self._queue.put_nowait(batch)

    # ------------------------------------------------------------------ per OSDP bus

    def _init_osdp(self, opener: ChannelOpener) -> None:
        """One ``OsdpLink`` per ``[[osdp_buses]]`` entry, one ``DoorMachine`` per reader on it."""
        self.osdp_links: dict[str, OsdpLink] = {}
        self.osdp_doors: dict[str, dict[int, tuple[str, DoorMachine]]] = {}
        self.directory = access_directory(self.config)
        settings = {b.id: b for b in self.config.osdp_buses}
        for device_id, entry in self.registry.osdp_devices.items():
            src = entry.config.osdp
            assert src is not None  # osdp_devices holds only those
            b = settings[src.bus]
            house = self.registry.households.get(entry.config.household)
            door = Door(house.building if house else entry.config.building, entry.config.household)
            machine = DoorMachine(
                door,
                held_open_after=b.held_open_after,
                unlock_window=b.unlock_window,
                door_input=src.door_input,
                rex_input=None if src.rex_input < 0 else src.rex_input,
            )
            self.osdp_doors.setdefault(src.bus, {})[src.address] = (device_id, machine)
        for bus_id, doors in self.osdp_doors.items():
            b = settings[bus_id]
            self.osdp_links[bus_id] = OsdpLink(
                b.port,
                sorted(doors),
                self.clock,
                baudrate=b.baudrate,
                scbk=bytes.fromhex(b.scbk.get_secret_value()) if b.scbk is not None else None,
                online_timeout=b.online_timeout,
                backoff_initial=b.backoff_initial,
                backoff_max=b.backoff_max,
                strike_output=None if b.strike_output < 0 else b.strike_output,
                unlock_window=b.unlock_window,
                opener=opener,
                name=f"osdp {bus_id}",
            )

    async def run_osdp_bus(self, bus_id: str) -> None:
        """Run one OSDP bus until cancelled: card reads decided and signalled at the reader,
        door contact, tamper and liveness made into events for the writer."""
        link = self.osdp_links[bus_id]
        doors = self.osdp_doors[bus_id]

        async def held_open() -> None:
            # The door-ajar warning at the reader; the clock decides, so tests can run it fast.
            step = min(1.0, *(m.held_open_after / 4 for _, m in doors.values()))
            while True:
                await self.clock.sleep(step)
                now = self.clock.monotonic()
                for address, (_, machine) in doors.items():
                    for signal in machine.tick(now):
                        link.signal(address, signal)
                        self._put(f"osdp.{bus_id}", link.counters, Batch(counts={f"osdp.{bus_id}.held_open": 1}))

        async def flush_counters() -> None:
            while True:
                await self.clock.sleep(COUNTER_FLUSH)
                self._put(f"osdp.{bus_id}", link.counters, Batch())

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(held_open())
                tg.create_task(flush_counters())
                await link.run(functools.partial(self.osdp_item, bus_id))
        finally:
            self._put(f"osdp.{bus_id}", link.counters, Batch())  # the counts since the last batch; drain() commits them

    async def osdp_item(self, bus_id: str, item: PdUp | PdDown | PdEvent) -> None:
        """What a bus's link reported for one reader (up, down, a libosdp event): card reads
        decided and signalled at the reader, door contact, tamper and liveness made into
        events, queued for the writer with the bus's counters."""
        link = self.osdp_links[bus_id]
        device_id, machine = self.osdp_doors[bus_id][item.address]
        batch = Batch()
        observations: list[Observation] = []
        raw = ""
        if isinstance(item, PdUp | PdDown):
            values: dict[str, str | bool | int | float] = {"port": link.path, "address": item.address}
            if isinstance(item, PdDown):
                values["reason"] = item.reason
                machine.link_lost()
            else:
                values["opens"] = link.opens
            observations.append(Observation(Kind.ONLINE if isinstance(item, PdUp) else Kind.OFFLINE, values))
        else:
            raw = _event_text(item.event)
            try:
                reading = parse_event(item.event)
            except PayloadError as exc:
                batch.counts[f"malformed.{exc.reason}"] = 1
                self._log_once.warning(
                    (exc.reason, device_id),
                    "skipped OSDP event: reason=%s device=%s: %s",
                    exc.reason,
                    device_id,
                    exc,
                )
                batch.rejected.append((f"osdp/{bus_id}/{device_id}", exc.reason, str(exc), raw.encode()))
                reading = None
            now = self.clock.monotonic()
            if isinstance(reading, CardRead):
                decision = self.directory.decide(reading.credential, machine.door)
                observations, signals = machine.card(decision, now, reading.reader)
                for signal in signals:
                    link.signal(item.address, signal)
            elif isinstance(reading, Inputs):
                observations, _ = machine.inputs(reading, now)
            elif isinstance(reading, Local):
                observations = machine.local(reading)
            elif isinstance(reading, KeyPress):
                batch.counts[f"osdp.{bus_id}.keypresses"] = 1  # PIN entry is not decided on (yet)
        if observations:
            batch.events.extend(self.registry.device_events(device_id, observations, raw, item.at, "osdp"))
        self._put(f"osdp.{bus_id}", link.counters, batch)

    # ------------------------------------------------------------------ the writer

    async def run_writer(self) -> None:
        while True:
            batch = await self._queue.get()
            await self._commit(batch)

    async def _commit(self, batch: Batch) -> None:
        n = 1
        while n < self.config.store.commit_batch:
            try:
                batch.merge(self._queue.get_nowait())
                n += 1
            except asyncio.QueueEmpty:
                break
        if not (batch.events or batch.counts or batch.rejected):
            return
        now = self.clock.now()
        append = functools.partial(self.store.append, outputs=self.outputs, rejected=batch.rejected, now=now)
        try:
            stored = await asyncio.to_thread(append, self._admitted(batch), counts=batch.counts)
        except StoreFullError:
            # The store has made what room it could (docs/store.md, "A full disk"): once more.
            stored = await asyncio.to_thread(append, self._admitted(batch), counts=batch.counts)
        if stored:
            await self.on_stored(stored)

    def _admitted(self, batch: Batch) -> list[Event]:
        """The batch's events, less its telemetry while the store refuses telemetry (a full
        disk): a wired device has no broker to keep it, so it is dropped, and counted."""
        if not self.store.refusing_telemetry:
            return batch.events
        kept = [e for e in batch.events if e.lane is Lane.ALARM]
        if len(kept) < len(batch.events):
            batch.counts["refused_dropped"] = batch.counts.get("refused_dropped", 0) + len(batch.events) - len(kept)
        batch.events = kept
        return kept

    async def drain(self) -> None:
        """Commit whatever is queued (on an orderly stop, after the device tasks are cancelled)."""
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                await self._commit(self._queue.get_nowait())


def access_directory(config: SiteConfig) -> Directory:
    """Who may open which door (drivers.osdp_door.Directory), from the people in the config:
    residents (their building, their household), staff (``staff.buildings``; empty: all) and
    registered visitors (the buildings and doors of the households they look after)."""
    building = {h.id: h.building for h in config.households}
    entries: list[tuple[str, Holder]] = []
    for r in config.residents:
        holder = Holder(r.id, "resident", frozenset({building.get(r.household, "")}), frozenset({r.household}))
        entries += [(c, holder) for c in r.credentials]
    for st in config.staff:
        staff = Holder(st.id, "staff", frozenset(st.buildings) if st.buildings else None)
        entries += [(c, staff) for c in st.credentials]
    for v in config.visitors:
        visitor = Holder(
            v.id, "visitor", frozenset(building[h] for h in v.households if h in building), frozenset(v.households)
        )
        entries += [(c, visitor) for c in v.credentials]
    return Directory.of(entries)


def _event_text(event: object) -> str:
    """A libosdp event dict as short text for ``Event.raw`` (bytes in hex)."""
    if not isinstance(event, dict):
        return repr(event)[:200]
    return " ".join(f"{k}={v.hex() if isinstance(v, bytes | bytearray) else v}" for k, v in event.items())[:400]
