"""How decode-record.jsonl was made: what ``Registry.decode`` made of bench/compare.py's traffic,
of broken variants of it and of the zigbee2mqtt golden payloads, with the code of commit d7d7f0c
(before issue 14's faster decoding), so that tests/gateway/test_registry.py can hold the decoder
to it.

    git archive d7d7f0c | tar -x -C /tmp/sg-d7d7f0c
    PYTHONPATH=/tmp/sg-d7d7f0c python tests/gateway/testdata/make_decode_record.py \\
        tests/gateway/testdata/decode-record.jsonl

The first line is the site (compare.py's ``bench_site`` at 20 households, plus one device per
zigbee2mqtt model for the golden payloads); each further line one message: its topic, its payload
(text, or ``payload_hex`` when it is not UTF-8) and what it decoded to (every event's
``to_dict()``, without ``raw`` where that is the payload as text; or the error's type, reason and
message). It is the record, not a test: it needs
the old code on its path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
sys.path.append(str(ROOT))  # after the old code: only bench/ and tests/ come from here

from bench.compare import Z2MTraffic, bench_site  # noqa: E402
from drivers import zigbee2mqtt  # noqa: E402
from gateway.errors import PayloadError  # noqa: E402
from gateway.site.config import parse_config  # noqa: E402
from gateway.site.registry import Registry  # noqa: E402

NOW = 1_795_322_400.0  # 2026-11-22T08:00:00+08:00, the receive time of every message
GOLDEN = ROOT / "tests" / "drivers" / "testdata" / "zigbee2mqtt.json"
TRAFFIC = 60  # messages of compare.py's traffic
BROKEN = 4  # of which this many are also sent broken, in every way below

# A field of a state message set to a value the codec must refuse, keep or read as a time.
FIELDS: list[tuple[str, Any]] = [
    ("battery", "x"),
    ("battery", 96.5),
    ("battery", 2**63),
    ("battery", -(2**63)),
    ("battery", 2**64),
    ("battery", 10**30),
    ("battery", True),
    ("linkquality", 2**64),
    ("linkquality", 1.5e300),
    ("smoke", 1),
    ("contact", "open"),
    ("status", "flying"),
    ("action", 7),
    ("last_seen", "2026-11-22T00:00:00.000Z"),
    ("last_seen", "2026-11-22T08:00:00.123456+08:00"),
    ("last_seen", "2026-11-22T08:00:00"),
    ("last_seen", "2026-11-20T00:00:00Z"),
    ("last_seen", "yesterday"),
    ("last_seen", 1_795_322_399_500),
    ("last_seen", 1_795_322_399_500.25),
    ("last_seen", 1e30),
    ("last_seen", 2**70),
]


def broken(payload: bytes) -> list[bytes]:
    body = json.loads(payload)
    out = [
        payload[: len(payload) // 2],
        b"\xef\xbb\xbf" + payload,
        b"\xef\xbb\xbf\xef\xbb\xbf" + payload,
        b" \n" + payload + b"\r\n",
        b"\xff" + payload,
        payload.replace(b"false", b"NaN", 1),
        payload.replace(b":", b":1e400,", 1),
        payload[:-1] + b',"x":' + b"9" * 4400 + b"}",
        payload[:-1] + b',"x":' + b"[" * 1100 + b"]" * 1100 + b"}",
        payload[:-1] + b',"x":"\\ud800"}',
        payload[:-1] + b',"x":"a\x01b"}',
        payload[:-1] + b',"battery":1,"battery":"x"}',
        b"",
        b"null",
        b"[]",
        b'"text"',
    ]
    for name, value in FIELDS:
        out.append(json.dumps({**body, name: value}, separators=(",", ":")).encode())
    return out


def acceptable(table: str) -> bool:
    try:
        zigbee2mqtt.action_table("HS1EB", json.loads(table))
    except PayloadError:
        return False
    return True


def outcome(registry: Registry, topic: str, payload: bytes) -> dict[str, Any]:
    try:
        events = registry.decode(topic, payload, NOW)
    except PayloadError as exc:
        return {"error": [type(exc).__name__, exc.reason, str(exc)]}
    text = payload.decode("utf-8", errors="replace")
    # an event's raw is the payload as text: written out only where it is not
    return {"events": [{k: v for k, v in e.to_dict().items() if k != "raw" or v != text} for e in events]}


def main(out: str) -> None:
    site = bench_site(20, Path("data"))
    household = site["households"][0]["id"]
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    tables = {json.dumps(c.get("actions"), sort_keys=True) for c in golden["state"] + golden["state_errors"]}
    tables = {t for t in tables if acceptable(t)}  # the config refuses a table with no kind
    names: dict[tuple[str, str], str] = {}
    for model, spec in zigbee2mqtt.MODELS.items():
        for i, table in enumerate(sorted(tables)):
            actions = json.loads(table)
            if actions is not None and model != "HS1EB":
                continue
            names[model, table] = f"golden/{model}/{i}"
            mqtt: dict[str, Any] = {"format": "zigbee2mqtt", "friendly_name": names[model, table]}
            if actions is not None:
                mqtt["actions"] = actions
            site["devices"].append(
                {
                    "id": f"golden-{model}-{i}",
                    "family": spec.family.value,
                    "model": model,
                    "household": household,
                    "room": "golden",
                    "mqtt": mqtt,
                }
            )
    config = parse_config(site, "bench-site.toml", Path("/tmp"))
    registry = Registry(config)
    plan = Z2MTraffic(config, 7).plan(TRAFFIC)
    messages = list(zip(plan.topics, plan.payloads, strict=True))
    for topic, payload in messages[:BROKEN]:
        messages += [(topic, p) for p in broken(payload)]
    topic = plan.topics[0]
    messages += [
        (topic.replace("zigbee2mqtt/", "zigbee2mqtt/nowhere/"), plan.payloads[0]),
        (topic + "/availability", b"online"),
        (topic + "/availability", b" offline\n"),
        (topic + "/availability", b'{"state":"online"}'),
        (topic + "/availability", b'{"state":"away"}'),
        (topic + "/availability", b"{}"),
        (topic + "/set", b'{"state":"ON"}'),
        (topic + "/get", b""),
        ("zigbee2mqtt/bridge/state", b'{"state":"online"}'),
        ("somewhere/else", b"{}"),
    ]
    for section in ("state", "state_errors"):
        for case in golden[section]:
            name = names.get((case["model"], json.dumps(case.get("actions"), sort_keys=True)))
            if name is not None:
                messages.append((f"zigbee2mqtt/{name}", case["payload"].encode()))
    for section in ("availability", "availability_errors"):
        for case in golden[section]:
            messages.append(("zigbee2mqtt/golden/HS1SA/0/availability", case["payload"].encode()))
    with open(out, "w", encoding="utf-8") as f:
        f.write(json.dumps({"site": site, "received_at": NOW}, ensure_ascii=False, separators=(",", ":")) + "\n")
        for topic, payload in messages:
            try:
                line: dict[str, Any] = {"topic": topic, "payload": payload.decode("utf-8")}
            except UnicodeDecodeError:
                line = {"topic": topic, "payload_hex": payload.hex()}
            line.update(outcome(registry, topic, payload))
            f.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"{out}: {len(messages)} messages")


if __name__ == "__main__":
    main(sys.argv[1])
