"""Config validation: every file in config/ loads; mistakes are reported with their location."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main as cli
from gateway.config import load_config, parse_config
from gateway.errors import ConfigError
from tests.gateway.factories import minimal_site

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
ENV = {"SENSEGATE_MQTT_PASSWORD": "pw", "INFLUX_TOKEN": "tok", "INFLUX_PASSWORD": "pw"}


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    config = load_config(path)
    assert config.devices, "a shipped config should describe some devices"


def problems(site: dict, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(site, file="site.toml", environ=env or {})
    return [str(p) for p in info.value.problems]


def test_minimal_site_is_valid_and_derives_defaults() -> None:
    config = parse_config(minimal_site(), environ={})
    assert config.client_id == "sensegate-gw-test"
    assert config.topic_prefix == "sensegate/gw-test"
    assert config.store_path.name == "store.sqlite3"


def test_unknown_key_names_the_path_and_the_allowed_keys() -> None:
    site = minimal_site(mqtt={"hots": "x"})
    (p,) = problems(site)
    assert p.startswith("site.toml: mqtt.hots: expected no such key (allowed here: client_id, host,")
    assert p.endswith("found unknown key 'hots'")


def test_type_and_range_errors_are_all_reported_at_once() -> None:
    site = minimal_site(mqtt={"port": "abc", "keepalive": 1})
    site["devices"][0]["family"] = "toaster"
    found = problems(site)
    assert any(p.startswith("site.toml: mqtt.port: expected a valid integer") and "'abc'" in p for p in found)
    assert any(p.startswith("site.toml: mqtt.keepalive: expected greater than or equal to 5") for p in found)
    assert any(p.startswith("site.toml: devices[0].family: expected 'door', 'fall',") for p in found)
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
    assert "site.toml: outputs[0].type: expected one of 'influxdb_v1', 'influxdb_v2', found 'influxdb_v3'" in found
    assert any(p.startswith("site.toml: outputs[1].url: expected an http:// or https:// URL") for p in found)
    assert "site.toml: outputs[1].database: expected this field to be set, found nothing" in found


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
        p.startswith("site.toml: devices[0].household: expected a known household (1-1-101, 1-1-102)") for p in found
    )
    assert any(
        p.startswith("site.toml: devices[1].model: expected a known zigbee2mqtt model") and "'HS1SB'" in p
        for p in found
    )
    assert any(
        p.startswith("site.toml: devices[2].mqtt.friendly_name: expected a name not used by devices[0]") for p in found
    )
    assert any(p.startswith("site.toml: residents[0].household:") for p in found)
    assert any(p.startswith("site.toml: households[1].unit: expected a known unit of building 1") for p in found)
    assert "site.toml: devices[3].family: expected 'fall' for model HS2FD-EF1-3.0, found 'smoke'" in found


def test_duplicate_ids_and_public_device_without_place() -> None:
    site = minimal_site()
    site["devices"][1]["id"] = site["devices"][0]["id"]
    del site["devices"][4]["building"]
    found = problems(site)
    assert "site.toml: devices[1].id: expected a unique id, found '101-door'" in found
    assert "site.toml: devices[4]: expected a household, or a building for a public-area device, found neither" in found


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
    assert f"{bad}: mqtt.port: expected greater than or equal to 1, found 0" in err


def test_rtl433_code_tables_accept_codes_and_flag_names_and_name_the_bad_key() -> None:
    site = minimal_site()
    site["devices"][4]["mqtt"]["codes"] = {"0x0e": "door_opened", "7": ""}
    parse_config(site, environ={})  # Kerui: codes in hex or decimal; "" = known, means nothing
    site["devices"][4]["model"] = "Honeywell-Security"
    site["devices"][4]["mqtt"]["codes"] = {"alarm": "smoke_alarm"}
    parse_config(site, environ={})  # a flag model: flag name → kind
    site["devices"][4]["mqtt"]["codes"] = {"switch9": "smoke_alarm"}
    (p,) = problems(site)
    assert p.startswith("site.toml: devices[4].mqtt.codes: expected keys that are codes (decimal or 0x-hex) or fields")
    assert "switch9" in p
