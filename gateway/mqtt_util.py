"""MQTT helpers: paho clients made alike for the site's broker, and what aiomqtt does not
expose: noticing at once that a connection has dropped.

aiomqtt 2.x learns of a lost connection through a private future (``Client._disconnected``).
Nothing public says so while the client sits idle, and a publish in flight keeps waiting for
its PUBACK until its timeout. Both the gateway's outbox publisher and the simulators need to
know at once, so the private attribute is read here, in one place, with a fallback (``None``)
should a later aiomqtt rename it.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.matcher import MQTTMatcher


def connection_lost(client: aiomqtt.Client) -> asyncio.Future[None] | None:
    """The future aiomqtt completes when the connection ends, or ``None`` if it has none."""
    fut = getattr(client, "_disconnected", None)
    return fut if isinstance(fut, asyncio.Future) else None


def reason_lost(fut: asyncio.Future[None]) -> BaseException | None:
    """Why the connection ended. Reading it also stops asyncio from reporting the future's
    exception as "never retrieved" when aiomqtt's ``__aexit__`` skips it."""
    if not fut.done() or fut.cancelled():
        return None
    return fut.exception()


class _Filters(MQTTMatcher):
    """paho's table of per-topic callbacks, which asks nothing while it is empty.

    paho looks up every received message in this table. Its ``iter_match`` builds a recursive
    closure that refers to itself — a reference cycle per message that only the cyclic
    collector frees; at 1,000 msg/s that is ~6 % of the gateway's CPU and, every few seconds, a
    full collection that stops every thread for 0.1 s. The gateway's clients register no
    per-topic callbacks, so the lookup is skipped; with one registered, paho's own runs."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def iter_match(self, topic: str) -> Iterator[Any]:
        if not self._root._children:
            return iter(())
        return super().iter_match(topic)  # type: ignore[no-untyped-call,no-any-return]


# A PUBACK as paho writes one (``_send_command_with_mid``): type, remaining length 2, packet id.
_PUBACK = struct.Struct("!BBH")

# What one read of the broker's socket takes at most.
READ_CHUNK = 64 * 1024
# Packets taken from a chunk in one turn of paho's loop, before it writes again (PUBACKs, pings).
READ_TURN = 256


class _ChunkedSocket:
    """The broker's socket, read a chunk at a time; paho's small reads are served from it.

    ``pending`` is how paho learns of bytes buffered above the socket (it asks an SSL socket the
    same): while there are some, its loop does not wait in ``select`` for the socket."""

    __slots__ = ("_at", "_chunk", "_sock", "reads")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._chunk = b""
        self._at = 0
        self.reads = 0  # of the socket

    def recv(self, bufsize: int) -> bytes:
        chunk, at = self._chunk, self._at
        if at >= len(chunk):
            self.reads += 1
            data: bytes = self._sock.recv(READ_CHUNK)  # BlockingIOError when there is none
            if len(data) <= bufsize:
                return data  # b"": the broker closed the connection
            chunk, at = self._chunk, self._at = data, 0
        end = min(at + bufsize, len(chunk))
        self._at = end
        return chunk[at:end]

    def pending(self) -> int:
        inner = getattr(self._sock, "pending", None)
        return len(self._chunk) - self._at + (inner() if inner is not None else 0)

    def send(self, buffer: bytes | bytearray) -> int:
        return int(self._sock.send(buffer))

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Client(mqtt.Client):
    """paho's client, reading the broker's socket a chunk at a time.

    paho reads a packet with one ``recv`` for its first byte, one for each byte of its length
    and one for the rest: four system calls for each message the gateway receives, and with
    each the thread lets go of the interpreter and must take it again, behind whichever thread
    is computing. Here one ``recv`` takes what the socket holds, and each turn of paho's loop
    reads up to ``READ_TURN`` packets from it instead of one."""

    def _create_socket(self) -> Any:
        return _ChunkedSocket(super()._create_socket())

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        sock = self._sock
        for _ in range(READ_TURN):
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or sock is None or self._sock is not sock:
                break
            if not isinstance(sock, _ChunkedSocket) or not sock.pending():
                break
            rc = self._packet_read()
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            if rc > 0:
                return self._loop_rc_handle(rc)
        return rc

    def ack_many(self, mids: Sequence[int]) -> MQTTErrorCode:
        """``ack(mid, 1)`` for each of ``mids``, in that order, queued as one write: paho queues
        each PUBACK on its own, with a byte to wake its thread and a ``send`` each."""
        if not mids or not self._manual_ack:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        packet = b"".join([_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids])
        return self._packet_queue(mqtt.PUBACK, packet, 0, 0)


def ack_all(client: mqtt.Client, mids: Sequence[int]) -> None:
    """Acknowledge these QoS 1 messages (``manual_ack``), in order: at once on a client made by
    ``paho_client``, one by one on another."""
    if isinstance(client, _Client):
        client.ack_many(mids)
        return
    for mid in mids:
        client.ack(mid, 1)


def paho_client(settings: Any, client_id: str, *, clean_session: bool, manual_ack: bool = False) -> mqtt.Client:
    """A paho-mqtt 2.x client (MQTT 3.1.1) for the site's broker, with its login and TLS.
    ``settings`` is the site config's ``[mqtt]`` table (gateway.site.config.MqttSettings; the
    kernel does not import the site wing)."""
    client = _Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    client._on_message_filtered = _Filters()
    if settings.username:
        client.username_pw_set(settings.username, settings.password.get_secret_value() or None)
    tls = settings.tls
    if tls is not None:
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(tls.insecure)
    return client
