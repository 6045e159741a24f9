"""The duty desk in-process (httpx against the ASGI app, a virtual clock): who gets in, how hard
a wrong password is made, CSRF, what each role sees and may do, and that the audit trail names
the person who signed in or the token — never a name from the request."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from starlette.routing import Mount, Route

from gateway.alerts.commands import apply_command
from gateway.models import AlertState
from gateway.web.auth import BASE_DELAY, FREE_FAILURES
from gateway.web.console import CSP, MAX_BODY
from tests.web.helpers import PASSWORD, Desk, desk, form_token, sign_in, two_buildings

OPEN = {"/healthz", "/login", "/static"}
LINKS = {"/ack/{alert_id}/{token}"}  # a one-tap link: its signed token is the credential (test_onetap.py)


def _acts(d: Desk, alert_id: str) -> list[tuple[str, str, str]]:
    return [
        (r.action, r.actor, r.channel) for r in d.store.alert_log(alert_id) if r.action in ("acknowledged", "resolved")
    ]


async def test_nothing_but_the_login_page_static_files_and_healthz_answers_without_a_session_or_token(
    tmp_path: Path,
) -> None:
    d = desk(tmp_path)
    alert = d.raise_sos()
    routes = d.console.asgi.app.app.routes  # type: ignore[attr-defined]
    checked = 0
    async with d.client() as client:
        for route in routes:
            if isinstance(route, Mount):
                r = await client.get(f"{route.path}/console.js")
                assert r.status_code == 200 and "javascript" in r.headers["content-type"]
                continue
            assert isinstance(route, Route)
            path = route.path.format(
                alert_id=alert.id,
                action="ack",
                lang="en",
                token="not-a-signed-token",
                mode_id=1,
                commission_id=1,
                fmt="html",
                building_id="1",
                household_id="1-1-101",
            )
            for method in sorted(route.methods or {"GET"}):
                if method == "HEAD":
                    continue
                r = await client.request(method, path, headers={"Authorization": "Bearer not-a-token"})
                checked += 1
                if route.path in OPEN:
                    assert r.status_code in (200, 400), (method, path, r.status_code)  # 400: a login without its form
                elif route.path in LINKS:
                    assert r.status_code == 403 and "链接无效" in r.text, (method, path, r.status_code)
                elif path.startswith("/api/") or path == "/events":
                    assert r.status_code == 401, (method, path, r.status_code)
                else:
                    assert r.status_code == 303, (method, path, r.status_code)
                    assert r.headers["location"].startswith("/login"), (method, path)
    assert checked >= 12
    assert d.store.alert(alert.id).state is AlertState.RAISED  # type: ignore[union-attr]


async def test_sign_in_sets_a_strict_http_only_session_and_sign_out_ends_it(tmp_path: Path) -> None:
    d = desk(tmp_path)
    d.set_password("s-li")
    async with d.client() as client:
        r = await sign_in(client, "s-li")
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("sg_session="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
        board = await client.get("/")
        assert board.status_code == 200 and "李值班" in board.text and "值班人员" in board.text
        r = await client.post("/logout", data={"csrf": form_token(board.text)})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert (await client.get("/")).status_code == 303


async def test_over_tls_the_session_cookie_is_secure_and_host_only(tmp_path: Path) -> None:
    site = two_buildings()
    site["console"] = {"enabled": True, "tls_cert": "/etc/sensegate/console.pem", "tls_key": "/etc/sensegate/key.pem"}
    d = desk(tmp_path, site)
    d.set_password("s-li")
    async with d.client(https=True) as client:
        r = await sign_in(client, "s-li")
        cookie = next(c for c in r.headers.get_list("set-cookie") if "sg_session=" in c)
        assert cookie.startswith("__Host-sg_session=") and "Secure" in cookie and "HttpOnly" in cookie
        assert "Domain" not in cookie and "Path=/" in cookie
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert (await client.get("/")).status_code == 200


async def test_ten_wrong_passwords_slow_the_next_attempt_down_even_a_right_one(tmp_path: Path) -> None:
    d = desk(tmp_path)
    d.set_password("s-li")
    async with d.client() as client:
        for _ in range(FREE_FAILURES):
            r = await sign_in(client, "s-li", "wrong password")
            assert r.status_code == 401 and "工号或密码不正确" in r.text
        r = await sign_in(client, "s-li")  # the right password, too soon: not even checked
        assert r.status_code == 429 and int(r.headers["retry-after"]) == BASE_DELAY
        assert "请 30 秒后再试" in r.text
        await d.clock.advance(BASE_DELAY + 1)
        r = await sign_in(client, "s-li", "wrong again")  # one more failure: the wait doubles
        assert r.status_code == 401
        r = await sign_in(client, "s-li")
        assert r.status_code == 429 and int(r.headers["retry-after"]) == 2 * BASE_DELAY
        await d.clock.advance(2 * BASE_DELAY + 1)
        assert (await sign_in(client, "s-li")).status_code == 303  # and success clears the count
        assert (await client.get("/")).status_code == 200


async def test_the_limit_holds_per_account_from_another_client_and_per_client_for_another_account(
    tmp_path: Path,
) -> None:
    d = desk(tmp_path)
    d.set_password("s-li")
    d.set_password("s-wang")
    async with d.client("10.0.0.7") as attacker, d.client("10.0.0.8") as office, d.client("10.0.0.9") as other:
        for user in ("s-li", "nobody-at-all") * (FREE_FAILURES // 2):
            assert (await sign_in(attacker, user, "guess")).status_code == 401
        assert (await sign_in(attacker, "s-wang")).status_code == 429  # this client: slowed, any account
        for _ in range(FREE_FAILURES // 2):
            assert (await sign_in(other, "s-li", "guess")).status_code == 401
        assert (await sign_in(office, "s-li")).status_code == 429  # this account: slowed, any client
        assert (await sign_in(office, "s-wang")).status_code == 303  # another account from another client


async def test_a_login_without_its_form_token_is_refused(tmp_path: Path) -> None:
    d = desk(tmp_path)
    d.set_password("s-li")
    async with d.client() as client:
        r = await client.post("/login", data={"user": "s-li", "password": PASSWORD, "csrf": "forged"})
        assert r.status_code == 400 and "sg_session" not in r.headers.get("set-cookie", "")


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    d = desk(tmp_path)
    d.set_password("s-li")
    alert = d.raise_sos()
    async with d.client() as client:
        await sign_in(client, "s-li")
        for data in ({}, {"csrf": "forged"}):
            r = await client.post(f"/alerts/{alert.id}/ack", data=data)
            assert r.status_code == 403
        r = await client.post(f"/api/v1/alerts/{alert.id}/ack", json={})
        assert r.status_code == 403 and "X-CSRF-Token" in r.json()["error"]
        r = await client.post("/logout", data={"csrf": "forged"})
        assert r.status_code == 403
    assert d.store.alert(alert.id).state is AlertState.RAISED  # type: ignore[union-attr]
    assert _acts(d, alert.id) == []


async def test_an_ack_from_the_board_records_the_signed_in_person_and_a_resolve_needs_a_note(tmp_path: Path) -> None:
    d = desk(tmp_path)
    d.set_password("s-li")
    alert = d.raise_sos()
    async with d.client() as client:
        await sign_in(client, "s-li")
        board = await client.get("/")
        assert alert.id in board.text and 'data-alarm="1"' in board.text
        csrf = form_token(board.text)
        r = await client.post(f"/alerts/{alert.id}/ack", data={"csrf": csrf, "next": "/", "by": "s-boss"})
        assert r.status_code == 303 and r.headers["location"] == "/?notice=done"
        acked = d.store.alert(alert.id)
        assert acked is not None and acked.acked_by == "s-li" and acked.acked_via == "console"
        board = await client.get("/?notice=done")
        assert "确认人：李值班 (s-li)" in board.text and 'data-alarm="0"' in board.text and "已提交" in board.text
        r = await client.post(f"/alerts/{alert.id}/resolve", data={"csrf": csrf, "note": " "})
        assert r.status_code == 400
        r = await client.post(
            f"/alerts/{alert.id}/resolve",
            data={"csrf": csrf, "note": "已上门，老人无碍", "next": f"/alerts/{alert.id}"},
            headers={"Accept": "application/json"},
        )
        assert r.status_code == 200 and r.json()["alert"]["resolve_note"] == "已上门，老人无碍"
        page = await client.get(f"/alerts/{alert.id}")
        assert "处置记录" in page.text and "已上门，老人无碍" in page.text and "李值班 (s-li)" in page.text
    assert _acts(d, alert.id) == [("acknowledged", "s-li", "console"), ("resolved", "s-li", "console")]


async def test_a_session_may_use_the_json_api_with_its_csrf_header(tmp_path: Path) -> None:
    d = desk(tmp_path)
    d.set_password("s-boss")
    alert = d.raise_sos()
    async with d.client() as client:
        await sign_in(client, "s-boss")
        csrf = form_token((await client.get("/")).text)
        r = await client.post(
            f"/api/v1/alerts/{alert.id[:6]}/ack", json={"note": "在路上"}, headers={"X-CSRF-Token": csrf}
        )
        assert r.status_code == 200 and r.json()["alert"]["acked_by"] == "s-boss"
    assert _acts(d, alert.id) == [("acknowledged", "s-boss", "console")]


async def test_a_token_acts_as_itself_a_by_in_the_body_is_refused_and_a_revoked_token_is_not_let_in(
    tmp_path: Path,
) -> None:
    d = desk(tmp_path)
    alert = d.raise_sos()
    d.store.add_api_token("ha", "sgt_secret-one-0123456789abcdef", "duty", d.clock.now())
    auth = {"Authorization": "Bearer sgt_secret-one-0123456789abcdef"}
    async with d.client() as client:
        r = await client.get("/api/v1/alerts", headers=auth)
        assert r.status_code == 200 and [a["id"] for a in r.json()["alerts"]] == [alert.id]
        r = await client.post(f"/api/v1/alerts/{alert.id}/ack", json={"by": "s-li"}, headers=auth)
        assert r.status_code == 400 and "by is not accepted" in r.json()["error"]
        r = await client.post(f"/api/v1/alerts/{alert.id}/ack", json={"note": "HA 自动化"}, headers=auth)
        assert r.status_code == 200 and r.json()["alert"]["acked_by"] == "token:ha"
        assert r.json()["alert"]["acked_via"] == "api"
        assert (await client.get("/", headers=auth)).status_code == 303  # a token is not a person: no pages
        d.store.revoke_api_token("ha", d.clock.now())
        r = await client.get("/api/v1/alerts", headers=auth)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = await client.post(f"/api/v1/alerts/{alert.id}/resolve", json={}, headers=auth)
        assert r.status_code == 401
    assert _acts(d, alert.id) == [("acknowledged", "token:ha", "api")]
    # A claim (CLI, MQTT) cannot name a token, even a live one.
    d.store.add_api_token("bot", "sgt_secret-two-0123456789abcdef", "manager", d.clock.now())
    claim = apply_command(d.alerts, {"action": "resolve", "alert": alert.id, "by": "token:bot", "via": "mqtt"})
    assert not claim["ok"] and claim["reason"] == "unknown_person"
    assert d.store.alert(alert.id).is_open  # type: ignore[union-attr]


async def test_duty_staff_see_and_act_on_their_buildings_only(tmp_path: Path) -> None:
    d = desk(tmp_path)
    d.set_password("s-li")
    mine, theirs = d.raise_sos("101-sos"), d.raise_sos("201-sos")
    async with d.client() as client:
        await sign_in(client, "s-li")
        board = await client.get("/")
        assert mine.id in board.text and theirs.id not in board.text
        csrf = form_token(board.text)
        assert (await client.get(f"/alerts/{theirs.id}")).status_code == 404
        r = await client.post(f"/alerts/{theirs.id}/ack", data={"csrf": csrf}, headers={"Accept": "application/json"})
        assert r.status_code == 404
        r = await client.get("/api/v1/alerts")
        assert [a["id"] for a in r.json()["alerts"]] == [mine.id]
    assert d.store.alert(theirs.id).acked_by == ""  # type: ignore[union-attr]


async def test_a_visitor_sees_the_households_they_look_after(tmp_path: Path) -> None:
    d = desk(tmp_path)
    d.set_password("v-zhang")
    mine, theirs = d.raise_sos("101-sos"), d.raise_sos("201-sos")
    async with d.client() as client:
        await sign_in(client, "v-zhang")
        board = await client.get("/")
        assert mine.id in board.text and theirs.id not in board.text and "社区工作者" in board.text


async def test_an_installer_sees_every_alert_but_acts_only_on_maintenance_tickets(tmp_path: Path) -> None:
    d = desk(tmp_path)
    d.set_password("s-fix")
    sos = d.raise_sos("201-sos")
    async with d.client() as client:
        await sign_in(client, "s-fix")
        board = await client.get("/")
        assert sos.id in board.text and "仅可查看" in board.text and f"/alerts/{sos.id}/ack" not in board.text
        csrf = form_token(board.text)
        r = await client.post(f"/alerts/{sos.id}/ack", data={"csrf": csrf}, headers={"Accept": "application/json"})
        assert r.status_code == 403 and r.json()["reason"] == "forbidden"
    assert _acts(d, sos.id) == []


async def test_security_headers_on_every_response(tmp_path: Path) -> None:
    d = desk(tmp_path)
    async with d.client() as client:
        answers = [
            await client.get("/login"),
            await client.get("/healthz"),
            await client.get("/static/console.css"),
            await client.get("/no-such-page"),
            await client.get("/api/v1/alerts"),
            await client.post("/login", content=b"x" * (MAX_BODY + 1)),
        ]
    assert [r.status_code for r in answers] == [200, 200, 200, 404, 401, 413]
    for r in answers:
        assert r.headers["content-security-policy"] == CSP and "script-src 'self'" in CSP
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "server" not in r.headers
    assert answers[0].headers["cache-control"] == "no-store"
    # No inline script or style anywhere: the CSP would refuse them.
    assert not re.search(r"<script(?![^>]*\bsrc=)|\sstyle=|\son[a-z]+=", answers[0].text)


async def test_bad_bodies_get_4xx(tmp_path: Path) -> None:
    d = desk(tmp_path)
    alert = d.raise_sos()
    d.store.add_api_token("t", "sgt_t-0123456789abcdefghijklmn", "manager", d.clock.now())
    auth = {"Authorization": "Bearer sgt_t-0123456789abcdefghijklmn"}
    async with d.client() as client:
        r = await client.post(f"/api/v1/alerts/{alert.id}/ack", content=b"{not json", headers=auth)
        assert r.status_code == 400
        r = await client.post(f"/api/v1/alerts/{alert.id}/ack", json=["a list"], headers=auth)
        assert r.status_code == 400
        r = await client.post(f"/api/v1/alerts/{alert.id}/ack", content=b"{" + b" " * MAX_BODY + b"}", headers=auth)
        assert r.status_code == 413
        r = await client.post(f"/api/v1/alerts/{alert.id}/frobnicate", json={}, headers=auth)
        assert r.status_code == 404
        r = await client.post("/api/v1/alerts/ffffffffffff/ack", json={}, headers=auth)
        assert r.status_code == 404
        assert (await client.post(f"/api/v1/alerts/{alert.id}/resolve", json={}, headers=auth)).status_code == 200
        r = await client.post(f"/api/v1/alerts/{alert.id}/resolve", json={}, headers=auth)
        assert r.status_code == 409 and r.json()["reason"] == "already_resolved"


async def test_the_openapi_description_names_exactly_the_json_api(tmp_path: Path) -> None:
    d = desk(tmp_path)
    d.store.add_api_token("t", "sgt_t-0123456789abcdefghijklmn", "duty", d.clock.now())
    routes = d.console.asgi.app.app.routes  # type: ignore[attr-defined]
    api = {
        (r.path.replace("{action}", verb), m.lower())
        for r in routes
        if isinstance(r, Route) and r.path.startswith("/api/v1/")
        for m in (r.methods or ()) - {"HEAD"}
        for verb in (("ack", "resolve") if "{action}" in r.path else ("",))
    }
    async with d.client() as client:
        assert (await client.get("/api/openapi.json")).status_code == 401
        doc = (
            await client.get("/api/openapi.json", headers={"Authorization": "Bearer sgt_t-0123456789abcdefghijklmn"})
        ).json()
    described = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert doc["openapi"].startswith("3.1") and described == api


async def test_a_session_ends_after_session_hours_and_with_a_new_password(tmp_path: Path) -> None:
    d = desk(tmp_path)
    d.set_password("s-li")
    async with d.client() as client:
        await sign_in(client, "s-li")
        await d.clock.advance(d.config.console.session_hours * 3600 - 60)
        assert (await client.get("/")).status_code == 200
        await d.clock.advance(61)
        assert (await client.get("/")).status_code == 303
        await sign_in(client, "s-li")
        assert (await client.get("/")).status_code == 200
        d.set_password("s-li", "a brand new one")
        assert (await client.get("/")).status_code == 303


async def test_the_language_toggle_before_and_after_signing_in(tmp_path: Path) -> None:
    d = desk(tmp_path)
    d.set_password("s-li")
    alert = d.raise_sos()
    async with d.client() as client:
        r = await client.get("/lang/en?next=/")
        assert r.status_code == 303 and r.headers["location"].startswith("/login?lang=en")
        r = await client.get("/login?lang=en", follow_redirects=True)
        assert "Sign in" in r.text and "sg_lang" in client.cookies
        await sign_in(client, "s-li")
        board = await client.get("/")
        assert "Open alerts" in board.text and "critical" in board.text and "SOS" in board.text
        r = await client.get(f"/lang/zh?next=/alerts/{alert.id}")
        assert r.headers["location"] == f"/alerts/{alert.id}"
        assert "处置经过" in (await client.get(f"/alerts/{alert.id}")).text
        r = await client.get("/lang/zh?next=//evil.example/")
        assert r.headers["location"] == "/"


async def test_no_password_hash_or_secret_reaches_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    d = desk(tmp_path)
    d.set_password("s-li")
    alert = d.raise_sos()
    d.store.add_api_token("ha", "sgt_do-not-log-me-0123456789abcd", "duty", d.clock.now())
    async with d.client() as client:
        await sign_in(client, "s-li", "wrong-secret-pw")
        await sign_in(client, "wrong-secret-in-id-field", "wrong-secret-pw2")
        r = await sign_in(client, "s-li")
        session = r.cookies.get("sg_session") or client.cookies.get("sg_session")
        csrf = form_token((await client.get("/")).text)
        await client.post(f"/alerts/{alert.id}/ack", data={"csrf": csrf})
        await client.get("/api/v1/alerts", headers={"Authorization": "Bearer sgt_do-not-log-me-0123456789abcd"})
    text = caplog.text
    assert "failed sign-in as 's-li'" in text and "failed sign-in as an unknown id" in text
    assert "s-li signed in" in text and f"ack {alert.id} by s-li via console: ok" in text
    hashed = d.store.user("s-li")
    assert hashed is not None and session
    for secret in (
        PASSWORD,
        "wrong-secret",
        hashed.password_hash,
        "$argon2",
        "sgt_do-not-log-me-0123456789abcd",
        session,
        csrf,
    ):
        assert secret not in text


def test_console_settings_are_checked_and_notify_api_points_to_the_console() -> None:
    from gateway.errors import ConfigError
    from gateway.site.config import parse_config

    for console, expected in (
        ({"tls_cert": "/etc/c.pem"}, "tls_cert and tls_key together"),
        ({"tls_cert": "c.pem", "tls_key": "/etc/k.pem"}, "an absolute path"),
        ({"session_hours": 0}, "console.session_hours"),
        ({"bind": "0.0.0.0"}, "unknown key 'bind'"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config({**two_buildings(), "console": console})
        assert expected in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({**two_buildings(), "notify": {"api": {"port": 8480, "token": "s3cret"}}})
    assert "sensegate tokens create" in str(err.value) and "s3cret" not in str(err.value)
