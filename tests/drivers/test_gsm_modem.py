"""The AT-command transport against the modem simulator on a real pseudo-terminal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.gsm_modem import CommandError, GsmModem, NoAnswer, NotRegistered, csq_to_dbm
from drivers.gsm_pdu import decode_deliver, encode_submit
from gateway.clock import VirtualClock
from gateway.errors import TransportError
from simulators.gsm_modem import PtyModem

TEXT = "【跌倒报警】3号楼2单元502室 独居老人王秀英 卫生间跌倒未起身，请立即处置。告警 9f3a01，回复确认"


@dataclass
class Rig:
    sim: PtyModem
    modem: GsmModem
    clock: VirtualClock


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    sim = PtyModem(tmp_path / "ttyGSM")
    sim.open()
    clock = VirtualClock()
    modem = GsmModem(str(tmp_path / "ttyGSM"), clock, timeout=0.5, send_timeout=0.5)
    try:
        yield Rig(sim, modem, clock)
    finally:
        await modem.close()
        sim.close()


async def test_init_health_and_a_long_chinese_text(rig: Rig) -> None:
    await rig.modem.connect()
    assert rig.sim.commands == ["ATE0", "AT+CMEE=1", "AT+CPIN?", "AT+CMGF=0"]
    health = await rig.modem.check_health()
    assert health.registered and health.registration == "home" and health.signal_dbm == -73
    assert health.checked_at == rig.clock.now()
    text = TEXT * 3
    pdus = encode_submit("+8613800138000", text, reference=9)
    assert len(pdus) == 3
    mrs = [await rig.modem.send_pdu(p) for p in pdus]
    assert mrs == [1, 2, 3]
    assert rig.sim.texts("+8613800138000") == [text]
    assert [s.pdu for s in rig.sim.sent] == [p.hex() for p in pdus]


def test_signal_mapping() -> None:
    assert [csq_to_dbm(v) for v in (0, 1, 2, 15, 30, 31, 99)] == [-113, -111, -109, -83, -53, -51, None]


async def test_not_registered_and_weak_signal(rig: Rig) -> None:
    rig.sim.registration = 2  # searching
    rig.sim.rssi = 3
    with pytest.raises(NotRegistered):
        await rig.modem.check_health()
    assert rig.modem.health.registered is False and rig.modem.health.registration == "searching"
    assert rig.modem.health.signal_dbm == -107
    assert "not registered" in rig.modem.last_error
    rig.sim.registration = 5
    rig.sim.rssi = 99
    health = await rig.modem.check_health()
    assert health.registered and health.registration == "roaming" and health.signal_dbm is None


async def test_lte_only_registration_and_a_2g_module(rig: Rig) -> None:
    rig.sim.registration = 0
    rig.sim.eps_registration = 1  # registered on LTE (EPS) only, as an EC20 may be
    assert (await rig.modem.check_health()).registration == "home"
    rig.sim.lte = False  # a SIM800: AT+CEREG? is an ERROR, which is not the problem to report
    with pytest.raises(NotRegistered):
        await rig.modem.check_health()
    assert "not registered (not_registered)" in rig.modem.last_error


async def test_cms_errors_are_classified(rig: Rig) -> None:
    (pdu,) = encode_submit("+8613800138000", "测试")
    rig.sim.cms_error = 1  # unassigned number
    with pytest.raises(CommandError) as err:
        await rig.modem.send_pdu(pdu)
    assert err.value.permanent and err.value.code == 1 and "unassigned" in str(err.value)
    rig.sim.cms_error = 42  # congestion
    with pytest.raises(CommandError) as err:
        await rig.modem.send_pdu(pdu)
    assert not err.value.permanent
    rig.sim.cms_error = None
    assert await rig.modem.send_pdu(pdu) == 1  # the session survived the errors
    assert rig.modem.opens == 1


async def test_a_wrong_length_is_refused_by_the_modem(rig: Rig) -> None:
    (pdu,) = encode_submit("+8613800138000", "测试")
    bad = type(pdu)(pdu.data, pdu.tpdu_length + 1)
    with pytest.raises(CommandError) as err:
        await rig.modem.send_pdu(bad)
    assert err.value.code == 304 and err.value.permanent
    assert rig.sim.sent == []


async def test_a_silent_modem_times_out_and_is_reopened(rig: Rig) -> None:
    await rig.modem.connect()
    rig.sim.mute = True
    with pytest.raises(NoAnswer):
        await rig.modem.check_health()
    assert not rig.modem.is_open
    rig.sim.mute = False
    await rig.modem.check_health()
    assert rig.modem.opens == 2


async def test_no_answer_after_the_pdu(rig: Rig) -> None:
    (pdu,) = encode_submit("+8613800138000", "测试")
    rig.sim.mute_after_prompt = True
    with pytest.raises(NoAnswer):
        await rig.modem.send_pdu(pdu)
    rig.sim.mute_after_prompt = False
    assert await rig.modem.send_pdu(pdu) == 1
    assert rig.sim.texts() == ["测试"]


async def test_vanish_and_reappear(rig: Rig) -> None:
    (pdu,) = encode_submit("13800138000", "测试")
    await rig.modem.send_pdu(pdu)
    rig.sim.vanish()
    with pytest.raises(TransportError):
        await rig.modem.send_pdu(pdu)
    with pytest.raises(TransportError, match="cannot open"):
        await rig.modem.send_pdu(pdu)  # still unplugged
    rig.sim.reappear()
    await rig.modem.send_pdu(pdu)
    assert rig.sim.texts("13800138000") == ["测试", "测试"]
    assert rig.modem.opens == 2


async def test_sim_pin(tmp_path: Path) -> None:
    sim = PtyModem(tmp_path / "ttyGSM", pin="1234")
    sim.open()
    wrong = GsmModem(str(tmp_path / "ttyGSM"), VirtualClock(), timeout=0.5, pin="0000")
    try:
        with pytest.raises(CommandError):
            await wrong.connect()
        with pytest.raises(CommandError):
            await wrong.connect()
        # A refused PIN is entered once, never again (three wrong ones lock the SIM).
        assert sim.commands.count("AT+CPIN=<pin>") == 1
        assert "0000" not in wrong.last_error
    finally:
        await wrong.close()
    sim.reappear()  # a fresh boot: PIN not entered
    right = GsmModem(str(tmp_path / "ttyGSM"), VirtualClock(), timeout=0.5, pin="1234")
    try:
        await right.connect()
        assert (await right.check_health()).registered
    finally:
        await right.close()
        sim.close()


# ------------------------------------------------------------------ reading what people text


async def test_reading_lists_decodes_and_deletes(rig: Rig) -> None:
    rig.sim.deliver("+8613800000011", "确认 7K3Q")
    rig.sim.deliver("13800000012", "1 7k3q", gsm7=True)
    stored = await rig.modem.list_messages()
    assert [(s.index, s.status, s.received) for s in stored] == [(1, 0, True), (2, 0, True)]
    assert [s.length for s in stored] == [len(bytes.fromhex(s.pdu)) - 9 for s in stored]  # SMSC: 9 octets
    texts = [(decode_deliver(s.pdu).number, decode_deliver(s.pdu).text) for s in stored]
    assert texts == [("+8613800000011", "确认 7K3Q"), ("13800000012", "1 7k3q")]
    assert [s.status for s in await rig.modem.list_messages()] == [1, 1]  # listed once: now read
    for s in stored:
        await rig.modem.delete_message(s.index)
    await rig.modem.delete_message(1)  # already gone: +CMS ERROR: 321 is not an error
    assert rig.sim.inbox == {} and rig.sim.deleted == [1, 2]
    assert await rig.modem.list_messages() == []


async def test_reading_is_set_up_once_per_session(rig: Rig) -> None:
    await rig.modem.list_messages()
    await rig.modem.list_messages()
    setup = ["AT+CNMI=2,1,0,0,0", "AT+CPMS?"]
    assert rig.sim.commands[4:] == [*setup, "AT+CMGL=4", "AT+CMGL=4"]
    assert (rig.modem.storage.name, rig.modem.storage.used, rig.modem.storage.total) == ("SM", 0, 30)
    rig.sim.vanish()
    rig.sim.reappear()
    with pytest.raises(TransportError):
        await rig.modem.list_messages()  # the old port is dead: closed, reopened next time
    rig.sim.deliver("+8613800000011", "1 7K3Q")  # announced with +CMTI: the driver ignores it
    assert len(await rig.modem.list_messages()) == 1
    assert rig.sim.commands[-3:] == [*setup, "AT+CMGL=4"]


async def test_messages_stored_elsewhere_are_read_from_there(rig: Rig) -> None:
    rig.sim.storage_name = "ME"  # this modem keeps what it receives in its own memory
    rig.sim.read_storage = "SM"
    rig.sim.deliver("+8613800000011", "1 7K3Q")
    assert rig.sim.inbox == {}
    (stored,) = await rig.modem.list_messages()
    assert 'AT+CPMS="ME"' in rig.sim.commands and decode_deliver(stored.pdu).text == "1 7K3Q"
    assert rig.modem.storage.name == "ME"


async def test_a_modem_that_refuses_the_set_up_still_reads(rig: Rig) -> None:
    rig.sim.lte = True
    original = rig.sim._command

    def refuse(raw: str) -> None:
        if raw.upper().startswith(("AT+CNMI", "AT+CPMS")):
            rig.sim.state.commands.append(raw)
            rig.sim._error(302, cms=True)
        else:
            original(raw)

    rig.sim._command = refuse  # type: ignore[method-assign]
    rig.sim.deliver("+8613800000011", "1 7K3Q")
    assert len(await rig.modem.list_messages()) == 1
