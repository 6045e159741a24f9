"""The engine's durable state: rows as the store keeps them (``rule_state``, orjson) load and
come back out byte for byte, whatever the engine holds in memory, less what a rule entry's key
says (its rule and subject, and its device where that is the subject).

``testdata/rule_state_d7d7f0c.json`` are the rows the engine of commit d7d7f0c wrote (entries
as dicts in memory) after a morning in the test block: absence timers armed at start and reset
by an event, held states pending and fired, both fall sequences, a count and a correlation
window, open alerts and the clock. Recorded once with that checkout; not to be regenerated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests.edge_rules.helpers import Feed, at, engine

ROWS: list[list[str]] = orjson.loads((Path(__file__).parent / "testdata" / "rule_state_d7d7f0c.json").read_bytes())


def stored(entries: list[tuple[str, dict[str, Any] | None]]) -> list[list[str]]:
    """As ``Store.save_alerts`` writes them."""
    return [[k, orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS).decode()] for k, v in entries if v is not None]


def loaded() -> list[tuple[str, dict[str, Any]]]:
    return [(k, orjson.loads(v)) for k, v in ROWS]


def compact(rows: list[list[str]]) -> list[list[str]]:
    """The d7d7f0c rows as the engine writes them now: a rule entry without ``rule`` and
    ``subject``, and without ``device`` where it is the subject; the rest as it was."""
    out = []
    for key, text in rows:
        value = orjson.loads(text)
        if key.startswith("rule:"):
            rule, subject = value.pop("rule"), value.pop("subject")
            assert key == f"rule:{rule}:{subject}"
            if value["device"] == subject:
                del value["device"]
        out.append([key, orjson.dumps(value).decode()])
    return out


def test_rows_of_the_dict_engine_load_and_export_less_what_their_keys_say() -> None:
    types = {orjson.loads(v).get("type") for _, v in ROWS}
    assert {"absence", "held", "sequence", "count", "correlation"} <= types
    e = engine(state=loaded())
    assert not e.dirty()  # nothing to rewrite: the rows written before stay as they are
    now = compact(ROWS)
    assert stored(e.export()) == now  # byte for byte, field order included
    assert any("device" in orjson.loads(v) for k, v in now if k.startswith("rule:"))  # one not its subject
    assert sum(map(len, map("".join, now))) < 0.75 * sum(map(len, map("".join, ROWS)))
    again = engine(state=[(k, orjson.loads(v)) for k, v in now])
    assert stored(again.export()) == now and not again.dirty()


def test_restored_rows_decide_as_the_engine_that_wrote_them() -> None:
    """A fresh engine restored from the rows and one that lived through the morning agree from
    there on: the fall goes unanswered, the count and the bathroom stay run out."""
    f = Feed()
    lived = engine()
    lived.advance(at("08:00"))
    for ev in [
        f("3-2-502-door", "door_opened", at("08:10")),
        f("3-2-502-bath", "residence", at("08:20"), present=True),
        f("3-u2-door", "door_opened", at("08:30")),
        f("3-2-601-bath", "fall_detected", at("08:42")),
        f("3-u2-reader", "access_denied", at("08:42", seconds=10)),
        f("3-stair-smoke", "smoke_alarm", at("08:42", seconds=20)),
    ]:
        lived.feed(ev)
    lived.advance(at("08:42", seconds=30))
    assert stored(lived.export()) == compact(ROWS)  # what the old one wrote, less what keys say

    restored = engine(state=loaded())
    later = [f("3-u2-reader", "access_denied", at("08:42", seconds=40)), f("3-u2-door", "door_closed", at("08:50"))]
    for e in (lived, restored):
        e.dirty()
    got = [
        [d.summary() for ev in later for d in e.feed(ev)] + [d.summary() for d in e.advance(at("12:00"))]
        for e in (lived, restored)
    ]
    assert got[0] == got[1]
    assert {"fall_no_recovery", "bathroom_stay", "door_held_open"} <= {s[1] for s in got[0]}
    assert stored(restored.export()) == stored(lived.export())
    assert restored.dirty() == lived.dirty()
