"""Rule files: every pack loads and validates; bad files are reported with the field's path."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge_rules import available_packs, load_rules, pack_path, parse_rule_file
from edge_rules.rules import AbsenceRule, MatchRule
from gateway.errors import ConfigError


def test_packs_are_shipped() -> None:
    assert available_packs() == ["elderly_care", "smart_community"]


@pytest.mark.parametrize("name", ["elderly_care", "smart_community"])
def test_every_pack_loads(name: str) -> None:
    rules = load_rules(name)
    assert rules.packs[0].id == name
    assert len(rules) >= 9
    assert len({r.id for r in rules}) == len(rules)
    for rule in rules:
        assert rule.description and rule.message.zh and rule.message.en
    # the file loads by path as well as by name
    assert [r.id for r in load_rules(pack_path(name))] == [r.id for r in rules]


def test_elderly_pack_applies_to_lives_alone_only() -> None:
    for rule in load_rules("elderly_care"):
        assert rule.applies_to.lives_alone is True, rule.id


def test_maintenance_is_low_and_raised_once() -> None:
    rules = load_rules("smart_community")
    for rid in ("device_silent", "device_offline", "battery_low", "sensor_fault"):
        rule = rules.get(rid)
        assert rule is not None and rule.severity == 4 and rule.on_repeat == "ignore"


def test_both_packs_together() -> None:
    rules = load_rules("smart_community", "elderly_care")
    assert rules.settings.timezone == "Asia/Shanghai"
    assert isinstance(rules.get("sos"), MatchRule)
    no_activity = rules.get("no_activity")
    assert isinstance(no_activity, AbsenceRule)
    assert no_activity.duration_for("high") == 3 * 3600
    assert no_activity.duration_for(None) == 6 * 3600


BAD = """
[settings]
timezone = "Mars/Olympus"

[[rules]]
id = "ok"
type = "match"
severity = 2
when = { kind = "smoke_alarm" }
message = { zh = "{place}", en = "{place_en}" }

[[rules]]
id = "typo"
type = "absense"
severity = 2
message = { zh = "", en = "" }

[[rules]]
id = "bad fields"
type = "absence"
severity = 5
duration = "forever"
per = "flat"
when = { kind = "door_open", where = { battery = { lt = "low" } } }
message = { zh = "{place}{nobody}", en = "{place_en}" }
colour = "red"

[[rules]]
id = "thresholds_on_match"
type = "match"
severity = 3
when = { kind = "sos_pressed" }
thresholds = { high = "1h" }
auto_resolve = true
message = { zh = "x", en = "x" }
"""


def test_bad_file_reports_every_problem_with_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_rule_file(tomllib.loads(BAD), "site-rules.toml")
    problems = {p.path: p for p in info.value.problems}
    assert all(p.file == "site-rules.toml" for p in info.value.problems)
    assert "settings.timezone" in problems
    assert "rules[1].type" in problems and "absense" in problems["rules[1].type"].found
    assert "rules[2].id" in problems
    assert "rules[2].severity" in problems
    assert "rules[2].duration" in problems and "45m" in problems["rules[2].duration"].expected
    assert "rules[2].per" in problems
    assert "rules[2].when[0].kind[0]" in problems
    assert "rules[2].when[0].where.battery.lt" in problems
    assert problems["rules[2].colour"].found == "unknown key 'colour'"


def test_semantic_problems_have_paths() -> None:
    text = BAD.split("[[rules]]")
    data = tomllib.loads(
        "[[rules]]"
        + text[1]
        + "[[rules]]"
        + text[4]
        + """
[[rules]]
id = "unknown_placeholder"
type = "count"
severity = 3
when = { kind = "access_denied" }
count = 3
window = "1m"
message = { zh = "{place}{nobody}", en = "{place_en}" }

[[rules]]
id = "gap"
type = "sequence"
severity = 3
first = { kind = "door_opened" }
then = { kind = "door_closed" }
within = "1m"
min_gap = "2m"
message = { zh = "x", en = "x" }

[[rules]]
id = "gap"
type = "absence"
severity = 3
per = "household"
interval_multiple = 3
message = { zh = "x", en = "x" }
"""
    )
    with pytest.raises(ConfigError) as info:
        parse_rule_file(data, "r.toml")
    paths = {p.path for p in info.value.problems}
    assert paths == {
        "rules[1].thresholds",
        "rules[1].auto_resolve",
        "rules[2].message.zh",
        "rules[3].min_gap",
        "rules[4].id",
        "rules[4].interval_multiple",
    }
    assert "r.toml: rules[2].message.zh: expected placeholders among" in str(info.value)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[[rules]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_rules(tmp_path / "nope.toml", broken)
    assert [p.file for p in info.value.problems] == [str(tmp_path / "nope.toml"), str(broken)]


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text(
        '[[rules]]\nid = "sos"\ntype = "match"\nseverity = 1\nwhen = { kind = "sos_pressed" }\n'
        'message = { zh = "x", en = "x" }\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_rules("elderly_care", mine)
    assert info.value.problems[0].path == "rules[0].id"


def test_the_alarm_class_is_exactly_fire_smoke_gas_fall_sos_and_a_forced_door() -> None:
    # docs/alerts.md (the paging policy) lists these; a rule joining or leaving the class is a
    # decision about who may be held back by a cap, so it changes this list on purpose.
    rules = load_rules("elderly_care", "smart_community")
    assert rules.alarm_rules == {
        "sos", "fall", "fall_no_recovery", "fall_suspected",
        "sos_household", "sos_public", "fall_household", "smoke_alarm", "fire_confirmed", "fire_public_area",
        "gas_alarm", "door_forced",
    }  # fmt: skip
    assert all(rules.get(r) is not None and rules.get(r).alarm for r in rules.alarm_rules)  # type: ignore[union-attr]
