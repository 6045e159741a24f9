"""Every scenario in scenarios/ passes; a wrong expectation fails clearly; CLI exit codes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from edge_rules import load_rules
from gateway.cli.app import main
from gateway.scenario import TRANSITIONS, ScenarioError, load_scenario, run_files, run_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
FILES = sorted(SCENARIOS.glob("*.toml"))


def test_there_are_at_least_twelve_scenarios() -> None:
    assert len(FILES) >= 12


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_passes(path: Path, tmp_path: Path) -> None:
    result = run_scenario(load_scenario(path), tmp_path)
    assert result.passed, result.report()


def test_every_rule_of_both_packs_is_expected_to_fire_somewhere() -> None:
    expected = {e.rule for p in FILES for e in load_scenario(p).expect}
    assert set(PACK_RULES) <= expected, set(PACK_RULES) - expected


def must_not_fire_clauses(files: list[Path]) -> dict[str, list[str]]:
    """Rule id → the scenarios with an ``[[expect_not]]`` that forbids the rule from firing
    (raised, updated, escalated …: every transition but a resolution; a window is allowed)."""
    firing = TRANSITIONS - {"resolved"}
    out: dict[str, list[str]] = {}
    for p in files:
        for e in load_scenario(p).expect_not:
            if e.transitions >= firing:
                out.setdefault(e.rule, []).append(p.stem)
    return out


PACK_RULES = [r.id for r in load_rules("elderly_care", "smart_community").rules]


def test_every_rule_of_both_packs_has_a_must_not_fire_scenario() -> None:
    # The acceptance: each rule is shown to stay quiet in a case that comes close to it
    # (scenarios/README.md lists which). "Must not repeat" clauses (transition = ["updated", …])
    # do not count, nor does expect_none: it names no rule.
    covered = must_not_fire_clauses(FILES)
    assert [r for r in PACK_RULES if r not in covered] == []


def test_the_must_not_fire_coverage_check_can_fail() -> None:
    # gas_no_alarm and wire_modbus_gas are the only must-not-fire cases of gas_alarm; tamper's
    # "once" clause (transition = ["updated", "repeated"]) alone would not do for tamper.
    without = [p for p in FILES if p.stem not in ("gas_no_alarm", "wire_modbus_gas", "tamper")]
    covered = must_not_fire_clauses(without)
    assert [r for r in PACK_RULES if r not in covered] == ["gas_alarm", "tamper"]


def _write(tmp_path: Path, body: str, top: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(
        top
        + """
start = 2026-03-02T00:00:00
end = "day 1 06:00"
[[buildings]]
id = "1"
[[households]]
id = "1-1-101"
building = "1"
[[residents]]
id = "r1"
name = "王秀英"
household = "1-1-101"
lives_alone = true
[[devices]]
id = "sos"
family = "sos"
household = "1-1-101"
[[script]]
at = "03:12"
device = "sos"
kind = "sos_pressed"
"""
        + body,
        encoding="utf-8",
    )
    return path


def test_a_wrong_expectation_fails_with_a_clear_message(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[expect]]\nrule = "sos"\nseverity = 2\nat = "03:12"\n')
    result = run_scenario(load_scenario(path), tmp_path)
    assert not result.passed
    (failure,) = result.failures
    assert failure.startswith("expected sos severity=2")
    assert "found raised sos 级1 at day 1 03:12:00" in failure
    assert "MISMATCH" in result.report() and result.report().endswith("FAIL")


def test_expect_none_and_expect_not_catch_an_alert(tmp_path: Path) -> None:
    none = run_scenario(load_scenario(_write(tmp_path, "", top="expect_none = true\n")), tmp_path)
    assert none.failures == ["expected no alert at all; got raised sos 级1 at day 1 03:12:00"]
    path = _write(tmp_path, '[[expect_not]]\nrule = "sos"\n')
    (failure,) = run_scenario(load_scenario(path), tmp_path).failures
    assert failure.startswith("must not fire: sos")


def test_expect_message_matches_a_part_of_message_zh(tmp_path: Path) -> None:
    good = _write(tmp_path, '[[expect]]\nrule = "sos"\nmessage = "按下紧急呼叫按钮"\n')
    assert run_scenario(load_scenario(good), tmp_path).passed
    wrong = _write(tmp_path, '[[expect]]\nrule = "sos"\nmessage = "已在线"\n')
    (failure,) = run_scenario(load_scenario(wrong), tmp_path).failures
    assert failure.startswith("expected sos message~'已在线'; found raised sos 级1")


def test_a_late_alert_is_outside_its_window(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[expect]]\nrule = "sos"\nat = "03:00"\nwithin = "5m"\n')
    (failure,) = run_scenario(load_scenario(path), tmp_path).failures
    assert "between day 1 03:00:00 and day 1 03:05:00" in failure


def test_bad_files_are_scenario_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"script\[1\]\.device: no device 'nope'"):
        load_scenario(_write(tmp_path, '[[script]]\nat = "04:00"\ndevice = "nope"\nkind = "sos_pressed"\n'))
    with pytest.raises(ScenarioError, match="time '25:00'"):
        load_scenario(_write(tmp_path, '[[expect]]\nrule = "sos"\nat = "25:00"\n'))
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenario(tmp_path / "missing.toml")


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, '[[expect]]\nrule = "sos"\n')
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(good.read_text(encoding="utf-8").replace('rule = "sos"\n', 'rule = "fall"\n'), encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text("start = [", encoding="utf-8")
    assert main(["scenario", "run", str(good)]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["scenario", "run", str(good), str(wrong)]) == 1
    assert main(["scenario", "run", str(good), str(wrong), str(bad)]) == 2
    out = capsys.readouterr().out
    assert "FAIL" in out and "bad scenario file" in out


def test_run_files_prints_every_timeline() -> None:
    out = io.StringIO()
    assert run_files([str(SCENARIOS / "fall_no_recovery.toml")], out) == 0
    text = out.getvalue()
    assert "escalated  fall_no_recovery" in text and "【跌倒报警升级】" in text and "PASS" in text
