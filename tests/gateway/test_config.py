"""Config validation: every file in config/ loads; mistakes are reported with their location."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.cli.app import load_for_run
from gateway.cli.app import main as cli
from gateway.errors import ConfigError
from gateway.models import Family
from gateway.runtime import Gateway
from gateway.site.config import SiteConfig, load_config, parse_config
from tests.gateway.factories import minimal_site

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
ENV = {"SENSEGATE_MQTT_PASSWORD": "pw", "INFLUX_TOKEN": "tok", "INFLUX_PASSWORD": "pw", "WECOM_ROBOT_KEY": "k"}


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    config = load_config(path)
    assert config.devices, "a shipped config should describe some devices"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_run_keeps_the_config_as_load_config_reads_it(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run`` rebuilds the config in fresh memory (a pickle of it): nothing may change on the way."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    assert load_for_run(path) == load_config(path)


def test_a_record_validates_from_a_table_or_as_itself() -> None:
    """Devices, households and residents are records (gateway/site/records.py): a table in the
    file, or a record already built (a test's, a copy's), validates to the same record."""
    config = parse_config(minimal_site(), environ={})
    again = SiteConfig.model_validate({**config.model_dump(exclude={"devices"}), "devices": config.devices})
    assert again.devices == config.devices and again.devices[0] is config.devices[0]
    (p,) = problems(minimal_site(devices=[{**minimal_site()["devices"][0], "colour": "red"}]))
    assert "expected no such key (allowed here: building, family, household, id, modbus, model, mqtt," in p


def problems(site: dict, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(site, file="site.toml", environ=env or {})
    return [str(p) for p in info.value.problems]


def test_minimal_site_is_valid_and_derives_defaults() -> None:
    config = parse_config(minimal_site(), environ={})
    assert config.client_id == "sensegate-gw-test"
    assert config.topic_prefix == "sensegate/gw-test"
    assert config.store_path.name == "store.sqlite3"


def test_the_stores_reserve_is_none_or_enough_for_a_checkpoint() -> None:
    assert parse_config(minimal_site(store={"reserve_bytes": "2MiB"}), environ={}).store.reserve_bytes == 2 << 20
    assert parse_config(minimal_site(store={"reserve_bytes": 0}), environ={}).store.reserve_bytes == 0
    assert parse_config(minimal_site(), environ={}).store.reserve_bytes is None  # 1/16 of max_bytes
    (p,) = problems(minimal_site(store={"reserve_bytes": "64KiB"}))
    assert p == "site.toml: store.reserve_bytes: expected 0 (no reserve) or at least 256KiB, found 65536"


def test_unknown_key_names_the_path_and_the_allowed_keys() -> None:
    site = minimal_site(mqtt={"hots": "x"})
    (p,) = problems(site)
    assert p.startswith("site.toml: mqtt.hots: expected no such key (allowed here: alarm_lane, client_id, host,")
    assert p.endswith("found unknown key 'hots'; did you mean 'host'?")


def test_type_and_range_errors_are_all_reported_at_once() -> None:
    site = minimal_site(mqtt={"port": "abc", "keepalive": 1})
    site["devices"][0]["family"] = "toaster"
    found = problems(site)
    assert any(p.startswith("site.toml: mqtt.port: expected a valid integer") and "'abc'" in p for p in found)
    assert any(p.startswith("site.toml: mqtt.keepalive: expected greater than or equal to 5") for p in found)
    assert any(p.startswith("site.toml: devices['101-door'].family: expected 'door', 'fall',") for p in found)
    assert len(found) == 3


def test_missing_field_and_unknown_output_type() -> None:
    site = minimal_site(
        outputs=[
            {"type": "influxdb_v3", "name": "x"},
            {"type": "influxdb_v1", "name": "y", "url": "localhost:8086"},
        ]
    )
    del site["gateway"]["id"]
    found = problems(site)
    assert "site.toml: gateway.id: expected this field to be set, found nothing" in found
    assert "site.toml: outputs['x'].type: expected one of 'influxdb_v1', 'influxdb_v2', found 'influxdb_v3'" in found
    assert any(p.startswith("site.toml: outputs['y'].url: expected an http:// or https:// URL") for p in found)
    assert "site.toml: outputs['y'].database: expected this field to be set, found nothing" in found


def test_cross_references_are_checked() -> None:
    site = minimal_site()
    site["devices"][0]["household"] = "9-9-999"
    site["devices"][1]["model"] = "HS1SB"
    site["devices"][2]["mqtt"]["friendly_name"] = "1号楼/101/门磁"  # same as devices[0]
    site["residents"][0]["household"] = "nowhere"
    site["households"][1]["unit"] = "7"
    site["devices"][3]["family"] = "smoke"  # HS2FD-EF1-3.0 is a fall sensor
    found = problems(site)
    assert any(
        p.startswith("site.toml: devices['101-door'].household: expected a known household (1-1-101, 1-1-102)")
        for p in found
    )
    assert any(
        p.startswith("site.toml: devices['101-smoke'].model: expected a known zigbee2mqtt model") and "'HS1SB'" in p
        for p in found
    )
    assert any(
        p.startswith(
            "site.toml: devices['101-sos'].mqtt.friendly_name: expected a name not used by devices['101-door']"
        )
        for p in found
    )
    assert any(p.startswith("site.toml: residents['r1'].household:") for p in found)
    assert any(
        p.startswith("site.toml: households['1-1-102'].unit: expected a known unit of building 1") for p in found
    )
    assert "site.toml: devices['101-fall'].family: expected 'fall' for model HS2FD-EF1-3.0, found 'smoke'" in found


def test_duplicate_ids_and_public_device_without_place() -> None:
    site = minimal_site()
    site["devices"][1]["id"] = site["devices"][0]["id"]
    del site["devices"][4]["building"]
    found = problems(site)
    # two items with one id keep their index: the id would not say which
    assert "site.toml: devices[1].id: expected a unique id, found '101-door'" in found
    assert (
        "site.toml: devices['main-door']: expected a household, or a building for a public-area device, found neither"
        in found
    )


def test_secrets_come_from_the_environment_or_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    site = minimal_site(
        mqtt={"username": "gw", "password": "env:MQTT_PW"},
        outputs=[
            {
                "type": "influxdb_v2",
                "name": "c",
                "url": "http://x:8086",
                "bucket": "b",
                "token": f"file:{secret}",
            }
        ],
    )
    config = parse_config(site, environ={"MQTT_PW": "pw!"})
    assert config.mqtt.password.get_secret_value() == "pw!"
    assert config.outputs[0].token.get_secret_value() == "s3cret"  # type: ignore[union-attr]
    assert "pw!" not in repr(config)
    found = problems(site, env={})
    assert found == ["site.toml: mqtt.password: expected environment variable MQTT_PW to be set, found unset"]


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\nid = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value).startswith(f"{bad}: expected valid TOML, found ")
    with pytest.raises(ConfigError, match="expected an existing file"):
        load_config(tmp_path / "nope.toml")


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    import tomli_w

    path = tmp_path / "sub" / "site.toml"
    path.parent.mkdir()
    site = minimal_site()
    site["gateway"]["data_dir"] = "state"
    path.write_text(tomli_w.dumps(site))
    assert load_config(path).store_path == tmp_path / "sub" / "state" / "store.sqlite3"
    site["gateway"]["data_dir"] = str(tmp_path / "abs")
    path.write_text(tomli_w.dumps(site))
    assert load_config(path).store_path == tmp_path / "abs" / "store.sqlite3"


def test_check_command_prints_summary_or_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tomli_w

    good = tmp_path / "good.toml"
    good.write_text(tomli_w.dumps(minimal_site()))
    assert cli(["check", "-c", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {good}")
    assert "1号楼: 6 devices (door 3, fall 1, smoke 1, sos 1)" in out
    assert "outputs: none" in out

    site = minimal_site(mqtt={"port": 0})
    site["devices"][0]["household"] = "nope"
    bad = tmp_path / "bad.toml"
    bad.write_text(tomli_w.dumps(site))
    assert cli(["check", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "config error: 1 problem(s)" in err
    line = bad.read_text().splitlines().index("port = 0") + 1
    assert f"{bad}:{line}: mqtt.port: expected greater than or equal to 1, found 0" in err


def test_rtl433_code_tables_accept_codes_and_flag_names_and_name_the_bad_key() -> None:
    site = minimal_site()
    site["devices"][4]["mqtt"]["codes"] = {"0x0e": "door_opened", "7": ""}
    parse_config(site, environ={})  # Kerui: codes in hex or decimal; "" = known, means nothing
    site["devices"][4]["model"] = "Honeywell-Security"
    site["devices"][4]["mqtt"]["codes"] = {"alarm": "smoke_alarm"}
    parse_config(site, environ={})  # a flag model: flag name → kind
    site["devices"][4]["mqtt"]["codes"] = {"switch9": "smoke_alarm"}
    (p,) = problems(site)
    assert p.startswith(
        "site.toml: devices['main-door'].mqtt.codes: expected keys that are codes (decimal or 0x-hex) or fields"
    )
    assert "switch9" in p


# ------------------------------------------------------------------ Modbus buses and detectors


def _modbus_site(*devices: dict[str, Any], buses: list[dict[str, Any]] | None = None, **extra: Any) -> dict:
    site = minimal_site(**extra)
    site["modbus_buses"] = buses if buses is not None else [{"id": "b1", "port": "/dev/ttyUSB0"}]
    site["devices"].extend({"household": "1-1-101", **d} for d in devices)
    return site


def _gas(id: str = "gas", unit_id: int = 1, **changes: Any) -> dict[str, Any]:
    return {
        "id": id,
        "family": "gas",
        "model": "GENERIC-GAS",
        "modbus": {"bus": "b1", "unit_id": unit_id, "profile": "GENERIC-GAS"},
        **changes,
    }


def test_modbus_bus_defaults_and_site_profiles() -> None:
    from gateway.site.config import site_profiles

    table = {
        "family": "smoke",
        "reads": [{"function": 4, "address": 2, "count": 1}],
        "alarm": {"function": 4, "address": 2, "levels": {"alarm": 0}},
    }
    site = _modbus_site(
        _gas(),
        {"id": "smoke", "family": "smoke", "model": "X", "modbus": {"bus": "b1", "unit_id": 2, "profile": "ACME-S1"}},
        modbus_profiles={"ACME-S1": table},
    )
    config = parse_config(site, environ={})
    bus = config.modbus_buses[0]
    assert (bus.baudrate, bus.parity, bus.stopbits, bus.timeout, bus.poll_interval, bus.offline_after) == (
        9600,
        "N",
        1,
        1.0,
        2.0,
        3,
    )
    profiles = site_profiles(config)
    assert set(profiles) == {"GENERIC-GAS", "GENERIC-SMOKE", "ACME-S1"}
    assert profiles["ACME-S1"].model == "ACME-S1" and profiles["ACME-S1"].reads[0].function == 4


def test_modbus_cross_checks_name_each_mistake() -> None:
    site = _modbus_site(
        _gas("g1"),
        _gas("g2"),  # unit id 1 again on b1
        _gas("g3", 3, modbus={"bus": "b9", "unit_id": 3, "profile": "GENERIC-GAS"}),  # no such bus
        _gas("g4", 4, modbus={"bus": "b1", "unit_id": 4, "profile": "NOPE"}),  # no such profile
        _gas("g5", 5, family="smoke"),  # a gas profile on a smoke device
        _gas("g6", 6, mqtt={"format": "native"}),  # two ways to reach it
        {"id": "r1", "family": "fall", "model": "MR60FDA1", "serial": {"port": "/dev/ttyUSB1", "protocol": "mr60fda1"}},
        buses=[
            {"id": "b1", "port": "/dev/ttyUSB0"},
            {"id": "b2", "port": "/dev/ttyUSB1"},  # a radar's port; and nothing on it
            {"id": "b1", "port": "/dev/ttyUSB2", "backoff_initial": 5, "backoff_max": 1},
        ],
    )
    found = problems(site)
    assert found == [
        "site.toml: devices['g6']: expected exactly one of mqtt = {…}, serial = {…}, modbus = {…} or osdp = {…} "
        "(how the device is reached), found mqtt and modbus",
        "site.toml: modbus_buses['b2'].port: expected a port not used by devices['r1'] (a serial device has its "
        "port to itself), found '/dev/ttyUSB1'",
        "site.toml: modbus_buses[2].id: expected a unique id, found 'b1'",
        "site.toml: modbus_buses[2].backoff_max: expected at least backoff_initial (5), found 1",
        "site.toml: devices['g2'].modbus.unit_id: expected a unit id not used on bus b1 by devices['g1'], found 1",
        "site.toml: devices['g3'].modbus.bus: expected a known Modbus bus (b1, b2), found 'b9'",
        "site.toml: devices['g4'].modbus.profile: expected a known Modbus profile (GENERIC-GAS, GENERIC-SMOKE), "
        "found 'NOPE'",
        "site.toml: devices['g5'].family: expected 'gas' for profile GENERIC-GAS, found 'smoke'",
        "site.toml: modbus_buses['b2']: expected a device with modbus = { bus = 'b2', … }, found no device on this bus",
    ]


def test_modbus_field_errors_and_profile_tables_are_located() -> None:
    bad_profile = {
        "model": "OTHER",  # not the table's name
    }
    broken = {"family": "gas", "reads": [{"address": 0, "count": 200}], "alarm": {"address": 0, "levelz": {}}}
    site = _modbus_site(
        _gas(modbus={"bus": "b1", "unit_id": 0, "profile": "BROKEN", "baud": 1}),
        buses=[{"id": "b1", "port": "ttyUSB0", "parity": "X", "stopbits": 3}],
        modbus_profiles={"ACME": bad_profile},
    )
    found = problems(site)
    assert any(p.startswith("site.toml: modbus_buses['b1'].port: expected an absolute device path") for p in found)
    assert any(p.startswith("site.toml: modbus_buses['b1'].parity: expected 'N', 'E' or 'O'") for p in found)
    assert any(p.startswith("site.toml: modbus_buses['b1'].stopbits: expected 1 or 2") for p in found)
    assert any(
        p.startswith("site.toml: devices['gas'].modbus.unit_id: expected greater than or equal to 1") for p in found
    )
    assert any(
        p.startswith("site.toml: devices['gas'].modbus.baud: expected no such key (allowed here: bus,") for p in found
    )

    site = _modbus_site(_gas(modbus={"bus": "b1", "unit_id": 1, "profile": "BROKEN"}))
    site["modbus_profiles"] = {"ACME": bad_profile, "BROKEN": broken}
    found = problems(site)
    assert (
        "site.toml: modbus_profiles.ACME.model: expected 'ACME' (the table's name) or nothing, found 'OTHER'" in found
    )
    assert any(
        p.startswith("site.toml: modbus_profiles.BROKEN.reads[0].count: expected less than or equal to 125")
        for p in found
    )
    assert any(p.startswith("site.toml: modbus_profiles.BROKEN.alarm.levelz: expected no such key") for p in found)
    assert any(
        p.startswith("site.toml: modbus_profiles.BROKEN.alarm.levels: expected this field to be set") for p in found
    )
    # the device naming the broken table is not reported again as naming an unknown profile
    assert not any(p.startswith("site.toml: devices['gas'].modbus.profile") for p in found)


def test_the_example_profile_in_the_modbus_sample_config_validates() -> None:
    import tomllib

    text = (CONFIG_DIR / "example-modbus.toml").read_text(encoding="utf-8")
    commented = text[text.index("# [modbus_profiles.ACME-GD100]") :]
    table = "\n".join(line.removeprefix("# ") for line in commented.splitlines())
    site = _modbus_site(_gas(modbus={"bus": "b1", "unit_id": 1, "profile": "ACME-GD100"}))
    site.update(tomllib.loads(table))
    config = parse_config(site, environ={})
    assert set(config.modbus_profiles) == {"ACME-GD100"}


def test_a_door_card_belongs_to_one_person_among_residents_staff_and_visitors() -> None:
    site = minimal_site()
    site["residents"][0]["credentials"] = ["card:12-345"]
    site["staff"] = [
        {"id": "s1", "name": "李保安", "role": "security", "buildings": ["1"], "credentials": ["card:12-345"]},
        {"id": "s1", "name": "赵师傅", "role": "maintenance", "buildings": ["9"]},
    ]
    site["visitors"] = [{"id": "v1", "name": "张社工", "role": "community_worker", "credentials": ["card:12-345"]}]
    found = problems(site)
    taken = "expected a credential not used by residents['r1'], found 'card:12-345'"
    assert f"site.toml: staff[0].credentials[0]: {taken}" in found  # two staff with one id: by index
    assert f"site.toml: visitors['v1'].credentials[0]: {taken}" in found
    assert "site.toml: staff[1].id: expected a unique id, found 's1'" in found
    assert any(p.startswith("site.toml: staff[1].buildings[0]: expected a known building") for p in found), found


def test_channel_settings_are_located_and_secrets_never_repeated() -> None:
    site = minimal_site()
    site["mqtt"] = {"password": 12345}
    site["channels"] = [
        {"type": "pager", "id": "x", "secret": "hunter2-hunter2-hunter2"},
        {"type": "webhook", "id": "w", "url": "ftp://x", "secret": "short-secret"},
        {"type": "dingtalk", "id": "d", "token": "tok-123"},
    ]
    found = problems(site)
    hidden = "found a value (not shown: it is a secret)"
    assert any(
        p.startswith("site.toml: channels['x']: expected a channel type: mqtt, webhook, wecom, dingtalk or sms")
        for p in found
    )
    assert (
        "site.toml: channels['w'].url: expected an http:// or https:// URL, e.g. http://127.0.0.1:8086, found 'ftp://x'"
        in found
    )
    assert f"site.toml: channels['w'].secret: expected at least 16 characters, {hidden}" in found
    assert "site.toml: channels['d'].secret: expected this field to be set, found nothing" in found
    assert f"site.toml: mqtt.password: expected a valid string, {hidden}" in found
    text = "\n".join(found)
    for secret in ("hunter2", "short-secret", "tok-123", "12345"):
        assert secret not in text


# ------------------------------------------------------------------ one validation: what run refuses, check refuses


def _with_people(**extra: Any) -> dict[str, Any]:
    site = minimal_site(**extra)
    site["staff"] = [{"id": "s-li", "name": "李师傅", "role": "property"}]
    site.setdefault("channels", [{"type": "mqtt", "id": "app"}])
    return site


def test_roster_times_the_runtime_refuses_are_config_errors() -> None:
    site = _with_people(roster=[{"person": "s-li", "start": "25:00", "end": "8am"}])
    found = problems(site)
    clock = 'expected a local time "HH:MM", e.g. "07:00"'
    assert f"site.toml: roster[0].start: {clock}, found '25:00'" in found
    assert f"site.toml: roster[0].end: {clock}, found '8am'" in found
    site = _with_people(
        ladders=[
            {"id": "l1", "quiet": {"start": "22:00", "end": "7"}, "tiers": [{"to": ["s-li"], "channels": ["app"]}]}
        ]
    )
    assert problems(site) == [f"site.toml: ladders['l1'].quiet.end: {clock}, found '7'"]


def test_urls_and_names_the_http_clients_refuse_are_config_errors() -> None:
    site = minimal_site(
        outputs=[
            {"type": "influxdb_v1", "name": "a", "url": "http://127.0.0.1:8086", "database": ""},
            {"type": "influxdb_v2", "name": "b", "url": "http://127.0.0.1:8086", "bucket": ""},
        ]
    )
    assert problems(site) == [
        "site.toml: outputs['a'].database: expected at least 1 characters, found ''",
        "site.toml: outputs['b'].bucket: expected at least 1 characters, found ''",
    ]
    site = minimal_site(
        outputs=[{"type": "influxdb_v1", "name": "a", "url": "http://127.0.0.1:99999", "database": "d"}],
        channels=[{"type": "webhook", "id": "w", "url": "https://x:70000/hook", "secret": "0123456789abcdef"}],
    )
    port = "expected an http(s):// URL with a port of at most 65535"
    assert problems(site) == [
        f"site.toml: outputs['a'].url: {port}, found 'http://127.0.0.1:99999'",
        f"site.toml: channels['w'].url: {port}, found 'https://x:70000/hook'",
    ]


# Values a person might write for a time of day, a duration, a token, a URL: mostly valid, so
# that many configs pass check and get built, and now and then one that is not.
def _mostly(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.integers(0, 7).flatmap(lambda n: invalid if n == 7 else valid)


_CLOCK = _mostly(
    st.builds("{:02d}:{:02d}".format, st.integers(0, 23), st.integers(0, 59)) | st.just("24:00"),
    st.sampled_from(["8:05", "24:01", "25:00", "8am", "7", "", "12:60", " 08:00", 800])
    | st.text(alphabet="0123456789:apm ", max_size=6),
)
_DURATION = _mostly(st.sampled_from(["5m", "1h30m", "2h", 60, 3600.0]), st.sampled_from(["0s", "-1m", "2x", "", -5, 0]))
_DAYS = _mostly(
    st.none() | st.lists(st.sampled_from(["mon", "tue", "sat", "sun"]), min_size=1, max_size=3, unique=True),
    st.lists(st.sampled_from(["Mon", "weekday", "sun"]), max_size=2),
)
_URL = _mostly(
    st.sampled_from(["http://127.0.0.1:8086", "https://h.example/p", "http://h:65535", "http://h:0"]),
    st.sampled_from(["http://h:65536", "http://h:99999", "h:80"]),
)
_SECRET = _mostly(st.text(min_size=16, max_size=24), st.text(max_size=15))


@st.composite
def _sites(draw: st.DrawFn) -> dict[str, Any]:
    site = _with_people()
    site["staff"].append({"id": "s-wang", "name": "王保安", "role": "security"})
    site["roster"] = [
        {"person": draw(st.sampled_from(["s-li", "s-wang"])), "start": draw(_CLOCK), "end": draw(_CLOCK), "days": d}
        for d in draw(st.lists(_DAYS, max_size=3))
    ]
    quiet = draw(st.none() | st.fixed_dictionaries({"start": _CLOCK, "end": _CLOCK, "days": _DAYS}))
    site["ladders"] = [
        {
            "id": "l1",
            "repeat": draw(_DURATION),
            "tiers": [
                {"to": ["on_duty"], "channels": ["app"]},
                {"after": draw(_DURATION), "to": ["s-li"], "channels": ["hook"]},
            ],
            **({"quiet": quiet} if quiet is not None else {}),
        }
    ]
    site["routes"] = [{"ladder": "l1"}]
    site["channels"] = [
        {"type": "mqtt", "id": "app"},
        {"type": "webhook", "id": "hook", "url": draw(_URL), "secret": draw(_SECRET)},
    ]
    site["outputs"] = [
        {"type": "influxdb_v1", "name": "o", "url": draw(_URL), "database": draw(_mostly(st.just("db"), st.just("")))}
    ]
    site["notify"] = {"renotify_interval": draw(_DURATION)}
    if draw(st.booleans()):
        site["console"] = {"enabled": True, "port": 0, "public_url": draw(_mostly(st.just(""), st.just("ftp://x")))}
    site["home_assistant"] = {"enabled": draw(st.booleans())}
    site["residents"][0]["lives_alone"] = draw(_mostly(st.booleans(), st.sampled_from(["yes", "true", 1, 0])))
    return site


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_sites())
def test_a_config_that_check_accepts_builds_everything_run_builds(site: dict[str, Any]) -> None:
    """Either ``parse_config`` refuses the config, or the runtime's own constructors take it:
    the gateway (registry, rules, alert path, sinks, channels, notifier with its shifts and
    quiet windows, Home Assistant plan, the console's settings)."""
    with tempfile.TemporaryDirectory() as data:
        site["gateway"]["data_dir"] = data
        try:
            config = parse_config(site, environ={})
        except ConfigError:
            event("refused by check")
            return
        event("accepted by check")
        assert config.residents[0].lives_alone is site["residents"][0]["lives_alone"]  # as written, not coerced
        gateway = Gateway(config)
        try:
            assert len(gateway.notifier.shifts) == len(config.roster)
        finally:
            gateway.store.close()


# ------------------------------------------------------------------ errors name items by id, with the line


SITE_WITH_MISTAKES = """\
[gateway]
id = "gw"

[[buildings]]
id = "3"

[[households]]
id = "3-2-502"
building = "3"

[[residents]]
id = "r-1"
name = "王秀英"
household = "3-2-502"

[[devices]]
id = "3-2-502-door"
family = "door"
model = "MCCGQ11LM"
household = "3-2-502"
mqtt = { format = "zigbee2mqtt", friendly_name = "3栋/502/门磁" }

[[devices]]
id = "3-2-502-smoke"
family = "smoke"
model = "HS1SA"
household = "3-2-503"
room = "厨房"
mqtt = { format = "zigbee2mqtt", friendly_name = "3栋/502/门磁" }

[[staff]]
id = "s-li"
name = "李师傅"
role = "property"

[[roster]]
person = "s-wang"

[[channels]]
type = "mqtt"
id = "app"

[[ladders]]
id = "emergency"
tiers = [
    { to = ["family"], channels = ["app"] },
    { after = "2m", to = ["s-li"], channels = ["sms"] },
]
"""


def test_problems_name_list_items_by_id_and_give_the_line(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(SITE_WITH_MISTAKES, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = SITE_WITH_MISTAKES.splitlines()
    found = {p.path: p for p in info.value.problems}
    household = found["devices['3-2-502-smoke'].household"]
    assert household.line is not None and lines[household.line - 1] == 'household = "3-2-503"'
    assert str(household) == (
        f"{path}:{household.line}: devices['3-2-502-smoke'].household: "
        "expected a known household (3-2-502), found '3-2-503'"
    )
    name = found["devices['3-2-502-smoke'].mqtt.friendly_name"]
    assert name.expected == "a name not used by devices['3-2-502-door']"
    assert lines[name.line - 1].startswith("mqtt = {") and name.line > household.line
    person = found["roster[0].person"]  # a roster entry has no id of its own: by index
    assert lines[person.line - 1] == 'person = "s-wang"'
    tier = found["ladders['emergency'].tiers[1].channels[0]"]  # an inline table: its own line
    assert lines[tier.line - 1].strip().startswith('{ after = "2m"')


def test_unknown_keys_suggest_the_closest_allowed_key(tmp_path: Path) -> None:
    site = minimal_site(housholds=[], channels=[{"type": "wecom", "id": "w", "token": "t", "mentoin": False}])
    found = problems(site)
    assert any(p.endswith("found unknown key 'housholds'; did you mean 'households'?") for p in found), found
    # the keys of the channel's own type, not of the first type in the union
    assert any(
        p.startswith("site.toml: channels['w'].mentoin: expected no such key (allowed here: id, mention, timeout,")
        and p.endswith("; did you mean 'mention'?")
        for p in found
    ), found


def test_booleans_and_numbers_are_not_coerced_from_strings() -> None:
    site = minimal_site(
        mqtt={"port": "1883", "persistent_session": "no"},
        alerts={"console": 1},
        notify={"cap_per_hour": "12"},
        channels=[{"type": "wecom", "id": "w", "token": "t", "mention": "yes"}],
    )
    site["residents"][0]["lives_alone"] = "yes"
    found = problems(site)
    boolean = "expected a valid boolean (true or false, without quotes)"
    number = "expected a valid integer (a number without quotes)"
    assert found == [
        f"site.toml: mqtt.port: {number}, found '1883'",
        f"site.toml: mqtt.persistent_session: {boolean}, found 'no'",
        "site.toml: alerts.console: expected a valid boolean, found 1",
        f"site.toml: residents['r1'].lives_alone: {boolean}, found 'yes'",
        f"site.toml: notify.cap_per_hour: {number}, found '12'",
        f"site.toml: channels['w'].mention: {boolean}, found 'yes'",
    ]
    # what TOML cannot write is still taken from a string: paths, families, kinds
    site = minimal_site(outputs=[{"type": "influxdb_v1", "name": "o", "url": "http://x", "database": "d"}])
    site["gateway"]["data_dir"] = "state"
    site["outputs"][0]["families"] = ["fall", "sos"]
    site["devices"][4]["mqtt"]["codes"] = {"0x0e": "door_opened", "7": ""}
    config = parse_config(site, environ={})
    assert config.gateway.data_dir == Path("state") and config.outputs[0].families == [Family.FALL, Family.SOS]


def test_key_lines_follow_headers_arrays_of_tables_and_multi_line_values() -> None:
    from gateway.site.locate import key_lines, line_of

    text = "\n".join(
        [
            'title = "x"  # [not] a header',  # 1
            "[mqtt]",  # 2
            'tls.ca_file = "/ca.pem"',  # 3
            'notes = """',  # 4
            "[[devices]]",  # 5: inside a string
            '"""',  # 6
            "[[ladders]]",  # 7
            'id = "a"',  # 8
            "[[ladders.tiers]]",  # 9
            'to = ["family",',  # 10
            '  "visitors"]',  # 11
            "[[ladders]]",  # 12
            "[[ladders.tiers]]",  # 13
            '"quoted.key" = 1',  # 14
            "[ladders.quiet]",  # 15
            'start = "22:00"',  # 16
        ]
    )
    lines = key_lines(text)
    assert line_of(lines, "mqtt.tls.ca_file") == 3
    assert line_of(lines, "mqtt.tls.key_file") == 3  # not written: the nearest part that is
    assert ("devices",) not in lines and ("devices", 0) not in lines
    assert line_of(lines, "ladders[0].id") == 8
    assert line_of(lines, "ladders[0].tiers[0].to[1]") == 10
    assert line_of(lines, "ladders[1].tiers[0].quoted.key") == 13  # a quoted key is one key
    assert lines[("ladders", 1, "tiers", 0, "quoted.key")] == 14
    assert line_of(lines, "ladders[1].quiet.start") == 16
    assert line_of(lines, "visits.plans") is None
