"""Per-resident thresholds: a resident's own value, under a name a rule declares as
``resident_threshold``, wins over the risk tier's; unknown names fail at config load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_rules import Context, DeviceInfo, Engine, ResidentInfo, parse_rule_file
from edge_rules.rules import effective_duration, resident_thresholds
from gateway.errors import ConfigError
from gateway.models import Family, Location
from gateway.site.config import parse_config
from tests.edge_rules.helpers import BOTH, WANG, Feed, at

H, M = 3600.0, 60.0


def _rule(rule_id: str) -> Any:
    rule = BOTH.get(rule_id)
    assert rule is not None
    return rule


def _resident(tier: str = "medium", **own: float) -> ResidentInfo:
    return ResidentInfo("r1", "王秀英", lives_alone=True, risk_tier=tier, thresholds=tuple(own.items()))  # type: ignore[arg-type]


def test_the_packs_declare_these_names() -> None:
    declared = {name: [r.id for r in rules] for name, rules in resident_thresholds(BOTH.rules).items()}
    assert declared == {
        "fall_recovery": ["fall_no_recovery", "fall_recovered"],
        "no_activity": ["no_activity"],
        "door_not_opened_24h": ["door_not_opened_24h"],
        "door_not_opened_48h": ["door_not_opened_48h"],
        "night_wandering": ["night_wandering"],
        "bathroom_stay": ["bathroom_stay"],
    }


def test_own_value_wins_over_the_tier_and_says_where_it_comes_from() -> None:
    no_activity = _rule("no_activity")
    assert effective_duration(no_activity, [_resident("high")]) == (3 * H, "risk tier high")
    assert effective_duration(no_activity, [_resident("high", no_activity=5 * H)]) == (5 * H, "resident r1")
    assert effective_duration(no_activity, []) == (6 * H, "rule")
    # a name the rule does not declare changes nothing
    assert effective_duration(no_activity, [_resident("high", bathroom_stay=20 * M)]) == (3 * H, "risk tier high")
    # one name moves both fall rules
    for rule_id in ("fall_no_recovery", "fall_recovered"):
        assert effective_duration(_rule(rule_id), [_resident(fall_recovery=45)]) == (45, "resident r1")
    # door_not_opened_24h has no tier thresholds: the rule's own duration, or the resident's
    assert effective_duration(_rule("door_not_opened_24h"), [_resident()]) == (24 * H, "rule")


def test_several_residents_the_shortest_counts() -> None:
    rule = _rule("bathroom_stay")  # high 30m, medium 45m, low 60m
    mum = ResidentInfo("r1", lives_alone=True, risk_tier="low", thresholds=(("bathroom_stay", 50 * M),))
    dad = ResidentInfo("r2", lives_alone=True, risk_tier="medium")
    assert effective_duration(rule, [mum, dad]) == (45 * M, "risk tier medium")
    dad_own = ResidentInfo("r2", lives_alone=True, risk_tier="medium", thresholds=(("bathroom_stay", 40 * M),))
    assert effective_duration(rule, [mum, dad_own]) == (40 * M, "resident r2")


def _engine(resident: ResidentInfo) -> Engine:
    devices = [
        DeviceInfo(
            f"3-2-502-{name}",
            family,
            household="3-2-502",
            building="3",
            location=Location("3", "2", "502", room),
            residents=(resident,),
        )
        for name, family, room in (("door", Family.DOOR, "入户门"), ("bath", Family.FALL, "卫生间"))
    ]
    return Engine(BOTH, None, Context(devices))


def _fall_escalation_at(resident: ResidentInfo) -> float:
    e = _engine(resident)
    feed = Feed()
    e.feed(feed("3-2-502-bath", "fall_detected", at("03:12")))
    out = e.advance(at("03:20"))
    (escalation,) = [d for d in out if d.rule == "fall_no_recovery"]
    return escalation.at


def test_the_engine_uses_the_residents_value() -> None:
    assert _fall_escalation_at(WANG) == at("03:12", seconds=60)
    own = ResidentInfo("r-502", "王秀英", lives_alone=True, risk_tier="medium", thresholds=(("fall_recovery", 45.0),))
    assert _fall_escalation_at(own) == at("03:12", seconds=45)


def test_bathroom_message_names_the_residents_duration() -> None:
    own = ResidentInfo("r-502", "王秀英", lives_alone=True, risk_tier="medium", thresholds=(("bathroom_stay", 20 * M),))
    e = _engine(own)
    e.feed(Feed()("3-2-502-bath", "residence", at("10:00"), present=True))
    (d,) = [d for d in e.advance(at("11:00")) if d.rule == "bathroom_stay"]
    assert d.at == at("10:20")
    assert "已超过20分钟" in d.message_zh


def test_resident_threshold_only_on_rules_with_a_wait() -> None:
    rule = {
        "id": "x",
        "type": "match",
        "severity": 2,
        "when": {"kind": "sos_pressed"},
        "resident_threshold": "x",
        "message": {"zh": "z", "en": "e"},
    }
    with pytest.raises(ConfigError) as info:
        parse_rule_file({"rules": [rule]}, "site-rules.toml")
    (problem,) = info.value.problems
    assert (problem.file, problem.path) == ("site-rules.toml", "rules[0].resident_threshold")
    assert "absence, held or sequence" in problem.expected


def _site(thresholds: dict[str, Any]) -> dict[str, Any]:
    return {
        "gateway": {"id": "t"},
        "buildings": [{"id": "1"}],
        "households": [{"id": "1-1-101", "building": "1"}],
        "residents": [
            {"id": "r0", "name": "李建国", "household": "1-1-101"},
            {"id": "r1", "name": "王秀英", "household": "1-1-101", "lives_alone": True, "thresholds": thresholds},
        ],
    }


def test_config_accepts_declared_names() -> None:
    config = parse_config(_site({"no_activity": "5h", "fall_recovery": "45s", "night_wandering": "25m"}), "site.toml")
    assert config.residents[1].thresholds == {"no_activity": 5 * H, "fall_recovery": 45.0, "night_wandering": 25 * M}


def test_config_rejects_unknown_names_and_bad_values_with_their_paths() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_site({"bathroom_residence": "30m", "night_wandering": "1m"}), "site.toml")
    problems = {p.path: p for p in info.value.problems}
    unknown = problems["residents['r1'].thresholds.bathroom_residence"]
    assert unknown.file == "site.toml" and unknown.found == "'bathroom_residence'"
    assert unknown.expected.startswith("a threshold the rules declare (bathroom_stay, door_not_opened_24h")
    gap = problems["residents['r1'].thresholds.night_wandering"]
    assert gap.expected == "more than night_wandering's min_gap (2 min)" and gap.found == "1 min"
    with pytest.raises(ConfigError) as info:
        parse_config(_site({"no_activity": "soon"}), "site.toml")
    assert [p.path for p in info.value.problems] == ["residents['r1'].thresholds.no_activity"]


def test_without_the_elder_pack_no_name_is_known() -> None:
    site = _site({"no_activity": "5h"}) | {"rules": {"packs": ["smart_community"]}}
    with pytest.raises(ConfigError) as info:
        parse_config(site, "site.toml")
    (problem,) = info.value.problems
    assert problem.expected == "a threshold the rules declare (none)"


def test_the_alert_path_hands_the_residents_thresholds_to_the_engine() -> None:
    # The runtime's context (gateway/alerts/path.py rule_context) must carry each resident's
    # thresholds: ResidentInfo(..., thresholds=tuple(r.thresholds.items())).
    from gateway.alerts.path import rule_context
    from gateway.site.registry import Registry

    config = parse_config(_site({"no_activity": "5h"}) | {"devices": [_radar()]}, "site.toml")
    (resident,) = [r for r in rule_context(Registry(config)).devices["radar"].residents if r.id == "r1"]
    assert resident.threshold("no_activity") == 5 * H


def _radar() -> dict[str, Any]:
    return {"id": "radar", "family": "presence", "household": "1-1-101", "model": "x", "mqtt": {"format": "native"}}


def test_rules_explain_shows_the_effective_value_and_its_source(tmp_path: Path) -> None:
    from gateway.cli.explain import explain_household
    from gateway.store import Store

    site = _site({"no_activity": "5h"})
    site["residents"][1]["risk_tier"] = "high"
    config = parse_config(site | {"devices": [_radar()]}, "site.toml")
    store = Store(tmp_path / "s.sqlite3")
    try:
        out = explain_household(config, store, BOTH, "1-1-101", at("09:00"))
    finally:
        store.close()
    assert "no_activity  type=absence" in out and "resident_threshold=no_activity" in out
    assert "      household 1-1-101: 5 h — r1 王秀英's own thresholds.no_activity (risk tier high: 3 h)\n" in out
    assert "      household 1-1-101: 20 min — risk tier high\n" in out  # night_wandering: no own value
    assert "      household 1-1-101: 1 min — rule default\n" in out  # fall_recovery: neither
