"""``sensegate users set-password | list`` and ``sensegate tokens create | revoke | list``: who may
sign in to the console (值班台) and which integrations may call its API (docs/console.md).

People are the site config's staff and registered visitors: the config says who they are and
what role they have; the store keeps only the argon2 hash of their password. A token is printed
once, when created; the store keeps its SHA-256. With ``--mqtt`` it is an MQTT signing key
instead (``sgk_…``): the integration signs alert commands with it (HMAC-SHA256,
gateway/alerts/commands.py) and the store keeps the key itself, since the gateway computes the
same MAC. All take effect on the running gateway at once (it reads the store at every sign-in,
request and command)."""

from __future__ import annotations

import argparse
import getpass
import re
import secrets
import sys
import time
from datetime import datetime
from typing import Any

from edge_rules.schedule import zone
from gateway.errors import SenseGateError
from gateway.site.config import SiteConfig, load_config, site_rules
from gateway.site.console import ConsoleRole
from gateway.site.validation import ID_PATTERN
from gateway.store import Store
from gateway.web.auth import hash_password, people_who_sign_in, person_identity
from gateway.web.i18n import ROLE_EN

TOKEN_PREFIX = "sgt_"  # recognisable in a leaked file or a secret scanner
MQTT_KEY_PREFIX = "sgk_"


def add_parser(sub: Any) -> None:
    us = sub.add_parser("users", help="console sign-in: set a password, list who may sign in").add_subparsers(
        dest="users_command", required=True
    )
    sp = us.add_parser(
        "set-password",
        help="set (or change) the console password of a staff member or registered visitor",
        description="Set the console (值班台) password of a staff or visitor id from the site config; asks "
        "twice, or reads one line from standard input with --password-stdin. Signs that person out everywhere.",
    )
    sp.add_argument("-c", "--config", required=True)
    sp.add_argument("id", help="a [[staff]] or [[visitors]] id")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    sp.set_defaults(func=cmd_set_password)
    ul = us.add_parser("list", help="who may sign in, their role and whether they have a password")
    ul.add_argument("-c", "--config", required=True)
    ul.set_defaults(func=cmd_users_list)

    tk = sub.add_parser("tokens", help="API tokens for integrations: create, revoke, list").add_subparsers(
        dest="tokens_command", required=True
    )
    tc = tk.add_parser(
        "create",
        help="create an API token, or an MQTT signing key with --mqtt (printed once)",
        description="Create an API token for one integration; the audit trail records its actions as "
        "token:<name>. The token is printed once: keep it in the integration's secret store. With --mqtt, "
        "a key to sign alert commands over MQTT instead (HMAC-SHA256, docs/interfaces.md): the store "
        "keeps it as it is (its file is 0600), and it is no bearer token for the console's API.",
    )
    tc.add_argument("-c", "--config", required=True)
    tc.add_argument("name", help="the integration, e.g. home-assistant (letters, digits, . _ -)")
    tc.add_argument("--role", required=True, choices=[r.value for r in ConsoleRole])
    tc.add_argument("--mqtt", action="store_true", help="an MQTT signing key (sgk_…) instead of an API token")
    tc.set_defaults(func=cmd_token_create)
    tr = tk.add_parser("revoke", help="revoke an API token at once")
    tr.add_argument("-c", "--config", required=True)
    tr.add_argument("name")
    tr.set_defaults(func=cmd_token_revoke)
    tl = tk.add_parser("list", help="tokens, their roles, when created and revoked")
    tl.add_argument("-c", "--config", required=True)
    tl.set_defaults(func=cmd_token_list)


def _store(config_path: str) -> tuple[SiteConfig, Store]:
    from gateway.runtime import open_store  # the runtime's modules load only for a command that needs them

    config = load_config(config_path)
    return config, open_store(config)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("new password: ")
    if getpass.getpass("again: ") != first:
        raise SenseGateError("the two passwords differ; nothing changed")
    return first


def cmd_set_password(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    who = person_identity(config, args.id)
    if who is None:
        known = ", ".join(i.actor for i in people_who_sign_in(config)[:8]) or "none in this config"
        raise SenseGateError(f"{args.id!r} is no staff or visitor id in {args.config} (known: {known})")
    password = _read_password(args.password_stdin)
    try:
        hashed = hash_password(password)
    except ValueError as exc:
        raise SenseGateError(str(exc)) from None
    from gateway.runtime import open_store

    store = open_store(config)
    try:
        store.set_password_hash(who.actor, hashed, time.time())
    finally:
        store.close()
    print(f"password set for {who.actor} ({who.name}, {who.role.label_zh} / {ROLE_EN[who.role.value]})")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    config, store = _store(args.config)
    tz = zone(site_rules(config).settings.timezone)
    try:
        rows = {u.id: u for u in store.users()}
    finally:
        store.close()
    people = people_who_sign_in(config)
    for who in people:
        row = rows.pop(who.actor, None)
        since = (
            f"password set {_when(row.updated_at, tz)}"
            if row
            else f"no password (sensegate users set-password {who.actor})"
        )
        scope = (
            "households " + ",".join(sorted(who.households))
            if who.households is not None
            else "buildings " + ",".join(sorted(who.buildings))
            if who.buildings is not None
            else "every building"
        )
        print(f"{who.actor:<16} {who.name:<8} {ROLE_EN[who.role.value]:<17} {scope:<24} {since}")
    for user_id in rows:  # a password left behind by someone removed from the config
        print(f"{user_id:<16} (no longer in the config: cannot sign in)")
    if not people:
        print("nobody: the config has no [[staff]] or [[visitors]]")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    if not re.fullmatch(ID_PATTERN, args.name) or len(args.name) > 64:
        raise SenseGateError(f"token name {args.name!r}: letters, digits, '.', '_' or '-', at most 64 characters")
    _, store = _store(args.config)
    # 256 random bits, base64url: no guessing, and no character a shell or JSON needs to escape.
    secret = (MQTT_KEY_PREFIX if args.mqtt else TOKEN_PREFIX) + secrets.token_urlsafe(32)
    add = store.add_mqtt_key if args.mqtt else store.add_api_token
    try:
        if not add(args.name, secret, args.role, time.time()):
            raise SenseGateError(f"a token named {args.name!r} exists or existed; names are never reused")
    finally:
        store.close()
    what = "MQTT signing key (key_id " + args.name + ")" if args.mqtt else "token " + args.name
    print(f"{what} ({args.role}); shown once, keep it secret:", file=sys.stderr)
    print(secret)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    _, store = _store(args.config)
    try:
        if not store.revoke_api_token(args.name, time.time()):
            raise SenseGateError(f"no active token named {args.name!r}")
    finally:
        store.close()
    print(f"revoked {args.name}")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    config, store = _store(args.config)
    tz = zone(site_rules(config).settings.timezone)
    try:
        tokens = store.api_tokens()
        mqtt = store.mqtt_key_names()
    finally:
        store.close()
    for t in tokens:
        state = "active" if t.active else f"revoked {_when(t.revoked_at, tz)}"
        kind = "mqtt key" if t.name in mqtt else "api token"
        print(f"{t.name:<24} {kind:<9} {t.role:<17} created {_when(t.created_at, tz)}  {state}")
    if not tokens:
        print("no tokens")
    return 0


def _when(t: float | None, tz: Any) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M")
