"""A demo residential block (小区) as a plain config dict, and its rendering to TOML.

``demo_site()`` builds what an installer would write for a small estate: buildings 1号楼 …,
two units (单元) each, flats numbered by floor (101, 102, 201 …), residents with plausible
names, about 30 % elders living alone (独居老人) with risk tiers and emergency contacts, and in
every flat a door contact (门磁), a smoke detector (烟感), a fall radar (跌倒雷达) and an SOS
button (紧急按钮) on zigbee2mqtt. Public areas get a few 433 MHz devices seen through rtl_433 (a
Kerui contact on the building's lobby door, a Chuango smoke detector in the power room) and one
access controller (门禁) on that door per building, on the native format. The most at-risk elder of each building
also wears an EV1527 SOS pendant (Generic-Remote) with a code table. Two devices are wired: an
MR60FDA1 fall radar on a UART in building 2's first flat, and one RS-485 bus in building 1 with
a Modbus RTU gas detector (a kitchen) and a smoke transmitter (a stairwell), on the shipped
EXAMPLE profiles GENERIC-GAS and GENERIC-SMOKE.

Everything is derived from a fixed seed, so the same arguments always give the same dict:
``config/demo.toml`` is ``render_toml(demo_site())`` and a test keeps the two in sync.
Regenerate it with::

    .venv/bin/python -m simulators.block > config/demo.toml
"""

from __future__ import annotations

import random
import sys
from typing import Any

import tomli_w

from drivers import zigbee2mqtt
from gateway.models import Family
from simulators.devices import EXAMPLE_CODES

# A fixed seed: the demo site is data, not a random draw. Change it and config/demo.toml changes.
_SEED = 20260101
LIVES_ALONE_SHARE = 0.3
UNITS_PER_BUILDING = 2
FLATS_PER_FLOOR = 2

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程魏苏吕丁任沈"
_ELDER_WOMEN = ["秀英", "桂兰", "玉兰", "淑珍", "凤英", "秀兰", "桂英", "玉珍", "素芬", "美华", "翠花", "淑英"]
_ELDER_MEN = ["建国", "国强", "德明", "志刚", "福生", "保国", "振华", "玉林", "长福", "永福", "树森", "文斌"]
_ADULTS = ["伟", "磊", "静", "丽", "敏", "婷", "俊杰", "晓东", "海燕", "丹", "勇", "艳", "涛", "军", "洁", "鹏"]
_CHILDREN = ["子涵", "梓轩", "欣怡", "宇轩", "诗涵", "浩然", "一诺", "思源", "雨桐", "子墨"]
_GRID_WORKERS = ["刘晓燕", "周建华", "陈丽娟", "孙志强", "杨春梅", "吴海波"]

SMOKE_MODELS = ("HS1SA", "TS0205")
FALL_MODELS = ("MIR-HE200-TY_fall", "HS2FD-EF1-3.0", "FDS315")
SOS_MODELS = ("TS0215A_sos", "HS1EB")
# HEIMAN HS1EB reports single/double/hold, never "emergency" (PROTOCOLS.md §2). The codec has
# this table as the model default; the demo writes it out so the config shows how it is done.
HS1EB_ACTIONS = dict(zigbee2mqtt.HS1EB_ACTIONS)
# EV1527 key codes are vendor-specific, so the site config carries the table.
PENDANT_CODES = EXAMPLE_CODES[("Generic-Remote", Family.SOS)]
CHUANGO_SMOKE_CODES = EXAMPLE_CODES[("Chuango-Security", Family.SMOKE)]
ACCESS_MODEL = "SG-AC100"  # a native-format access controller (门禁控制器)


def _phone(rng: random.Random) -> str:
    # 1380000xxxx: obviously fictional numbers, never a real person's.
    return f"1380000{rng.randrange(10_000):04d}"


def _elder(rng: random.Random, surname: str | None = None, woman: bool | None = None) -> str:
    woman = rng.random() < 0.6 if woman is None else woman  # women outlive men
    return (surname or rng.choice(_SURNAMES)) + rng.choice(_ELDER_WOMEN if woman else _ELDER_MEN)


def _flat_numbers(count: int) -> list[tuple[str, str]]:
    """(unit, number) for ``count`` flats spread over the units: 1单元101, 1单元102, 1单元201 …"""
    units = max(1, min(UNITS_PER_BUILDING, count))
    per_unit = [count // units + (1 if u < count % units else 0) for u in range(units)]
    flats = []
    for u, n in enumerate(per_unit, start=1):
        for k in range(n):
            floor, door = divmod(k, FLATS_PER_FLOOR)
            flats.append((str(u), f"{floor + 1}{door + 1:02d}"))
    return flats


def _residents(
    rng: random.Random, hid: str, alone: bool, grid: dict[str, str], first: bool = False
) -> list[dict[str, Any]]:
    surname = rng.choice(_SURNAMES)
    child = {"name": surname + rng.choice(_ADULTS), "phone": _phone(rng), "relation": "子女"}
    people: list[dict[str, Any]] = []
    if alone:
        # 独居老人: the group the alerts and the monthly visits are for.
        tier = "high" if first or rng.random() < 0.55 else "medium"
        contacts = [child, {"name": grid["name"], "phone": grid["phone"], "relation": "网格员"}]
        if rng.random() < 0.5:
            contacts.append(
                {"name": rng.choice(_SURNAMES) + rng.choice(_ADULTS), "phone": _phone(rng), "relation": "邻居"}
            )
        people.append({"name": _elder(rng, surname), "lives_alone": True, "risk_tier": tier, "contacts": contacts})
    else:
        shape = rng.random()
        if shape < 0.4:  # an elderly couple
            people.append({"name": _elder(rng, surname, woman=False), "risk_tier": "medium", "contacts": [child]})
            people.append({"name": _elder(rng, woman=True), "risk_tier": "medium", "contacts": [child]})
        else:  # a family, sometimes three generations
            if shape > 0.75:
                people.append({"name": _elder(rng, surname), "risk_tier": "medium", "contacts": [child]})
            people.append({"name": surname + rng.choice(_ADULTS)})
            people.append({"name": rng.choice(_SURNAMES) + rng.choice(_ADULTS)})
            if rng.random() < 0.7:
                people.append({"name": surname + rng.choice(_CHILDREN)})
    return [{"id": f"{hid}-{i}", "household": hid, **p} for i, p in enumerate(people, start=1)]


def _z2m(friendly_name: str, actions: dict[str, str] | None = None) -> dict[str, Any]:
    src: dict[str, Any] = {"format": "zigbee2mqtt", "friendly_name": friendly_name}
    if actions:
        src["actions"] = dict(actions)
    return src


# Where the demo's wired fall radar is plugged in (a stable by-id path, as installers should
# write it); the demo itself points it at a pseudo-terminal.
SERIAL_RADAR_PORT = "/dev/serial/by-id/usb-Seeed_MR60FDA1-if00-port0"
# Building 1's RS-485 bus (a CH340 USB adapter); the demo puts a simulated bus on a pty there.
MODBUS_BUS_PORT = "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0"
MODBUS_BUS_ID = "b1"
# (unit id, profile) of the detectors on it: the shipped EXAMPLE profiles.
MODBUS_GAS = (1, "GENERIC-GAS")
MODBUS_SMOKE = (2, "GENERIC-SMOKE")


def demo_site(
    buildings: int = 2,
    households_per_building: int = 20,
    gateway_id: str = "demo",
    data_dir: str = "sensegate-demo-data",
    radar_port: str = SERIAL_RADAR_PORT,
    modbus_port: str = MODBUS_BUS_PORT,
) -> dict[str, Any]:
    """The demo block as a dict that ``gateway.site.config.parse_config`` accepts.

    Building 2's first flat (a lone elder's) has a wired MR60FDA1 fall radar on the bathroom
    ceiling instead of a Zigbee one, on ``radar_port``. Building 1 has an RS-485 bus on
    ``modbus_port``: a gas detector in the kitchen of its fourth flat (its last with fewer) and
    a smoke transmitter in the stairwell of unit 1. ``sensegate demo`` puts
    a simulated radar and a simulated bus on pseudo-terminals there.
    """
    if buildings < 1 or households_per_building < 1:
        raise ValueError("a block needs at least one building with one household")
    rng = random.Random(_SEED)
    site: dict[str, Any] = {
        "gateway": {"id": gateway_id, "site": "幸福里小区", "data_dir": data_dir},
        "mqtt": {
            "host": "127.0.0.1",
            "port": 1883,
            "zigbee2mqtt_base": "zigbee2mqtt",
            "rtl_433_topic": "rtl_433/+/events",
            "native_base": "sensegate/in",
        },
        "alerts": {"console": True},
        "buildings": [],
        "households": [],
        "residents": [],
        "modbus_buses": [{"id": MODBUS_BUS_ID, "port": modbus_port, "baudrate": 9600, "poll_interval": 2.0}],
        "devices": [],
    }
    for b in range(1, buildings + 1):
        bid = str(b)
        flats = _flat_numbers(households_per_building)
        units = sorted({u for u, _ in flats}, key=int)
        site["buildings"].append({"id": bid, "name": f"{bid}号楼", "units": units})
        grid = {"name": _GRID_WORKERS[(b - 1) % len(_GRID_WORKERS)], "phone": _phone(rng)}
        # The first flat of every building is a lone elder's, so the demo's scripted incidents
        # (simulators.runner.default_demo_incidents) have one whatever the block's size.
        share = max(1, round(LIVES_ALONE_SHARE * len(flats)))
        alone = {0, *rng.sample(range(1, len(flats)), min(share - 1, len(flats) - 1))}
        most_at_risk: tuple[str, str] | None = None  # (household, room) for the pendant
        for i, (unit, number) in enumerate(flats):
            hid = f"{bid}-{unit}-{number}"
            site["households"].append({"id": hid, "building": bid, "unit": unit, "number": number})
            people = _residents(rng, hid, i in alone, grid, first=i == 0)
            site["residents"].extend(people)
            where = f"{bid}号楼/{unit}单元/{number}"
            lone_elder = people[0].get("lives_alone", False)
            # Falls happen most in the bathroom: that is where a lone elder's radar goes.
            fall_room = "卫生间" if lone_elder or rng.random() < 0.5 else "卧室"
            sos_model = rng.choice(SOS_MODELS)
            site["devices"].extend(
                [
                    {
                        "id": f"{hid}-door",
                        "family": "door",
                        "model": "MCCGQ11LM",
                        "household": hid,
                        "room": "入户门",
                        "mqtt": _z2m(f"{where}/门磁"),
                    },
                    {
                        "id": f"{hid}-smoke",
                        "family": "smoke",
                        "model": rng.choice(SMOKE_MODELS),
                        "household": hid,
                        "room": "厨房",
                        "mqtt": _z2m(f"{where}/烟感"),
                    },
                    {
                        "id": f"{hid}-fall",
                        "family": "fall",
                        "model": "MR60FDA1",
                        "household": hid,
                        "room": "卫生间",
                        "serial": {"port": radar_port, "protocol": "mr60fda1"},
                    }
                    if (b, i) == (2, 0)
                    else {
                        "id": f"{hid}-fall",
                        "family": "fall",
                        "model": FALL_MODELS[i % len(FALL_MODELS)],
                        "household": hid,
                        "room": fall_room,
                        "mqtt": _z2m(f"{where}/跌倒雷达"),
                    },
                    {
                        "id": f"{hid}-sos",
                        "family": "sos",
                        "model": sos_model,
                        "household": hid,
                        "room": "卧室",
                        "mqtt": _z2m(f"{where}/紧急按钮", HS1EB_ACTIONS if sos_model == "HS1EB" else None),
                    },
                ]
            )
            if lone_elder and people[0]["risk_tier"] == "high" and most_at_risk is None:
                most_at_risk = (hid, "随身")
        # Public areas of the building.
        site["devices"].append(
            {
                "id": f"{bid}-access",
                "family": "door",
                "model": ACCESS_MODEL,
                "building": bid,
                "room": "大堂门禁",
                "mqtt": {"format": "native"},
            }
        )
        site["devices"].append(
            {
                "id": f"{bid}-gate",
                "family": "door",
                "model": "Kerui-Security",
                "building": bid,
                "room": "大堂门",
                "mqtt": {"format": "rtl_433", "id": str(100_000 + rng.randrange(900_000))},
            }
        )
        if most_at_risk is not None:
            hid, room = most_at_risk
            site["devices"].append(
                {
                    "id": f"{hid}-pendant",
                    "family": "sos",
                    "model": "Generic-Remote",
                    "household": hid,
                    "room": room,
                    "mqtt": {"format": "rtl_433", "id": str(rng.randrange(1, 65_536)), "codes": dict(PENDANT_CODES)},
                }
            )
        if b == 1:
            # a flat the MQTT incidents leave alone, so the demo's alerts are about different homes
            gas_home = site["households"][-len(flats) + min(3, len(flats) - 1)]["id"]
            site["devices"].append(
                {
                    "id": f"{gas_home}-gas",
                    "family": "gas",
                    "model": MODBUS_GAS[1],
                    "household": gas_home,
                    "room": "厨房",
                    "modbus": {"bus": MODBUS_BUS_ID, "unit_id": MODBUS_GAS[0], "profile": MODBUS_GAS[1]},
                }
            )
            site["devices"].append(
                {
                    "id": f"{bid}-1-stair-smoke",
                    "family": "smoke",
                    "model": MODBUS_SMOKE[1],
                    "building": bid,
                    "room": "1单元楼梯间",
                    "modbus": {"bus": MODBUS_BUS_ID, "unit_id": MODBUS_SMOKE[0], "profile": MODBUS_SMOKE[1]},
                }
            )
            site["devices"].append(
                {
                    "id": f"{bid}-power-room-smoke",
                    "family": "smoke",
                    "model": "Chuango-Security",
                    "building": bid,
                    "room": "配电间",
                    "mqtt": {
                        "format": "rtl_433",
                        "id": str(rng.randrange(1, 1 << 20)),
                        "codes": dict(CHUANGO_SMOKE_CODES),
                    },
                }
            )
    site.update(_people_on_duty(site))
    return site


def _people_on_duty(site: dict[str, Any]) -> dict[str, Any]:
    """Who the demo's alerts reach (docs/alerts.md): property staff on day and night shifts,
    security, maintenance, the mini fire station and the manager, paged on the gateway's own
    MQTT channel (``<prefix>/notifications/app``) up a ladder. No random draws: adding people
    changes nothing else in the block."""
    staff = [
        ("s-day", "李建国", "property", "08:00", "20:00"),
        ("s-night", "王德明", "property", "20:00", "08:00"),
        ("s-guard", "赵保安", "security", "00:00", "24:00"),
        ("s-fix", "周师傅", "maintenance", None, None),
        ("s-xfz", "微型消防站", "fire_station", None, None),
        ("s-boss", "孙经理", "manager", None, None),
    ]
    return {
        "staff": [
            {"id": i, "name": n, "role": r, "phone": f"1390000{k:04d}"} for k, (i, n, r, _, _) in enumerate(staff)
        ],
        "roster": [{"person": i, "start": a, "end": b} for i, _, _, a, b in staff if a is not None],
        "channels": [{"type": "mqtt", "id": "app"}],
        "ladders": [
            {
                "id": "emergency",
                "repeat": "5m",
                "tiers": [
                    {"to": ["family", "on_duty:property"], "channels": ["app"]},
                    {"after": "2m", "to": ["on_duty:security", "role:fire_station"], "channels": ["app"]},
                    {"after": "5m", "to": ["role:manager"], "channels": ["app"]},
                ],
            },
            {"id": "welfare", "repeat": "1h", "tiers": [{"to": ["visitors", "family"], "channels": ["app"]}]},
            {
                "id": "maintenance",
                "repeat": "once",
                "quiet": {"start": "22:00", "end": "07:00"},
                "tiers": [{"to": ["role:maintenance"], "channels": ["app"]}],
            },
        ],
        "routes": [
            {"severity": [1, 2], "ladder": "emergency"},
            {"severity": [3], "ladder": "welfare"},
            {"severity": [4], "ladder": "maintenance"},
        ],
    }


_HEADER = """\
# SenseGate demo site: a residential block (幸福里小区) for the simulator and the demo.
#
# GENERATED FILE, do not edit by hand. It is render_toml(demo_site()) from simulators/block.py;
# change demo_site() and regenerate with
#     .venv/bin/python -m simulators.block > config/demo.toml
# tests/simulators/test_block.py fails when this file and the generator disagree.

"""


_SECTION_NOTES = {
    "buildings": "楼栋 and their units (单元)",
    "households": "households (户): id is building-unit-flat, number is the door number people use",
    "residents": "residents (居民); lives_alone marks 独居老人",
    "modbus_buses": "RS-485 buses of Modbus RTU detectors (the devices on them have modbus = {…})",
    "devices": "devices: four per household (zigbee2mqtt; one fall radar on a UART), public-area ones on rtl_433 "
    "and native, two detectors on the Modbus bus",
    "staff": "who alerts reach (docs/alerts.md): property, security, maintenance, 微型消防站, the manager",
    "roster": "值班表: who is on duty when (local time)",
    "channels": "how they are reached: here the gateway's own MQTT topic <prefix>/notifications/app",
    "ladders": "分级响应: tiers paged in turn until someone acknowledges",
    "routes": "which ladder an alert climbs, by severity",
}


def render_toml(site: dict[str, Any]) -> str:
    """The site as TOML, with a header saying it is generated and how.

    Sections come in the order of the dict (gateway, mqtt, … devices), each list of tables as
    ``[[name]]`` blocks and small nested tables inline (``mqtt = { format = "native" }``): one
    block per device reads and diffs better than tomli_w's layout, which puts all plain values
    first and splits every nested table into its own header. tomli_w still formats every key
    and value, so quoting and escaping are its own.
    """
    parts = [_HEADER]
    for key, value in site.items():
        note = _SECTION_NOTES.get(key)
        if note:
            parts.append(f"# {note}\n")
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            parts.append("\n".join(_table(f"[[{_key(key)}]]", item) for item in value))
        elif isinstance(value, dict):
            parts.append(_table(f"[{_key(key)}]", value))
        else:
            parts.append(f"{_key(key)} = {_inline(value)}\n")
        parts.append("\n")
    return "".join(parts).rstrip("\n") + "\n"


def _table(header: str, table: dict[str, Any]) -> str:
    lines = [header]
    for key, value in table.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = "".join(f"    {_inline(v)},\n" for v in value)
            lines.append(f"{_key(key)} = [\n{items}]")
        else:
            lines.append(f"{_key(key)} = {_inline(value)}")
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    return tomli_w.dumps({key: 0}).rsplit(" = ", 1)[0]


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = ") :].rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Print the demo site config as TOML.")
    parser.add_argument("--buildings", type=int, default=2)
    parser.add_argument("--households", type=int, default=20, help="households per building")
    parser.add_argument("--gateway-id", default="demo")
    parser.add_argument("--data-dir", default="sensegate-demo-data")
    args = parser.parse_args(argv)
    sys.stdout.write(render_toml(demo_site(args.buildings, args.households, args.gateway_id, args.data_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
