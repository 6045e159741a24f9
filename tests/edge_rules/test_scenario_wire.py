"""Wire steps, pages, people and restarts in scenarios (gateway/scenario_wire.py, scenarios/README.md).

A wire step goes through the gateway's own ingest: these tests check that what the codecs and
the ingest do shows in a scenario (a codec change, a malformed payload, a redelivery, a frame
cut anywhere), that the expectations on pages, trails and counters fail clearly, and that a
killed gateway's store is abandoned, not closed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import gateway.scenario as scenario_module
from drivers import zigbee2mqtt
from gateway.models import Kind, Observation
from gateway.scenario import ScenarioError, load_scenario, run_scenario
from gateway.scenario_wire import ModbusStep, MqttStep, OsdpStep, SerialStep
from gateway.store import Store

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
FILES = sorted(SCENARIOS.glob("*.toml"))

SITE = """
start = 2026-03-02T03:00:00
end = "day 1 05:00"
[[buildings]]
id = "3"
units = ["2"]
[[households]]
id = "3-2-502"
building = "3"
unit = "2"
number = "502"
[[residents]]
id = "r-502"
name = "王秀英"
household = "3-2-502"
lives_alone = true
risk_tier = "medium"
[[devices]]
id = "502-sos"
family = "sos"
model = "TS0215A_sos"
household = "3-2-502"
room = "卧室"
report_interval = 86400
mqtt = { format = "zigbee2mqtt", friendly_name = "3号楼/502/紧急按钮" }
[[devices]]
id = "502-radar"
family = "fall"
model = "MR60FDA1"
household = "3-2-502"
room = "卧室"
report_interval = 86400
serial = { port = "/dev/serial/by-id/radar-502", protocol = "mr60fda1" }
[[modbus_buses]]
id = "b3"
port = "/dev/serial/by-id/rs485-b3"
[[devices]]
id = "502-gas"
family = "gas"
model = "GENERIC-GAS"
household = "3-2-502"
room = "厨房"
report_interval = 86400
modbus = { bus = "b3", unit_id = 1, profile = "GENERIC-GAS" }
[[staff]]
id = "s-li"
name = "李值班"
role = "property"
[[channels]]
type = "mqtt"
id = "robot"
[[roster]]
person = "s-li"
[[ladders]]
id = "emergency"
repeat = "once"
tiers = [{ to = ["on_duty"], channels = ["robot"] }]
[[routes]]
severity = [1, 2]
ladder = "emergency"
"""
SOS_TOPIC = "zigbee2mqtt/3号楼/502/紧急按钮"
PRESS = '{"action":"emergency","battery":100,"linkquality":110}'
FALL = "53 59 83 01 00 01 01 32 54 43"  # MR60FDA1 fall detected (Seeed wiki)


def write(tmp_path: Path, body: str, top: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(top + SITE + body, encoding="utf-8")
    return path


def run(tmp_path: Path, body: str, top: str = "") -> list[str]:
    return run_scenario(load_scenario(write(tmp_path, body, top)), tmp_path).failures


def press(at: str, while_down: bool = False, **flags: bool) -> str:
    """An SOS press as zigbee2mqtt publishes it; ``flags``: the message's retain / dup."""
    extra = "".join(f", {k} = {json.dumps(v)}" for k, v in flags.items())
    held = "while_down = true\n" if while_down else ""
    return f'[[script]]\nat = "{at}"\n{held}mqtt = {{ topic = "{SOS_TOPIC}", payload = \'{PRESS}\'{extra} }}\n'


def wire_steps(path: Path) -> set[str]:
    """Which driver families a scenario's wire steps speak."""
    sc = load_scenario(path)
    protocols = {d.id: d.serial.protocol for d in sc.config.devices if d.serial is not None}
    found: set[str] = set()
    for step in sc.steps:
        for s in (step.wire, *step.held):
            if isinstance(s, MqttStep):
                found.add("native" if s.topic.startswith("sensegate/") else s.topic.split("/")[0])
            elif isinstance(s, SerialStep):
                found.add(protocols[s.device])
            elif isinstance(s, ModbusStep):
                found.add("modbus")
            elif isinstance(s, OsdpStep):
                found.add("osdp")
    return found


def test_every_driver_family_has_a_wire_scenario() -> None:
    families = set().union(*(wire_steps(p) for p in FILES))
    assert {"zigbee2mqtt", "rtl_433", "native", "mr60fda1", "mr60fda2", "modbus", "osdp"} <= families


def test_a_wire_scenario_sees_what_the_codec_says_and_an_event_scenario_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 10 as it was: a codec that reads the FDS315's low_posture as the fall cleared.
    real = zigbee2mqtt.decode_state

    def old_codec(payload: bytes, model: str, actions: Any = None) -> list[Observation]:
        found = real(payload, model, actions)
        if model == "FDS315" and b"low_posture" in payload:
            return [Observation(Kind.FALL_CLEARED)]
        return found

    monkeypatch.setattr(zigbee2mqtt, "decode_state", old_codec)
    wire = run_scenario(load_scenario(SCENARIOS / "wire_fds315_low_posture.toml"), tmp_path)
    assert any(f.startswith("must not fire: fall_recovered") for f in wire.failures), wire.report()
    events = run_scenario(load_scenario(SCENARIOS / "fall_low_posture.toml"), tmp_path)
    assert events.passed  # its steps are already decoded: it cannot see the codec


def test_a_malformed_wire_step_is_counted_skipped_and_must_be_expected(tmp_path: Path) -> None:
    bad = f'[[script]]\nat = "03:10"\nmqtt = {{ topic = "{SOS_TOPIC}", payload = \'{{"action":"emer\' }}\n'
    (failure,) = run(tmp_path, bad)
    assert failure == "expected 0 malformed wire messages; found 1 {'malformed.bad_json': 1}"
    assert run(tmp_path, bad + '[[expect_not]]\nrule = "sos"\n', top="expect_malformed = 1\n") == []


@pytest.mark.parametrize("cut", ["whole", "halves", "bytes"])
def test_radar_bytes_cut_anywhere_make_the_same_fall(tmp_path: Path, cut: str) -> None:
    data = bytes.fromhex(FALL)
    parts = {"whole": [data], "halves": [data[:3], data[3:]], "bytes": [bytes([b]) for b in data]}[cut]
    steps = "".join(
        f'[[script]]\nat = "03:12"\nserial = {{ device = "502-radar", hex = "{p.hex(" ")}" }}\n' for p in parts
    )
    expect = '[[expect]]\nrule = "fall"\ntransition = "raised"\nat = "03:12"\nwithin = "1s"\n'
    counters = '[expect_counters]\n"serial.502-radar.frames" = 1\n"serial.502-radar.bytes" = 10\n'
    assert run(tmp_path, steps + expect + counters) == []


def test_a_redelivered_message_is_recognised_as_a_duplicate(tmp_path: Path) -> None:
    once = '[[expect]]\nrule = "sos"\ncount = 1\n[[expect_not]]\nrule = "sos"\ntransition = "updated"\n'
    body = press("03:10") + press("03:10:05", dup=True) + once
    assert run(tmp_path, body + '[expect_counters]\n"duplicates" = 1\n') == []
    # the same press again without DUP is a second press
    (failure,) = run(tmp_path, press("03:10") + press("03:10:05") + once)
    assert failure.startswith("must not fire: sos updated")


def test_modbus_registers_persist_between_polls(tmp_path: Path) -> None:
    body = """
[[script]]
at = "03:10"
modbus = { device = "502-gas", registers = { 0x6000 = 0x8000, 0x6001 = 2, 0x6006 = 1 } }
[[script]]
at = "03:20"
modbus = { device = "502-gas", registers = { 0x6000 = 0x8002 } }
[[expect]]
rule = "gas_alarm"
at = "03:20"
within = "1s"
"""
    assert run(tmp_path, body) == []
    # without the status register the detector is warming up (0): no alarm state at all
    warming = body.replace(", 0x6006 = 1", "")
    (failure,) = run(tmp_path, warming)
    assert failure.startswith("expected gas_alarm between")


def test_pages_trails_and_acks_fail_with_what_happened(tmp_path: Path) -> None:
    body = press("03:10") + '[[script]]\nat = "03:11"\nack = { alert_rule = "sos", by = "s-li" }\n'
    good = '[[expect_page]]\nrule = "sos"\nto = "s-li"\ntier = 1\nkind = "raised"\nat = "03:10"\nwithin = "1s"\n'
    good += '[[expect_trail]]\nrule = "sos"\naction = "acknowledged"\nby = "s-li"\nat = "03:11"\nwithin = "1s"\n'
    assert run(tmp_path, body + good) == []
    (failure,) = run(tmp_path, body + '[[expect_page]]\nto = "s-sun"\n')
    assert failure.startswith("expected page to=s-sun; found 0: nothing like it")
    (failure,) = run(tmp_path, body + '[[expect_page]]\nto = "s-li"\nat = "04:00"\n')
    assert "found 0: page rule=sos to=s-li tier=1 channel=robot kind=raised" in failure
    (failure,) = run(tmp_path, '[[script]]\nat = "03:11"\nresolve = { alert_rule = "sos", by = "s-li" }\n')
    assert failure == "resolve at day 1 03:11:00: 0 open sos alerts match, expected one"


def test_only_names_everything_a_household_may_raise(tmp_path: Path) -> None:
    body = press("03:10") + f'[[script]]\nat = "03:20"\nserial = {{ device = "502-radar", hex = "{FALL}" }}\n'
    body += '[[expect]]\nrule = "sos"\nhousehold = "3-2-502"\nonly = true\n'
    failures = run(tmp_path, body)
    assert "nothing else for 3-2-502; got raised fall 级2 at day 1 03:20:00" in failures


def test_down_time_is_for_held_mqtt_messages_only(tmp_path: Path) -> None:
    kill = '[[script]]\nat = "03:05"\nrestart = "kill"\ndown = "10m"\n'
    with pytest.raises(ScenarioError, match="03:10:00 falls while the gateway is down"):
        load_scenario(write(tmp_path, kill + press("03:10")))
    with pytest.raises(ScenarioError, match="outside every restart's down time"):
        load_scenario(write(tmp_path, kill + press("03:30", while_down=True)))
    serial = f'[[script]]\nat = "03:10"\nwhile_down = true\nserial = {{ device = "502-radar", hex = "{FALL}" }}\n'
    with pytest.raises(ScenarioError, match="only the broker keeps messages"):
        load_scenario(write(tmp_path, kill + serial))
    (step,) = [s for s in load_scenario(write(tmp_path, kill + press("03:10", while_down=True))).steps if s.restart]
    assert step.restart == "kill" and len(step.held) == 1


def test_a_killed_store_is_abandoned_not_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[int] = []

    class Watched(Store):
        def close(self) -> None:
            closed.append(id(self))
            super().close()

    opened: list[int] = []

    def store(*args: Any, **kwargs: Any) -> Store:
        s = Watched(*args, **kwargs)
        opened.append(id(s))
        return s

    monkeypatch.setattr(scenario_module, "Store", store)
    body = press("03:10") + '[[script]]\nat = "03:10:02"\nrestart = "kill"\ndown = "1m"\n'
    body += '[[expect]]\nrule = "sos"\ntransition = "raised"\n[[expect_page]]\nrule = "sos"\ncount = 1\n'
    assert run(tmp_path, body) == []
    assert closed == [opened[1], opened[0]]  # the killed store only when the run is over


def test_wire_steps_are_checked_against_the_site(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no serial device 'nope'"):
        load_scenario(write(tmp_path, '[[script]]\nat = "03:10"\nserial = { device = "nope", hex = "00" }\n'))
    with pytest.raises(ScenarioError, match="0x7000 is not read by profile GENERIC-GAS"):
        load_scenario(
            write(tmp_path, '[[script]]\nat = "03:10"\nmodbus = { device = "502-gas", registers = { 0x7000 = 1 } }\n')
        )
    with pytest.raises(ScenarioError, match="expected bytes in hex"):
        load_scenario(write(tmp_path, '[[script]]\nat = "03:10"\nserial = { device = "502-radar", hex = "5359zz" }\n'))
