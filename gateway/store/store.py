"""``Store``: one class composed from the per-aggregate parts, sharing one connection, one lock
and one transaction helper (``base.py``); opening it creates every aggregate's tables."""

from __future__ import annotations

from gateway.store.alerts import ALERTS_DDL, AlertsStore
from gateway.store.base import COUNTERS_DDL
from gateway.store.commands import COMMANDS_DDL, CommandsStore
from gateway.store.devices import DEVICE_STATE_DDL, DeviceStateStore
from gateway.store.events import EVENTS_DDL, EventsStore
from gateway.store.history import HISTORY_DDL, HistoryStore
from gateway.store.meta import META_DDL, MetaStore
from gateway.store.notifications import NOTIFICATIONS_DDL, NotificationsStore
from gateway.store.testmode import TESTMODE_DDL, TestModeStore
from gateway.store.users import USERS_DDL, UsersStore
from gateway.store.visits import VISITS_DDL, VisitsStore


class Store(
    EventsStore,
    AlertsStore,
    NotificationsStore,
    VisitsStore,
    CommandsStore,
    UsersStore,
    TestModeStore,
    MetaStore,
    DeviceStateStore,
    HistoryStore,
):
    """The gateway's durable store: ``Store(path, max_bytes, synchronous, reserve_bytes=None)``."""

    _SCHEMA = (
        EVENTS_DDL,
        ALERTS_DDL,
        NOTIFICATIONS_DDL,
        VISITS_DDL,
        COMMANDS_DDL,
        USERS_DDL,
        TESTMODE_DDL,
        META_DDL,
        COUNTERS_DDL,
        DEVICE_STATE_DDL,
        HISTORY_DDL,
    )
