"""The bare baseline for ``bench/compare.py``: a paho-mqtt 2.x subscriber that takes zigbee2mqtt
messages at QoS 1, parses each with ``json.loads`` and counts it. Nothing else: no store, no
rules, no output. Whatever it cannot keep up with, nothing written in Python on this machine
would.

    python bench/paho_subscriber.py --port 1883 --topic 'zigbee2mqtt/#' --max-seconds 600

It prints ``count <n>`` on stdout every 0.1 s (``compare.py`` reads it) and exits on SIGTERM,
SIGINT or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--topic", default="zigbee2mqtt/#")
    p.add_argument("--max-seconds", type=float, default=600.0, help="exit after this long whatever happens")
    args = p.parse_args(argv)

    count = 0
    undecodable = 0

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal count, undecodable
        try:
            json.loads(message.payload)
        except ValueError:
            undecodable += 1
            return
        count += 1

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-paho-baseline", protocol=mqtt.MQTTv311)
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(args.topic, qos=1)
    client.connect(args.host, args.port, keepalive=60)
    client.loop_start()
    deadline = time.monotonic() + args.max_seconds
    try:
        while not stop.wait(0.1) and time.monotonic() < deadline:
            print(f"count {count} {undecodable}", flush=True)
    finally:
        client.disconnect()
        client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
