"""Signed alert commands (gateway/alerts/commands.py): the canonical JSON and the MAC, the test
vector of docs/interfaces.md, and every way ``verify_command`` refuses a sender it cannot prove.
Through a running gateway and a real broker: tests/gateway/test_alerts_ack.py and
tests/gateway/test_mosquitto_acl.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.alerts.commands import MAX_SKEW, canonical, command_mac, sign_command, verify_command
from gateway.cli.app import main as cli
from gateway.errors import PayloadError, UnauthenticatedError
from gateway.store import Store
from tests.gateway.test_users_cli import _config_file, _store

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_795_322_400.0
KEY = "sgk_TEST-ONLY-never-use-this-key-0123456789"
ALERT = "c136b74955b8"

# The worked example of docs/interfaces.md ("Signed commands").
VECTOR = {
    "action": "ack",
    "alert": ALERT,
    "note": "在路上",
    "request_id": "42",
    "key_id": "ha-block3",
    "ts": 1795322400,
    "nonce": "f3c1e0a94b7d2c58e6a1b9d0c4f7e213",
}
VECTOR_CANONICAL = (
    '{"action":"ack","alert":"c136b74955b8","key_id":"ha-block3","nonce":"f3c1e0a94b7d2c58e6a1b9d0c4f7e213",'
    '"note":"在路上","request_id":"42","ts":1795322400}'
)
VECTOR_MAC = "4031a5cdee11dbb200221815e3c8d2f93bed6a857b5410e5c41be89d93a46137"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store.sqlite3")
    s.add_mqtt_key("ha-block3", KEY, "duty", NOW - 86400)
    yield s
    s.close()


def verify(store: Store, payload: dict[str, object] | str, now: float = NOW) -> dict[str, object]:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    command, _ = verify_command(text, now, store.mqtt_key, store.nonce_used)
    return command


def signed(**fields: object) -> dict[str, object]:
    command = {"action": "ack", "alert": ALERT, "note": "在路上", "request_id": "42", **fields}
    return sign_command(command, "ha-block3", KEY, int(NOW))


def test_the_test_vector_of_the_docs() -> None:
    assert canonical(VECTOR).decode("utf-8") == VECTOR_CANONICAL
    assert command_mac(KEY, VECTOR) == VECTOR_MAC
    assert canonical({**VECTOR, "mac": VECTOR_MAC}) == canonical(VECTOR)  # mac is not in what it signs
    doc = (ROOT / "docs" / "interfaces.md").read_text(encoding="utf-8")
    for text in (VECTOR_CANONICAL, VECTOR_MAC, KEY):
        assert text in doc


def test_a_signed_command_acts_as_its_key_via_mqtt_and_its_nonce_is_returned(store: Store) -> None:
    payload = json.dumps({**VECTOR, "mac": VECTOR_MAC}, ensure_ascii=False)
    command, nonce = verify_command(payload, NOW + 59, store.mqtt_key, store.nonce_used)
    assert command == {
        "action": "ack",
        "alert": ALERT,
        "by": "token:ha-block3",
        "note": "在路上",
        "via": "mqtt",
        "request_id": "42",
    }
    assert nonce == ("ha-block3", VECTOR["nonce"], 1795322400.0)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        # Issue 13: anyone on the broker, a 4-character prefix, a name to act in.
        ({"action": "resolve", "alert": "49db", "by": "s-li"}, "unsigned"),
        ({"action": "resolve", "alert": ALERT, "by": "s-li", "key_id": "ha-block3", "ts": int(NOW)}, "unsigned"),
        ({**signed(), "ts": str(int(NOW))}, "unsigned"),
        ({**signed(), "ts": True}, "unsigned"),
        ({**signed(), "nonce": "short"}, "unsigned"),
        ({**signed(), "key_id": "nobody"}, "unknown_key"),
        ({**signed(), "action": "resolve"}, "bad_mac"),  # changed after signing
        ({**signed(), "mac": VECTOR_MAC.upper()}, "bad_mac"),
        ({**signed(), "mac": "é" * 64}, "bad_mac"),
        (sign_command({"action": "ack", "alert": ALERT}, "ha-block3", "sgk_" + "x" * 40, int(NOW)), "bad_mac"),
        (sign_command({"action": "ack", "alert": ALERT}, "ha-block3", KEY, int(NOW - MAX_SKEW - 1)), "clock"),
        (sign_command({"action": "ack", "alert": ALERT}, "ha-block3", KEY, int(NOW + MAX_SKEW + 1)), "clock"),
    ],
)
def test_a_sender_not_proved_is_refused_as_unauthenticated(store: Store, payload: dict[str, object], why: str) -> None:
    with pytest.raises(UnauthenticatedError) as refused:
        verify(store, payload)
    assert refused.value.why == why and refused.value.reason == "unauthenticated"


def test_a_revoked_key_is_refused(store: Store) -> None:
    store.revoke_api_token("ha-block3", NOW - 1)
    with pytest.raises(UnauthenticatedError) as refused:
        verify(store, signed())
    assert refused.value.why == "revoked"


def test_a_nonce_is_taken_once_per_key_and_remembered_in_the_store(store: Store, tmp_path: Path) -> None:
    command = signed()
    verify(store, command)
    store.append([], {}, now=NOW, nonces=[("ha-block3", str(command["nonce"]), NOW)])
    store.close()
    reopened = Store(tmp_path / "store.sqlite3")  # a restart does not reopen the replay
    try:
        with pytest.raises(UnauthenticatedError) as refused:
            verify(reopened, command, NOW + 30)
        assert refused.value.why == "replayed"
        # Nonces are forgotten as new ones come, two minutes after their ts: the command is long
        # refused for its ts by then. The table stays as small as two minutes of commands.
        reopened.append([], {}, now=NOW + 121, nonces=[("ha-block3", "another-nonce-0123456789", NOW + 121)])
        assert not reopened.nonce_used("ha-block3", str(command["nonce"]))
        with pytest.raises(UnauthenticatedError, match="from the gateway's clock"):
            verify(reopened, command, NOW + 121)
    finally:
        reopened.close()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"by": "s-li"}, "no by: a signed command acts as token:ha-block3"),
        ({"alert": "c136b7"}, "full alert id"),
        ({"alert": ALERT.upper()}, "full alert id"),
        ({"action": "delete"}, "action must be one of ack, resolve"),
        ({"note": 5}, "note must be text"),
    ],
)
def test_a_proved_command_that_is_wrong_is_a_bad_command(store: Store, fields: dict[str, object], message: str) -> None:
    with pytest.raises(PayloadError, match=message) as refused:
        verify(store, signed(**fields))
    assert refused.value.reason == "bad_command" and not isinstance(refused.value, UnauthenticatedError)


def test_an_mqtt_key_is_no_bearer_token_and_shares_the_names_of_tokens(store: Store) -> None:
    assert store.api_token_by_secret(KEY) is None
    assert store.add_api_token("ha-block3", "sgt_" + "y" * 40, "duty", NOW) is False
    assert store.add_mqtt_key("ha-block3", "sgk_" + "z" * 40, "duty", NOW) is False
    with pytest.raises(ValueError, match="at least 26 characters"):
        store.add_mqtt_key("short", "sgk_short", "duty", NOW)
    assert store.mqtt_key_names() == {"ha-block3"}


def test_tokens_create_mqtt_prints_a_key_once_that_signs_but_is_no_bearer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config_file(tmp_path)
    assert cli(["tokens", "create", "-c", str(path), "ha-block3", "--role", "duty", "--mqtt"]) == 0
    captured = capsys.readouterr()
    key = captured.out.strip()
    assert key.startswith("sgk_") and len(key) == 4 + 43  # 256 random bits, base64url
    assert "MQTT signing key (key_id ha-block3) (duty); shown once" in captured.err
    assert cli(["tokens", "create", "-c", str(path), "ha-block3", "--role", "duty"]) == 1  # names never reused
    assert cli(["tokens", "list", "-c", str(path)]) == 0
    listed = capsys.readouterr().out
    assert "ha-block3" in listed and "mqtt key" in listed and key not in listed
    store = _store(path)
    try:
        assert store.api_token_by_secret(key) is None
        command, _ = verify_command(
            json.dumps(sign_command({"action": "ack", "alert": ALERT}, "ha-block3", key, int(NOW))),
            NOW,
            store.mqtt_key,
            store.nonce_used,
        )
        assert command["by"] == "token:ha-block3"
    finally:
        store.close()
    assert cli(["tokens", "revoke", "-c", str(path), "ha-block3"]) == 0
