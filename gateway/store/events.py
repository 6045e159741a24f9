"""Events and their delivery to outputs: the ``events``, ``pending``, ``dead_letter``,
``recent_ingest``, ``last_payload`` and ``payload_log`` tables. The disk bound and what gives way
to it are in ``disk.py``.

The summaries keyed by device or topic (``device_state``, ``last_payload``) are written behind
the log they summarise, in passes (``_summarise_step``): a row per device or topic updated in
every commit cost a page per message each, the bulk of what a commit wrote. A pass starts after
``SUMMARY_EVENTS`` events or ``SUMMARY_SECONDS`` of received time, and writes one key range of
at most ``_chunk_rows()`` stored rows per transaction, one after each later ``append``, so that no
commit waits for more than a slice of it."""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.models import Event
from gateway.store.base import insert_rows, key_bounds
from gateway.store.commands import _insert_command
from gateway.store.devices import _SEQ_FIRST, _SEQ_LAST, SUMMARY_SEQ, DeviceTail, stored_rows, write_rows
from gateway.store.disk import MIB, DiskStore
from gateway.store.testmode import mark_tests
from gateway.store.users import _insert_nonces

log = logging.getLogger("sensegate.store")

EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    lane TEXT NOT NULL,
    device_id TEXT NOT NULL,
    family TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_time REAL NOT NULL,
    received_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_received ON events(received_at, device_id);
CREATE TABLE IF NOT EXISTS pending (
    output TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (output, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_seq ON pending(seq);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    output TEXT NOT NULL,
    seq INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS recent_ingest (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS last_payload (
    topic TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS payload_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    digest TEXT NOT NULL,
    at REAL NOT NULL
);
"""

_PENDING = "SELECT seq FROM pending WHERE output = ? ORDER BY seq LIMIT ?"
_PENDING_IN_RANGE = "SELECT COUNT(*) FROM pending WHERE output = ? AND seq BETWEEN ? AND ?"
_PENDING_ALL = "INSERT INTO pending(output, seq) SELECT ?, seq FROM events WHERE seq BETWEEN ? AND ?"
_PENDING_SOME = (
    "INSERT INTO pending(output, seq) SELECT ?, seq FROM events WHERE seq BETWEEN ? AND ? "
    "AND family IN (SELECT value FROM json_each(?))"
)
_PENDING_BODIES = (
    "SELECT e.seq, e.body FROM pending p JOIN events e ON e.seq = p.seq WHERE p.output = ? ORDER BY p.seq LIMIT ?"
)
# Events kept in memory after their commit for the forwarder (EventsStore._recent): about two
# seconds at 1,000 msg/s, what an output that keeps up reads back (~0.5 KB each: 2 MB).
RECENT_KEEP = 4096
# Keys of accepted MQTT messages kept for recognising redeliveries (see recent_ingest).
INGEST_KEYS_KEEP = 20_000
# Dead letters kept for inspection; older ones go first when the table is longer.
_DEAD_LETTER_KEEP = 10_000
# Of a payload that could not be decoded, this much is kept for inspection.
_REJECTED_KEEP_BYTES = 4096
# A pass of the summaries (device_state, last_payload) starts once this many events or messages
# are stored after the last one, or this much received time has gone by: the more devices report
# twice between two passes, the fewer pages a report costs (a pass writes each page once).
SUMMARY_EVENTS = 32_768
SUMMARY_SECONDS = 300.0
# A step of ~500 rows takes a few ms (compare.py's site at 1k msg/s); 2,560 took 15-80 ms.
SUMMARY_STEP_ROWS = 512


@dataclass(slots=True)
class _Pass:
    """A pass of the summaries under way: device chunks, topic chunks, then the end."""

    upto: int  # every event up to it is in ``devices``' chunks
    log_upto: int  # payload_log rows up to it are in ``topics``' chunks
    devices: list[list[str]]
    topics: list[list[tuple[str, str, float]]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    output: str
    seq: int
    reason: str
    at: float
    event: Event


class EventsStore(DiskStore):
    def __init__(
        self, path: str | Path, max_bytes: int = 512 * MIB, synchronous: str = "full", reserve_bytes: int | None = None
    ) -> None:
        super().__init__(path, max_bytes, synchronous, reserve_bytes)
        # The events this process committed or read last (``RECENT_KEEP``), by seq, for the
        # forwarder's read-back (``pending_batch``). Events are never changed once stored, so the
        # object is what parsing its body again would give; an event not here (older, or written
        # by another process and not read here) is read from the database. An ingest process
        # that forwards nothing keeps none; the gateway beside it keeps more (``recent_keep``).
        self._recent: OrderedDict[int, Event] = OrderedDict()
        self.recent_keep = RECENT_KEEP
        # The ingest keys stored, read at the first redelivery, up to row ``_ingest_keys_to``
        # (seen_recently); None until then and after keys are forgotten.
        self._ingest_keys: set[str] | None = None
        self._ingest_keys_to = 0
        # The store that keeps the disk writes the summaries (one writer of them per store): its
        # fold of the events not yet in device_state, its pass under way, when the last ended.
        self._tail: DeviceTail | None = None
        self._pass: _Pass | None = None
        self._summarised_at: float | None = None
        self._logged = 0  # payload_log rows added since the last pass
        # The summary writer's fold of payload_log up to row ``_log_to``: the latest row of each
        # topic logged since the last pass began, (topic, digest, at); None until first needed.
        self._log: dict[str, tuple[str, str, float]] | None = None
        self._log_to = 0
        # payload_log read so far, topic -> digest, up to row ``_payloads_to`` (last_payloads).
        self._payloads: dict[str, str] = {}
        self._payloads_to = 0

    # ------------------------------------------------------------------ ingest

    def seen_recently(self, key: str) -> bool:
        """Whether ``key`` is among the ingest keys kept (``recent_ingest``).

        The table has no index on the key: on a random key, one would cost a page of its own
        per message in every commit, for a lookup made only for a redelivery (DUP). The keys are
        read into a set at the first lookup, and the rows added since at each later one (by
        ``id``, which only grows), so the burst of redeliveries after a crash reads the table
        once; forgetting keys drops the set."""
        with self._lock:
            keys = self._ingest_keys
            if keys is None:
                keys = self._ingest_keys = set()
                self._ingest_keys_to = 0
            rows = self._db.execute(
                "SELECT id, key FROM recent_ingest WHERE id > ? ORDER BY id", (self._ingest_keys_to,)
            ).fetchall()
            if rows:
                keys.update(k for _, k in rows)
                self._ingest_keys_to = rows[-1][0]
            return key in keys

    def last_payloads(self, topics: Iterable[str]) -> dict[str, str]:
        """The digest of the last message the MQTT ingest handled on each of ``topics`` (those it
        knows), to recognise a retained message replayed on subscribe (gateway/ingest/retained.py):
        ``last_payload``'s, unless ``payload_log`` has a later one (the log is read once, then
        only its rows added since: the burst of retained messages after a subscribe reads it once)."""
        wanted = sorted(set(topics))
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):  # SQLite limits the number of parameters
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT topic, digest FROM last_payload WHERE topic IN ({marks})", chunk)
                found.update((t, d) for t, d in rows)
            logged = self._payloads
            for row_id, topic, digest in self._db.execute(
                "SELECT id, topic, digest FROM payload_log WHERE id > ? ORDER BY id", (self._payloads_to,)
            ):
                logged[topic] = digest
                self._payloads_to = row_id
            found.update((t, logged[t]) for t in wanted if t in logged)
        return found

    def append(
        self,
        events: Sequence[Event],
        outputs: dict[str, frozenset[str] | None],
        ingest_keys: Iterable[tuple[str, float]] = (),
        counts: dict[str, int] | None = None,
        rejected: Sequence[tuple[str, str, str, bytes]] = (),
        now: float = 0.0,
        commands: Sequence[Mapping[str, Any]] = (),
        payloads: Iterable[tuple[str, str]] = (),
        messages: Sequence[tuple[str, str, str, bool]] = (),
        nonces: Sequence[tuple[str, str, float]] = (),
    ) -> list[Event]:
        """Insert events in one transaction; return them with ``seq`` set.

        ``outputs`` maps each output name to the families it takes (``None`` = all); a
        pending row is made for each output that takes the event. ``counts`` are counter
        increments committed in the same transaction (malformed, duplicates …).
        ``rejected`` are payloads that could not be decoded, ``(topic, reason, message,
        payload)``: kept in the dead-letter table (output ``ingest``) so nothing received is
        lost without a trace. ``commands`` are acknowledgements / resolutions that arrived
        over MQTT, queued for the alert path in the same transaction. ``payloads`` are
        ``(topic, digest)`` of the messages handled, kept per topic as ``last_payload``.
        Events from devices in test mode are marked as such on the way in (``values["test"]``,
        gateway/store/testmode.py).
        ``messages`` go to the outbox (the answer to a command refused at the door);
        ``nonces`` ``(key name, nonce, ts)`` are those of the signed commands queued here.
        """
        stored: list[Event] = []
        self._make_room(events)  # the disk bound, checked on every write (disk.py)
        logged = [(topic, digest, now) for topic, digest in payloads]
        with self._tx() as db:
            stored = _insert_events(db, mark_tests(db, events))
            # Each output's rows with one statement from the rows just written (sqlite3 lets go
            # of the interpreter at every row it steps, and must take it again behind whichever
            # thread computes: ``delivered``).
            for name, families in outputs.items() if stored else ():
                span = (name, stored[0].seq, stored[-1].seq)
                if families is None:
                    db.execute(_PENDING_ALL, span)
                else:
                    db.execute(_PENDING_SOME, (*span, json.dumps(sorted(families))))
            insert_rows(db, "INSERT INTO recent_ingest(key, at)", list(ingest_keys))
            for topic, reason, message, payload in rejected:
                body = {
                    "topic": topic,
                    "message": message,
                    "payload_bytes": len(payload),
                    "payload": payload[:_REJECTED_KEEP_BYTES].decode("utf-8", errors="replace"),
                }
                db.execute(
                    "INSERT INTO dead_letter(output, seq, reason, at, body) VALUES ('ingest', 0, ?, ?, ?)",
                    (reason, now, json.dumps(body, ensure_ascii=False)),
                )
            for command in commands:
                _insert_command(db, command, now)
            if nonces:
                _insert_nonces(db, nonces, now)
            # The outbox is alerts.py's (its _insert_outbox; alerts imports this module through
            # visits, so the insert is written out here).
            db.executemany(
                "INSERT INTO outbox(channel, topic, payload, retain, created_at) VALUES (?, ?, ?, ?, ?)",
                [(c, t, p, int(r), now) for c, t, p, r in messages],
            )
            # Appended, not upserted: last_payload is written behind, in passes (module docstring).
            insert_rows(db, "INSERT INTO payload_log(topic, digest, at)", logged)
            logged_to = int(db.execute("SELECT last_insert_rowid()").fetchone()[0]) if logged else 0
            self._bump(db, {"accepted": len(stored), **(counts or {})})
        if outputs:
            self.remember(stored)
        if self._managed:
            with self._lock:
                tail = self._tail
                if tail is not None and stored and tail.to == stored[0].seq - 1:
                    tail.add(stored)  # else another writer came between: read from the file next time
                self._logged += len(logged)
                if self._log is not None and logged and logged_to - len(logged) == self._log_to:
                    self._log.update((row[0], row) for row in logged)
                    self._log_to = logged_to  # else another writer came between: read from the file
                self._summarise_step(stored[-1].received_at if stored else now)
        return stored

    # ------------------------------------------------------------------ summaries, written behind

    def _device_tail(self, wanted: set[str] | None, row_seqs: dict[str, int]) -> DeviceTail:
        """The fold of the events after the summary (lock held; ``devices.DeviceStateStore``).
        The store that writes the summaries keeps its own, brought up to date from the file when
        another writer came between; any other store folds them from the file for this read:
        those of ``wanted`` devices (all: None) after their rows' ``seq`` (``row_seqs``: of the
        rows just read, the rest are read here)."""
        if self._managed:
            return self._own_tail()
        tail = DeviceTail(_summary_seq(self._db))
        seqs = dict(row_seqs)
        if wanted is None:
            seqs.update(self._db.execute("SELECT device_id, seq FROM device_state WHERE seq > ?", (tail.base,)))
        self._fold_from_file(tail, wanted, seqs)
        return tail

    def _own_tail(self) -> DeviceTail:
        """The summary writer's tail, up to the newest event in the file (lock held)."""
        tail = self._tail
        if tail is None:
            tail = self._tail = DeviceTail(_summary_seq(self._db))
            # A pass cut short (a crash) wrote some rows beyond the mark: fold only what they lack.
            seqs = dict(self._db.execute("SELECT device_id, seq FROM device_state WHERE seq > ?", (tail.base,)))
            self._fold_from_file(tail, None, seqs)
            self._logged = int(self._db.execute("SELECT COUNT(*) FROM payload_log").fetchone()[0])
        else:
            self._fold_from_file(tail, None, {})
        return tail

    def _fold_from_file(self, tail: DeviceTail, wanted: set[str] | None, row_seqs: dict[str, int]) -> None:
        """Fold on the events stored after ``tail.to``: of ``wanted`` devices, after each row's seq."""
        events: list[Event] = []
        last = tail.to
        recent = self._recent
        for seq, device, body in self._db.execute(
            "SELECT seq, device_id, body FROM events WHERE seq > ? ORDER BY seq", (tail.to,)
        ):
            last = seq
            if (wanted is None or device in wanted) and seq > row_seqs.get(device, 0):
                events.append(recent.get(seq) or _event(seq, body))
        tail.add(events)
        tail.to = last

    def _summarise_step(self, now: float) -> None:
        """After a commit (lock held, no transaction open): start a pass when one is due, and
        write one step of the pass under way."""
        if self._summarised_at is None:
            self._summarised_at = now
        if self._pass is None:
            tail = self._own_tail()
            due = tail.to - tail.base + self._logged >= SUMMARY_EVENTS
            if not due and (tail.to > tail.base or self._logged) and now - self._summarised_at >= SUMMARY_SECONDS:
                due = True
            if not due:
                return
            self._pass = self._start_pass(tail)
        self._pass_step(self._pass, now)

    def summarise(self) -> None:
        """Write the summaries up to the newest event now, whole (eviction needs it; tests)."""
        with self._lock:
            self._summarise_all()

    def _summarise_all(self) -> bool:
        """``summarise`` with the lock held (any store may: a row never takes an event twice,
        ``_pass_step``); False if a step failed."""
        if self._pass is not None:  # finish it, then one more for what came since it started
            while self._pass is not None:
                if not self._pass_step(self._pass, self._summarised_at or 0.0):
                    return False
        self._pass = self._start_pass(self._own_tail())
        while self._pass is not None:
            if not self._pass_step(self._pass, self._summarised_at or 0.0):
                return False
        return True

    def _summarised_seq(self) -> int:
        return _summary_seq(self._db)

    def _start_pass(self, tail: DeviceTail) -> _Pass:
        db = self._db
        size = self._chunk_rows()
        devices = _chunks(sorted(tail.rows), key_bounds(db, "device_state", "device_id", size))
        latest = self._own_log()
        log_upto, self._log = self._log_to, {}  # the pass takes what is logged so far
        bounds = key_bounds(db, "last_payload", "topic", size)
        topics = [[latest[t] for t in chunk] for chunk in _chunks(sorted(latest), bounds)]
        self._logged = 0
        return _Pass(tail.to, log_upto, devices, topics)

    def _own_log(self) -> dict[str, tuple[str, str, float]]:
        """The summary writer's fold of payload_log, up to its newest row (lock held): read from
        the file once, then kept by ``append``; rows another writer added are read here."""
        if self._log is None:
            self._log, self._log_to = {}, 0
        log = self._log
        for row_id, topic, digest, at in self._db.execute(
            "SELECT id, topic, digest, at FROM payload_log WHERE id > ? ORDER BY id", (self._log_to,)
        ):
            log[topic] = (topic, digest, at)
            self._log_to = row_id
        return log

    def _fresh(self, tail: DeviceTail, devices: list[str]) -> dict[str, int | None]:
        """Of ``devices``, those whose folded events are all after their stored row (in the step's
        transaction), each with its row's ``online`` (None: NULL or no row). Another store may have
        written a row since this one folded (a forced pass in another process): a row that holds
        some of them gets the rest folded again from the file, one that holds all of them is left
        as it is."""
        chunk = [d for d in devices if d in tail.rows]
        stored = stored_rows(self._db, chunk)
        fresh: dict[str, int | None] = {}
        again = {}
        for d in chunk:
            row_seq, online = stored.get(d, (-1, None))
            if row_seq < tail.rows[d][_SEQ_FIRST]:
                fresh[d] = online
            elif row_seq < tail.rows[d][_SEQ_LAST]:
                again[d] = row_seq
            else:
                tail.written([d])
        if again:
            redo = DeviceTail(min(again.values()))
            self._fold_from_file(redo, set(again), again)
            for d in again:
                if d in redo.rows:
                    tail.rows[d] = redo.rows[d]
                    (tail.flipped.add if d in redo.flipped else tail.flipped.discard)(d)
                    fresh[d] = stored[d][1]
                else:
                    tail.written([d])
        return fresh

    def _chunk_rows(self) -> int:
        """Stored rows a key range of a pass spans: their pages (~40 rows each) are what its
        transaction writes, at most 1/8 of the WAL's size, and at most ``SUMMARY_STEP_ROWS``:
        the next group commit, an alarm's among them, waits for the step."""
        return max(256, min(SUMMARY_STEP_ROWS, self.wal_bytes * 40 // self._page_size // 8))

    def _pass_step(self, p: _Pass, now: float) -> bool:
        """One transaction of a pass (lock held): a key range of devices, else of topics, else
        the end (the mark moved, the log's folded rows deleted). False if it failed (logged; the
        step is tried again after a later commit, nothing lost: the events and log are kept)."""
        tail = self._own_tail()
        # Derived from what is stored: no fsync of its own (docs/store.md, "What is fsync'd").
        tx = self._tx_quiet(durable=False)
        with tx as db:
            if db is not None:
                self._write_step(db, tail, p)
        if tx.failed:
            log.warning("store %s: the device and topic summaries are written again later", self.path)
            return False
        if p.devices:
            tail.written(p.devices.pop(0))
        elif p.topics:
            p.topics.pop(0)
        else:
            tail.base = p.upto
            self._pass = None
            self._summarised_at = now
        return True

    def _write_step(self, db: sqlite3.Connection, tail: DeviceTail, p: _Pass) -> None:
        """What the pass's next step writes, in ``db``'s transaction."""
        if p.devices:
            write_rows(db, tail.rows, tail.flipped, self._fresh(tail, p.devices[0]))
        elif p.topics:
            insert_rows(
                db,
                "INSERT INTO last_payload(topic, digest, at)",
                p.topics[0],
                " ON CONFLICT(topic) DO UPDATE SET digest = excluded.digest, at = excluded.at",
            )
        else:
            db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (SUMMARY_SEQ, str(p.upto)),
            )
            db.execute("DELETE FROM payload_log WHERE id <= ?", (p.log_upto,))

    def remember(self, events: Sequence[Event]) -> None:
        """Keep stored events (with their ``seq``) for the forwarders' read-back: those this
        process committed, or read from another process's commit (the ingest process)."""
        if not events or not self.recent_keep:
            return
        with self._lock:
            recent = self._recent
            for ev in events:
                recent[ev.seq] = ev
            for _ in range(len(recent) - self.recent_keep):
                recent.popitem(last=False)

    def forget_ingest_keys(self, older_than: float, keep: int = INGEST_KEYS_KEEP) -> int:
        """Forget keys older than ``older_than`` and all but the newest ``keep`` (rows: a key
        stored again, rare, is a row again). Without an fsync of its own: a key a power cut
        brings back is forgotten the next time. All but the newest by ``id`` first, a range of
        the table; then only those are read for their time (there is no index on it). Every 10 s
        at 1,000 msg/s the other way round, with its fsync, held the writers' lock 7-11 ms."""
        with self._tx(durable=False) as db:
            self._ingest_keys = None
            extra = db.execute(
                "DELETE FROM recent_ingest WHERE id <= (SELECT MAX(id) FROM recent_ingest) - ?", (keep,)
            ).rowcount
            old = db.execute("DELETE FROM recent_ingest WHERE at < ?", (older_than,)).rowcount
        return int(old + extra)

    # ------------------------------------------------------------------ forwarding

    def pending_batch(self, output: str, limit: int) -> list[Event]:
        """The oldest ``limit`` events still to be delivered to ``output``, in ``seq`` order."""
        with self._lock:
            seqs = [seq for (seq,) in self._db.execute(_PENDING, (output, limit))]
            recent = self._recent
            if all(seq in recent for seq in seqs):  # the usual case: the output keeps up
                return [recent[seq] for seq in seqs]
            rows = self._db.execute(_PENDING_BODIES, (output, limit)).fetchall()
        return [recent.get(seq) or _event(seq, body) for seq, body in rows]

    def pending_count(self, output: str | None = None) -> int:
        with self._lock:
            if output is None:
                row = self._db.execute("SELECT COUNT(*) FROM pending").fetchone()
            else:
                row = self._db.execute("SELECT COUNT(*) FROM pending WHERE output = ?", (output,)).fetchone()
        return int(row[0])

    def delivered(self, output: str, seqs: Sequence[int]) -> None:
        """The output confirmed these events: forget them for that output. Lost in a power cut,
        they are written again: the outputs' writes are idempotent (docs/influxdb.md).

        A forwarder's batch is the output's oldest pending rows, in order, and rows stored later
        come after them, so its rows are the whole range from its first to its last: deleted
        with one statement. (sqlite3 lets go of the interpreter at every row it steps and takes
        it again behind whichever thread computes: a thousand single deletes on the event loop
        waited for it a thousand times, while an alarm waited for the loop.) Anything else is
        deleted row by row."""
        with self._tx(durable=False) as db:
            first, last = (seqs[0], seqs[-1]) if seqs else (0, -1)
            in_range = db.execute(_PENDING_IN_RANGE, (output, first, last)).fetchone()[0]
            if in_range == len(seqs) and all(a < b for a, b in itertools.pairwise(seqs)):
                db.execute("DELETE FROM pending WHERE output = ? AND seq BETWEEN ? AND ?", (output, first, last))
            else:
                db.executemany("DELETE FROM pending WHERE output = ? AND seq = ?", [(output, s) for s in seqs])
            self._bump(db, {f"forwarded.{output}": len(seqs)})

    def dead_letter(self, output: str, events: Sequence[Event], reason: str, at: float) -> None:
        with self._tx() as db:
            for ev in events:
                db.execute("DELETE FROM pending WHERE output = ? AND seq = ?", (output, ev.seq))
                db.execute(
                    "INSERT INTO dead_letter(output, seq, reason, at, body) VALUES (?, ?, ?, ?, ?)",
                    (output, ev.seq, reason[:2000], at, json.dumps(ev.to_dict(), ensure_ascii=False)),
                )
            self._bump(db, {f"dead_lettered.{output}": len(events)})
            db.execute(
                "DELETE FROM dead_letter WHERE id <= (SELECT MAX(id) FROM dead_letter) - ?",
                (_DEAD_LETTER_KEEP,),
            )

    def dead_letters(self, output: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Events an output rejected (not the ``ingest`` records: see ``rejected_payloads``)."""
        sql = "SELECT output, seq, reason, at, body FROM dead_letter WHERE output != 'ingest'"
        args: tuple[object, ...] = ()
        if output is not None:
            sql += " AND output = ?"
            args = (output,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [DeadLetter(o, s, r, a, Event.from_dict(json.loads(b))) for o, s, r, a, b in rows]

    def rejected_payloads(self, limit: int = 100) -> list[dict[str, object]]:
        """The most recent payloads the ingest could not decode, newest last."""
        with self._lock:
            rows = self._db.execute(
                "SELECT reason, at, body FROM dead_letter WHERE output = 'ingest' ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [{"reason": r, "at": a, **json.loads(b)} for r, a, b in reversed(rows)]

    # ------------------------------------------------------------------ reading events

    def events_after(self, seq: int, limit: int = 1000) -> list[Event]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        return [_event(s, b) for s, b in rows]

    def event_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def newest_received_at(self) -> float | None:
        """When the newest stored event was received (by this gateway's clock then), if any."""
        with self._lock:
            row = self._db.execute("SELECT received_at FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    def last_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM events").fetchone()
        return int(row[0] or 0)


_INSERT_EVENT = "INSERT INTO events(lane, device_id, family, kind, event_time, received_at, body)"


def _insert_events(db: sqlite3.Connection, events: Sequence[Event]) -> list[Event]:
    """Insert events (their ``seq`` is ignored) in ``db``'s transaction; return them with the
    ``seq`` each got."""
    if not events:
        return []
    insert_rows(
        db,
        _INSERT_EVENT,
        [(ev.lane, ev.device_id, ev.family, ev.kind, ev.event_time, ev.received_at, stored_body(ev)) for ev in events],
    )
    # AUTOINCREMENT gives each row one more than the largest seq ever used, and the transaction
    # holds the write lock: the batch's seqs are consecutive, ending at the last row inserted.
    last = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
    # When the store first accepted an event: a report for a month before it says so (schema.py).
    db.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('store.first_event_at', ?)", (repr(events[0].received_at),)
    )
    return [_with_seq(ev, seq) for seq, ev in enumerate(events, last - len(events) + 1)]


def _insert_event(db: sqlite3.Connection, ev: Event) -> int:
    """Insert one event (its ``seq`` is ignored); return the ``seq`` it got."""
    return _insert_events(db, [ev])[0].seq


def _with_seq(ev: Event, seq: int) -> Event:
    # What dataclasses.replace(ev, seq=seq) makes, without its per-call look at the fields.
    return Event(
        ev.device_id,
        ev.family,
        ev.kind,
        ev.event_time,
        ev.received_at,
        ev.model,
        ev.location,
        ev.values,
        ev.time_source,
        ev.source,
        ev.raw,
        seq,
    )


def stored_body(ev: Event) -> str:
    """The ``body`` column: ``Event.to_dict()`` without ``seq``, as compact UTF-8 JSON.

    orjson writes what ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))`` wrote
    before it (a float's exponent may be spelt ``1e-5`` instead of ``1e-05``: the same number).
    What orjson cannot write as ``json`` did goes through ``json``: a non-finite float (orjson
    would write ``null``; ``json`` writes ``NaN``, which ``_event`` reads back), an integer beyond
    64 bits, a key that is not a string."""
    loc = ev.location
    values = ev.values
    body = {
        "device_id": ev.device_id,
        "family": ev.family,
        "kind": ev.kind,
        "event_time": ev.event_time,
        "received_at": ev.received_at,
        "time_source": ev.time_source,
        "model": ev.model,
        "location": {"building": loc.building, "unit": loc.unit, "household": loc.household, "room": loc.room},
        "values": values if type(values) is dict else dict(values),
        "source": ev.source,
        "raw": ev.raw,
    }
    for v in values.values():
        if type(v) is float and v - v != 0.0:  # NaN or ±inf
            break
    else:
        try:
            return orjson.dumps(body).decode()
        except orjson.JSONEncodeError:
            pass
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _event(seq: int, body: str) -> Event:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:  # NaN or Infinity, written by json (stored_body)
        return Event.from_dict(json.loads(body), seq=seq)
    for v in (data.get("values") or {}).values():
        # orjson reads an integer beyond 64 bits as a float; json keeps it (so did the store).
        if type(v) is float and not -_INT64 < v < _INT64:
            return Event.from_dict(json.loads(body), seq=seq)
    return Event.from_dict(data, seq=seq)


_INT64 = float(2**63)


def _summary_seq(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (SUMMARY_SEQ,)).fetchone()
    return int(row[0]) if row else 0


def _chunks(keys: list[str], bounds: list[str]) -> list[list[str]]:
    """Sorted ``keys`` cut at ``bounds``, empty ranges left out."""
    out: list[list[str]] = []
    start = 0
    for bound in bounds:
        end = bisect.bisect_left(keys, bound, start)
        if end > start:
            out.append(keys[start:end])
        start = end
    if start < len(keys):
        out.append(keys[start:])
    return out
