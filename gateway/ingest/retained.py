"""Retained MQTT messages: the state a broker keeps per topic and replays on every subscribe.

A retained message is the last message published on its topic with the retain flag; the broker
hands it to every new subscription, so the gateway gets it again on every start and every
reconnect. Two very different things arrive that way:

- a message the gateway has already handled (live, or as an earlier replay): nothing new;
- a message it has never seen: it was published while the gateway was down or disconnected.
  zigbee2mqtt publishes at QoS 0 by default, which the broker does not queue for a
  disconnected client, so the retained copy is all that is left of it — a smoke alarm that
  started during the outage, a door left open.

They are told apart by a digest of the payload: the store keeps, per topic, the digest of the
last message the ingest handled on it (``last_payload``, written in the transaction that stores
its events). A retained message with that digest is a replay and is skipped; any other is new.
Identical bytes are taken for the same message: with zigbee2mqtt's ``last_seen`` enabled every
report differs; without it, two reports with the same state, battery and link quality cannot be
told apart (docs/installer.md says to enable it).

From a new retained message only the *alarm states* are kept (``RETAINED_KINDS``: an alarm and
the clear that ends it, plus the SOS press and the door states) and they are evaluated like
live events, marked ``values["retained"] = True`` (``gateway.models.RETAINED``) so alerts and
their audit trail can say the state was found on reconnect. Telemetry in the same message
(battery, link quality, presence, motion …) is dropped: its time is unknown without
``last_seen`` and a stale presence must not count as activity now; the device's next live
report brings it. No clock is compared: a newer-looking timestamp is no proof (zigbee2mqtt
updates ``last_seen`` on every report) and a wrong clock must never cost an alarm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

from gateway.models import RETAINED, Event, Kind

# The kinds a retained message is evaluated for: states a rule raises or resolves an alert on.
RETAINED_KINDS: frozenset[Kind] = frozenset(
    {
        Kind.SMOKE_ALARM,
        Kind.SMOKE_CLEAR,
        Kind.GAS_ALARM,
        Kind.GAS_CLEAR,
        Kind.WATER_LEAK,
        Kind.WATER_CLEAR,
        Kind.FALL_DETECTED,
        Kind.FALL_SUSPECTED,
        Kind.FALL_CLEARED,
        Kind.SOS_PRESSED,  # a press (e.g. HS1EB ``hold``) published while the gateway was away
        Kind.TAMPER,
        Kind.TAMPER_CLEAR,
        Kind.DOOR_OPENED,
        Kind.DOOR_CLOSED,
    }
)


def payload_digest(payload: bytes) -> str:
    """What ``last_payload`` keeps of a message: enough to recognise the same bytes again."""
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def retained_events(events: Sequence[Event]) -> list[Event]:
    """The alarm states of a new retained message, marked as found on reconnect."""
    return [replace(e, values={**e.values, RETAINED: True}) for e in events if e.kind in RETAINED_KINDS]
