"""The signed one-tap link tokens (gateway/alerts/links.py): bound to one alert, one person and a
time; the key is made once and kept in the store."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.alerts.links import KEY_META, AckLinks, LinkError, LinkSigner, group_of, store_key
from gateway.store import Store

KEY = bytes(range(32))
NOW = 1_767_225_600.0


def test_a_token_says_alert_person_and_expiry_and_nothing_else_verifies() -> None:
    signer = LinkSigner(KEY)
    token = signer.token("c136b74955b8", "s-li", int(NOW) + 3600)
    claim = signer.verify("c136b74955b8", token, NOW)
    assert (claim.alert_id, claim.person, claim.expires_at, claim.is_group) == (
        "c136b74955b8",
        "s-li",
        NOW + 3600,
        False,
    )
    with pytest.raises(LinkError) as err:
        signer.verify("9f3a01c2aaaa", token, NOW)  # another alert
    assert err.value.reason == "bad" and err.value.claim is None
    with pytest.raises(LinkError) as err:
        LinkSigner(bytes(32)).verify("c136b74955b8", token, NOW)  # another gateway's key
    assert err.value.reason == "bad"
    # The person and the expiry are signed: rewriting them inside the token breaks it.
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for i, value in ((1, raw[1] + 1), (5, ord("x"))):
        forged = bytearray(raw)
        forged[i] = value % 256
        text = base64.urlsafe_b64encode(bytes(forged)).rstrip(b"=").decode()
        with pytest.raises(LinkError):
            signer.verify("c136b74955b8", text, NOW)
    with pytest.raises(LinkError) as err:
        signer.verify("c136b74955b8", token, NOW + 3600)  # expired at the second it ends
    assert err.value.reason == "expired" and err.value.claim is not None and err.value.claim.person == "s-li"


def test_group_links_name_their_channel() -> None:
    signer = LinkSigner(KEY)
    claim = signer.verify("c136b74955b8", signer.token("c136b74955b8", group_of("wecom-property"), int(NOW) + 60), NOW)
    assert claim.is_group and claim.channel == "wecom-property"


def test_links_are_short_enough_for_an_sms() -> None:
    links = AckLinks(LinkSigner(KEY), "https://sensegate.local:8480/", 24)
    url = links.url("c136b74955b8", "contact:r-502:1", NOW)
    assert url.startswith("https://sensegate.local:8480/ack/c136b74955b8/") and len(url) <= 100
    assert links.signer.verify("c136b74955b8", url.rsplit("/", 1)[1], NOW + 23 * 3600).person == "contact:r-502:1"


def test_the_key_is_made_once_and_survives_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.db")
    assert store.meta(KEY_META) is None
    key = store_key(store)
    assert len(key) == 32 and store_key(store) == key
    token = LinkSigner(key).token("c136b74955b8", "s-li", int(NOW) + 60)
    store.close()
    again = Store(tmp_path / "store.db")
    assert LinkSigner(store_key(again)).verify("c136b74955b8", token, NOW).person == "s-li"
    again.close()


@given(garbage=st.text(max_size=200))
def test_garbage_is_a_bad_link_never_a_crash(garbage: str) -> None:
    with pytest.raises(LinkError):
        LinkSigner(KEY).verify("c136b74955b8", garbage, NOW)
