"""Durability: the SQLite WAL store of events, outputs, alerts, notifications, visits, commands,
console users, test modes and walk tests, device summaries, meta and counters; one ``Store``
composed per aggregate (tables and guarantees: ``base.py``)."""

from gateway.store.alerts import LogRow, OutboxMessage
from gateway.store.commands import Command
from gateway.store.devices import DeviceState
from gateway.store.events import INGEST_KEYS_KEEP, DeadLetter
from gateway.store.history import AlertQuery
from gateway.store.notifications import Escalation, QueuedNotification
from gateway.store.store import Store
from gateway.store.testmode import CommissionRow, SeenRow, TestModeLogRow, TestModeRow, WouldHave
from gateway.store.users import ApiToken, SessionRow, UserRow
from gateway.store.visits import VisitRow

__all__ = [
    "INGEST_KEYS_KEEP",
    "AlertQuery",
    "ApiToken",
    "Command",
    "CommissionRow",
    "DeadLetter",
    "DeviceState",
    "Escalation",
    "LogRow",
    "OutboxMessage",
    "QueuedNotification",
    "SeenRow",
    "SessionRow",
    "Store",
    "TestModeLogRow",
    "TestModeRow",
    "UserRow",
    "VisitRow",
    "WouldHave",
]
