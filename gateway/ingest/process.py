"""MQTT ingest in a process of its own (``[mqtt] ingest_process = true``, ``sensegate run``).

One process does everything by default; at a large site its one core is the limit (docs/
performance.md): receiving, decoding and committing take about half of it, the rules, alerts and
forwarding the other half. With ``ingest_process`` the first half runs beside the second::

    sensegate run ──fork──▶ keeper ──fork──▶ ingest worker
      rules, alerts,          restarts the     paho, decode, commit, PUBACK
      outputs, console        worker           (gateway/ingest/mqtt.py, unchanged)

**The store is the only handoff.** The worker commits events exactly as the in-process ingest
does (PUBACK after the group commit) and tells the gateway that something was stored; the
gateway reads every event after its alert path's cursor from the store, in ``seq`` order, and
handles it as before. A crash of either side loses nothing: what the worker committed is read
by the gateway whenever it next looks (at start it catches up), and what it did not commit the
broker still holds.

**Forked early.** The keeper is forked in ``sensegate run`` right after the config and the
registry are built: no thread, event loop or database connection exists yet, and both children
share the config's memory with the gateway (copy on write, the heap frozen first). The keeper
does nothing but fork a worker, wait for it, and fork another with capped back-off if it
ends; it waits for the gateway's word (its store lock held, its alert path caught up) before
the first.

**Messages, worker → gateway**, one a record on a ``SOCK_SEQPACKET`` pair: ``s`` events
stored, ``c`` a command queued, ``r`` an answer in the outbox, ``u``/``d`` the broker
subscribed/lost, ``k`` + JSON the store's disk state (the worker keeps the disk: its reserve,
eviction before every write, refusing telemetry when full; gateway/store/disk.py). A record the
socket cannot take now is sent once it can; repeated wakes are one. **Gateway → worker**: the
alert path's ``replay_from``, in eight bytes of shared memory: the worker evicts no event the
rules have not seen and saved their state past.

**Ends.** The gateway stops the keeper with SIGTERM, the keeper the worker (which stops as the
in-process ingest does: "offline", disconnect), and kills it ``STOP_GRACE`` seconds later if it
has not. If the gateway dies, the kernel tells the keeper (``PR_SET_PDEATHSIG``) and the keeper
the worker; the worker also sees the gateway's end of the link close, and the keeper looks
whether its parent is still the gateway twice a second (the fault suite's long runs left
keepers the signal never reached, and a worker that ignored SIGTERM, its loop idle: cause not
found). If the keeper dies, the gateway stops with an
error, and its service restarts the whole (``Restart=always`` in
config/systemd/sensegate.service).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import mmap
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.store.disk import DiskState

log = logging.getLogger("sensegate.ingest")

STORED, COMMAND, ANSWER, UP, DOWN, DISK = b"s", b"c", b"r", b"u", b"d", b"k"
_GO = b"g"
# Restart back-off of a worker that ended, doubling up to the cap; reset after a good run.
RESTART_FIRST, RESTART_MAX, GOOD_RUN = 1.0, 30.0, 60.0
# How often the keeper looks whether its worker has ended and its gateway is still there.
KEEPER_POLL = 0.5
# A worker told to stop that has not ended this much later is killed (like a crash: what it
# committed is stored, what it did not the broker still holds).
STOP_GRACE = 10.0
_PR_SET_PDEATHSIG = 1

RunAsync = Callable[[Coroutine[Any, Any, int]], int]
# What a worker runs, given its end of the link (runtime.IngestWorker.run).
Work = Callable[["GatewayLink"], Coroutine[Any, Any, int]]


def _die_with_parent(parent: int, sig: signal.Signals) -> None:
    """Have the kernel send ``sig`` once the parent is gone (Linux), and check it has not gone
    already (between the fork and now)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


class IngestProcess:
    """The gateway's side: the keeper's pid, the message socket and the shared cursor."""

    def __init__(self, pid: int, link: socket.socket, go: int, cursor: mmap.mmap) -> None:
        self.pid = pid
        self.link = link
        self._go = go
        self._cursor = cursor
        self._ended: asyncio.Future[int] | None = None

    @classmethod
    def fork(cls, work: Work, run: RunAsync) -> IngestProcess:
        """Fork the keeper. Call before any thread, event loop or store exists in this process."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        go_read, go_write = os.pipe()
        cursor = mmap.mmap(-1, 8)
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the keeper: never returns
            code = 1
            try:
                ours.close()
                os.close(go_write)
                code = _keeper(work, GatewayLink(theirs, cursor), go_read, parent, run)
            except BaseException:
                log.exception("ingest keeper failed")
            finally:
                logging.shutdown()
                os._exit(code)
        theirs.close()
        os.close(go_read)
        ours.setblocking(False)
        return cls(pid, ours, go_write, cursor)

    def start(self) -> None:
        """Let the keeper fork the first worker (the gateway holds the store lock now)."""
        os.write(self._go, _GO)

    def publish_cursor(self, seq: int) -> None:
        struct.pack_into("q", self._cursor, 0, seq)

    def listen(self, loop: asyncio.AbstractEventLoop, on_message: Callable[[bytes], None]) -> None:
        """Call ``on_message`` for each record the worker sends, on ``loop``."""

        def readable() -> None:
            while True:
                try:
                    record = self.link.recv(65536)
                except (BlockingIOError, InterruptedError):
                    return
                if not record:  # keeper and worker both gone: ``ended`` says so
                    loop.remove_reader(self.link.fileno())
                    return
                on_message(record)

        loop.add_reader(self.link.fileno(), readable)

    async def ended(self) -> int:
        """Wait until the keeper has ended; its wait status."""
        if self._ended is None:
            self._ended = asyncio.ensure_future(asyncio.to_thread(self._reap))
        return await asyncio.shield(self._ended)

    def _reap(self) -> int:
        return os.waitpid(self.pid, 0)[1]

    async def stop(self, grace: float) -> None:
        """Stop keeper and worker (the worker says "offline" and disconnects), killing them after
        ``grace`` seconds."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.ended(), grace)
        except TimeoutError:
            log.warning("ingest process did not stop within %.0f s: killing it", grace)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            await self.ended()
        with contextlib.suppress(OSError):
            asyncio.get_running_loop().remove_reader(self.link.fileno())
        self.link.close()
        os.close(self._go)


def _keeper(
    work: Work,
    link: GatewayLink,
    go: int,
    parent: int,
    run: RunAsync,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> int:
    """Fork a worker, wait for it, fork another if it ends; until SIGTERM."""
    stopping = False
    worker = 0

    def terminate(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if worker:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGTERM)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the gateway stops us
    _die_with_parent(parent, signal.SIGTERM)
    if os.read(go, 1) != _GO:  # the gateway ended before starting us
        return 0
    keeper = os.getpid()
    backoff = RESTART_FIRST
    while not stopping:
        started = monotonic()
        worker = os.fork()
        if worker == 0:
            code = 1
            try:
                os.close(go)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until the worker's loop takes it
                _die_with_parent(keeper, signal.SIGTERM)
                code = run(work(link))
            except BaseException:
                log.exception("ingest process failed")
            finally:
                logging.shutdown()
                os._exit(code)
        status = _wait(worker, lambda: stopping or os.getppid() != parent, sleep, monotonic)
        worker = 0
        if stopping or os.getppid() != parent:  # asked to stop, or the gateway is gone
            break
        if monotonic() - started > GOOD_RUN:
            backoff = RESTART_FIRST
        log.error("ingest process ended (%s); starting another in %.0f s", _ending(status), backoff)
        sleep(backoff)
        backoff = min(backoff * 2, RESTART_MAX)
    return 0


def _wait(
    worker: int, ending: Callable[[], bool], sleep: Callable[[float], None], monotonic: Callable[[], float]
) -> int:
    """Wait for the worker to end; its wait status. Once ``ending`` (asked to stop, or the gateway
    is gone: the fault suite's long runs left keepers whose parent-death signal never came), the
    worker is told to stop, and killed ``STOP_GRACE`` seconds later if it has not (a worker was
    seen idle, ignoring SIGTERM): like a crash, that loses nothing committed."""
    told: float | None = None
    killed = False
    while True:
        pid, status = os.waitpid(worker, os.WNOHANG)
        if pid:
            return status
        if told is None and ending():
            told = monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGTERM)
        elif told is not None and not killed and monotonic() - told > STOP_GRACE:
            log.error("ingest process %d did not stop within %.0f s: killing it", worker, STOP_GRACE)
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
            killed = True
        sleep(KEEPER_POLL)


def _ending(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class GatewayLink:
    """The worker's end: records to the gateway, and the gateway's cursor."""

    def __init__(self, link: socket.socket, cursor: mmap.mmap) -> None:
        self.link = link
        self.cursor = cursor
        self._unsent: list[bytes] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gone = False

    def attach(self, loop: asyncio.AbstractEventLoop, on_gone: Callable[[], None]) -> None:
        """Send on ``loop``; call ``on_gone`` once the gateway's end of the link is closed (the
        gateway died). The gateway sends nothing on it: the link turns readable only then. The
        kernel's parent-death signal says the same through the keeper; this does not depend on
        the keeper."""
        self._loop = loop
        self.link.setblocking(False)

        def readable() -> None:
            try:
                if self.link.recv(1):
                    return
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
            loop.remove_reader(self.link.fileno())
            self._gone = True
            on_gone()

        loop.add_reader(self.link.fileno(), readable)

    def processed_seq(self) -> int:
        """The gateway's alert path's ``replay_from`` (read from the store's thread)."""
        return int(struct.unpack_from("q", self.cursor, 0)[0])

    def send(self, record: bytes) -> None:
        """Send ``record`` now, or once the socket takes it; a wake already waiting is enough."""
        if record in (STORED, COMMAND, ANSWER) and record in self._unsent:
            return
        self._unsent.append(record)
        self._flush()

    def disk(self, state: DiskState) -> None:
        self.send(DISK + json.dumps(state.to_dict()).encode())

    def _flush(self) -> None:
        while self._unsent:
            try:
                self.link.send(self._unsent[0])
            except (BlockingIOError, InterruptedError):
                if self._loop is not None:
                    self._loop.add_writer(self.link.fileno(), self._flush)
                return
            except OSError as exc:  # the gateway is gone: we are about to stop
                if not self._gone:
                    log.warning("cannot tell the gateway (%s): it is gone", exc)
                    self._gone = True
                self._unsent.clear()
                return
            self._unsent.pop(0)
        if self._loop is not None:
            self._loop.remove_writer(self.link.fileno())


def disk_state(record: bytes) -> DiskState:
    """The disk state a ``k`` record carries."""
    return DiskState.from_dict(json.loads(record[len(DISK) :]))
