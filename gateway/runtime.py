"""The gateway's runtime: wires store, registry, ingest, alert path, forwarders and the
outbox publisher together from a validated config, and supervises them.

Each long-running part runs in one ``asyncio.TaskGroup`` under ``supervise``: an unexpected
failure is logged and the part restarts with capped back-off; the others keep running.
Shutdown is orderly: stop accepting, give outputs a few seconds to flush, then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TextIO

from drivers.modbus_bus import ClientFactory, pymodbus_client
from drivers.serial_link import Opener, open_serial
from gateway.alerts import AlertPath, Transition, console_line
from gateway.clock import Clock, SystemClock
from gateway.config import InfluxV1Output, InfluxV2Output, SiteConfig, site_rules
from gateway.forwarder import Forwarder
from gateway.ingest import DEDUP_WINDOW, MqttIngest
from gateway.models import Event
from gateway.publisher import OutboxPublisher
from gateway.registry import Registry
from gateway.serial_ingest import SerialIngest
from gateway.sinks import Sink
from gateway.sinks.influx_v1 import InfluxV1Sink
from gateway.sinks.influx_v2 import InfluxV2Sink
from gateway.store import Store
from gateway.visits import VisitTracker

log = logging.getLogger("sensegate.runtime")

HOUSEKEEPING_INTERVAL = 10.0
STATS_INTERVAL = 60.0
SHUTDOWN_FLUSH = 5.0


def build_sink(output: InfluxV1Output | InfluxV2Output, config: SiteConfig) -> Sink:
    if isinstance(output, InfluxV1Output):
        return InfluxV1Sink(
            name=output.name,
            url=output.url,
            database=output.database,
            retention_policy=output.retention_policy,
            username=output.username,
            password=output.password.get_secret_value(),
            timeout=output.timeout,
            gzip=output.gzip,
            create_database=output.create_database,
            gateway_id=config.gateway.id,
            site=config.gateway.site,
        )
    return InfluxV2Sink(
        name=output.name,
        url=output.url,
        org=output.org,
        bucket=output.bucket,
        token=output.token.get_secret_value(),
        timeout=output.timeout,
        gzip=output.gzip,
        gateway_id=config.gateway.id,
        site=config.gateway.site,
    )


async def supervise(name: str, part: Callable[[], Awaitable[None]], clock: Clock, max_backoff: float = 30.0) -> None:
    """Run ``part`` until cancelled; restart it with capped back-off if it fails."""
    backoff = 1.0
    while True:
        started = clock.monotonic()
        try:
            await part()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting in %.0f s", name, backoff)
        if clock.monotonic() - started > 60:
            backoff = 1.0  # it ran fine for a while: this is a new failure, not a crash loop
        await clock.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)


class Gateway:
    def __init__(
        self,
        config: SiteConfig,
        *,
        clock: Clock | None = None,
        sinks: Mapping[str, Sink] | None = None,
        console: TextIO | None = None,
        serial_opener: Opener | None = None,
        modbus_client_factory: ClientFactory | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.console = console if console is not None else (sys.stdout if config.alerts.console else None)
        self.store = Store(config.store_path, int(config.store.max_bytes), config.store.synchronous)
        self.registry = Registry(config)
        self.outputs: dict[str, frozenset[str] | None] = {
            o.name: None if o.families is None else frozenset(f.value for f in o.families) for o in config.outputs
        }
        built = dict(sinks) if sinks is not None else {o.name: build_sink(o, config) for o in config.outputs}
        self.forwarders = [
            Forwarder(
                o.name,
                built[o.name],
                self.store,
                self.clock,
                batch_size=o.batch_size,
                flush_interval=o.flush_interval,
                backoff_initial=o.backoff_initial,
                backoff_max=o.backoff_max,
            )
            for o in config.outputs
        ]
        self.publisher = OutboxPublisher(config, self.store, self.clock)
        rules = site_rules(config)
        self.alerts = AlertPath(
            self.registry,
            self.store,
            self.clock,
            config.topic_prefix,
            rules,
            config.alerts.repeat_window,
            notify=self._on_transition,
        )
        self.visits = VisitTracker(config, self.store, self.clock, self.alerts, rules)
        self._rules_wake = asyncio.Event()
        self.ingest = MqttIngest(config, self.registry, self.store, self.clock, self.outputs, self._on_stored)
        self.serial = SerialIngest(
            config,
            self.registry,
            self.store,
            self.clock,
            self.outputs,
            self._on_stored,
            serial_opener or open_serial,
            modbus_client_factory or pymodbus_client,
        )
        self.ready = asyncio.Event()  # set once connected to the broker

    def _on_transition(self, t: Transition) -> None:
        log.info(
            "alert %s id=%s rule=%s severity=%d device=%s count=%d",
            t.kind,
            t.alert.id,
            t.alert.rule,
            t.alert.severity,
            t.alert.device_id,
            t.alert.count,
        )
        # A repeat folded into an open alert is news for MQTT subscribers, not for a person
        # watching the terminal: that is what dedup is for.
        if self.console is not None and t.kind != "updated":
            print(console_line(t), file=self.console, flush=True)
        self.publisher.wake.set()

    async def _on_stored(self, events: list[Event]) -> None:
        self.alerts.process(events)
        self.visits.process(events)  # visits recorded from these events (and check-ins from the CLI)
        self._rules_wake.set()  # the events may have set an earlier deadline

    async def _rule_timer(self) -> None:
        """Fire rule deadlines (no activity, held open, no recovery …) and visit plans
        (逾期未探访) as they come due."""
        while True:
            self._rules_wake.clear()
            self.alerts.tick()
            self.visits.tick()
            deadlines = [d for d in (self.alerts.engine.next_deadline(), self.visits.next_deadline()) if d is not None]
            deadline = min(deadlines, default=None)
            # Without a deadline, look again now and then: nothing is lost by waking early.
            delay = 3600.0 if deadline is None else max(0.0, deadline - self.clock.now())
            sleeper = asyncio.ensure_future(self.clock.sleep(delay))
            woken = asyncio.ensure_future(self._rules_wake.wait())
            try:
                await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                woken.cancel()

    def stats(self) -> dict[str, Any]:
        return {
            "counters": self.store.counters(),
            "pending": {f.name: self.store.pending_count(f.name) for f in self.forwarders},
            "outbox": len(self.store.outbox_batch("mqtt", 10_000)),
            "store_bytes": self.store.used_bytes(),
        }

    async def _housekeeping(self) -> None:
        last_stats = self.clock.monotonic()
        while True:
            await self.clock.sleep(HOUSEKEEPING_INTERVAL)
            now = self.clock.now()
            self.alerts.checkpoint()
            self.visits.checkpoint()
            await asyncio.to_thread(self.store.forget_ingest_keys, now - DEDUP_WINDOW)
            removed = await asyncio.to_thread(self.store.enforce_bound, self.alerts.cursor)
            if removed["dropped"]:
                log.warning(
                    "store above %d bytes: dropped %d undelivered telemetry events (oldest first)",
                    self.store.max_bytes,
                    removed["dropped"],
                )
            if self.store.over_bound:
                log.warning("store above its bound with only alarm events and alerts left; keeping them")
            if self.clock.monotonic() - last_stats >= STATS_INTERVAL:
                last_stats = self.clock.monotonic()
                stats = await asyncio.to_thread(self.stats)
                log.info("stats %s", " ".join(f"{k}={v}" for k, v in sorted(stats["counters"].items())))

    async def _watch_ready(self) -> None:
        await self.ingest.connected.wait()
        self.ready.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        caught_up = await asyncio.to_thread(self.alerts.catch_up)
        if caught_up:
            log.info("alert path caught up on %d events stored before the last stop", caught_up)
        await asyncio.to_thread(self.visits.catch_up)
        log.info(
            "gateway %s starting: %d devices, outputs=%s, store=%s",
            self.config.gateway.id,
            len(self.registry.devices),
            ",".join(self.outputs) or "none (local store only)",
            self.store.path,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                ingest = tg.create_task(supervise("mqtt ingest", self.ingest.run, self.clock))
                # One supervised task per serial device: a port that fails restarts alone.
                wired = [
                    tg.create_task(supervise(f"serial {d}", functools.partial(self.serial.run_device, d), self.clock))
                    for d in self.serial.links
                ]
                # One per Modbus bus: the detectors on it share the port and are polled in turn.
                wired += [
                    tg.create_task(supervise(f"modbus {b}", functools.partial(self.serial.run_bus, b), self.clock))
                    for b in self.serial.buses
                ]
                others = [tg.create_task(supervise(f"output {f.name}", f.run, self.clock)) for f in self.forwarders]
                others.append(tg.create_task(supervise("alert publisher", self.publisher.run, self.clock)))
                others.append(tg.create_task(supervise("housekeeping", self._housekeeping, self.clock)))
                others.append(tg.create_task(supervise("rule timers", self._rule_timer, self.clock)))
                if wired:
                    others.append(tg.create_task(supervise("serial writer", self.serial.run_writer, self.clock)))
                others.append(tg.create_task(self._watch_ready()))
                await stop.wait()
                log.info("stopping: no longer accepting; flushing outputs for up to %.0f s", SHUTDOWN_FLUSH)
                for task in [ingest, *wired]:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await self.serial.drain()
                await self._final_flush()
                for task in others:
                    task.cancel()
        finally:
            self.alerts.checkpoint()
            self.visits.checkpoint()
            self.store.close()

    async def _final_flush(self) -> None:
        """Let healthy outputs drain what is pending, for a few seconds at most. What is left
        stays on disk and goes out after the next start."""
        deadline = self.clock.monotonic() + SHUTDOWN_FLUSH
        while self.clock.monotonic() < deadline:
            busy = [f for f in self.forwarders if f.healthy and self.store.pending_count(f.name)]
            if not busy and not (self.store.outbox_batch("mqtt", 1) and self.publisher.connected):
                return
            await self.clock.sleep(0.1)
