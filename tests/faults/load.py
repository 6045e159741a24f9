"""Load for the fault tests: a QoS 1 publisher in a thread, every message with a unique id, that
remembers which ids the broker acknowledged (PUBACK) — the ids the gateway then owes."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.faults.site import FaultSite, heartbeat, sos


@dataclass(frozen=True, slots=True)
class Sent:
    uid: str
    device: str
    alarm: bool
    info: mqtt.MQTTMessageInfo


class Load:
    """Telemetry at ``rate`` messages a second over ``telemetry`` devices, and one alarm per
    device of ``alarms`` spread evenly over ``seconds``."""

    def __init__(
        self,
        site: FaultSite,
        host: str,
        port: int,
        *,
        rate: float,
        telemetry: list[str],
        alarms: list[str],
        seconds: float,
    ) -> None:
        self.site = site
        self.rate, self.telemetry, self.alarms, self.seconds = rate, telemetry, alarms, seconds
        self.sent: list[Sent] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"faults-load-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)  # while the broker is away paho keeps them all
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect(host, port, keepalive=5)
        self.client.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        n = 0
        alarms = list(self.alarms)
        while not self._stop.is_set():
            elapsed = time.monotonic() - start
            if elapsed >= self.seconds:
                break
            while alarms and elapsed >= (len(self.alarms) - len(alarms) + 0.5) * self.seconds / len(self.alarms):
                self._send(alarms.pop(0), alarm=True)
            while n < elapsed * self.rate:
                self._send(self.telemetry[n % len(self.telemetry)], alarm=False)
                n += 1
            time.sleep(0.005)

    def _send(self, device: str, *, alarm: bool) -> None:
        uid = uuid.uuid4().hex[:12]
        info = self.client.publish(self.site.topic(device), sos(uid) if alarm else heartbeat(uid), qos=1)
        self.sent.append(Sent(uid, device, alarm, info))

    def stop(self, settle: float = 10.0) -> None:
        """Stop publishing; give messages in flight ``settle`` seconds to be acknowledged."""
        self._stop.set()
        self._thread.join()
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline and not all(_acked(s.info) for s in self.sent):
            time.sleep(0.05)
        self.client.disconnect()
        self.client.loop_stop()

    def acked(self, *, alarm: bool) -> list[Sent]:
        return [s for s in self.sent if s.alarm is alarm and _acked(s.info)]


def _acked(info: mqtt.MQTTMessageInfo) -> bool:
    """The broker's PUBACK came. A message handed to paho while the broker was away is not
    counted (paho may still send it later; the gateway then stores it, owing nothing)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False
