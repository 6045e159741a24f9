"""Who is asking: people signed in with a password, integrations with an API token, and how hard
a wrong password is made to try again (docs/console.md).

- Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second recommended
  profile); the hash is all the store keeps. Verifying runs off the event loop, at most two at a
  time (each takes 64 MiB for a moment), and an unknown id costs as much as a known one, so the
  time taken does not say which ids exist.
- ``LoginLimiter``: after ``FREE_FAILURES`` wrong passwords within ``WINDOW`` from one client or
  for one account, the next attempt must wait ``base × 2^k`` seconds (capped): 429 with
  Retry-After, the password not even checked. The account's cap is lower than the client's: an
  attacker may slow the duty officer's sign-in by a minute, never lock them out for long.
- ``Identity``: the signed-in person (their config id, name and role) or a token (``token:<name>``),
  with the buildings or households they may see (``sees``) and act on (``may_act``).
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.alerts.path import TOKEN_ACTOR
from gateway.clock import Clock
from gateway.models import Alert, Severity
from gateway.site.config import SiteConfig
from gateway.site.console import STAFF_ROLES, VISITOR_ROLE, ConsoleRole

MIN_PASSWORD = 8
MAX_PASSWORD = 1024

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified when the id has no password, so that a wrong id takes as long as a wrong one."""
    return _hasher.hash("sensegate: no such account")


def hash_password(password: str) -> str:
    """The argon2id hash to store; ``ValueError`` if the password is too short or too long."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"a password has at most {MAX_PASSWORD} characters")
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; a missing hash is checked against a dummy (same cost)."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password[:MAX_PASSWORD]) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password_async(limit: asyncio.Semaphore, password_hash: str | None, password: str) -> bool:
    """``verify_password`` in a thread, at most ``limit`` at a time."""
    async with limit:
        return await asyncio.to_thread(verify_password, password_hash, password)


# ---------------------------------------------------------------------- rate limit

FREE_FAILURES = 10  # wrong passwords within WINDOW before each attempt must wait
WINDOW = 15 * 60.0
BASE_DELAY = 30.0  # the first wait, doubling with each further failure
MAX_DELAY_CLIENT = 15 * 60.0
MAX_DELAY_ACCOUNT = 5 * 60.0
MAX_KEYS = 10_000  # clients and accounts remembered at once (a flood must not grow memory)


@dataclass
class _Failures:
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    until: float = 0.0  # no attempt before this (monotonic)


@dataclass
class LoginLimiter:
    """Failed sign-ins per client address and per account, on the injected clock."""

    clock: Clock
    _clients: dict[str, _Failures] = field(default_factory=dict)
    _accounts: dict[str, _Failures] = field(default_factory=dict)

    def retry_after(self, client: str, account: str) -> float:
        """Seconds until this client may try this account again (0: now)."""
        now = self.clock.monotonic()
        waits = [f.until - now for f in self._current(client, account) if f is not None]
        return max([0.0, *waits])

    def failed(self, client: str, account: str) -> float:
        """Count a wrong password; returns the wait it brings on (0 while under the free count)."""
        now = self.clock.monotonic()
        wait = 0.0
        for table, key, cap in (
            (self._clients, client, MAX_DELAY_CLIENT),
            (self._accounts, account, MAX_DELAY_ACCOUNT),
        ):
            f = table.get(key)
            if f is None or now - f.last > WINDOW:
                if len(table) >= MAX_KEYS:
                    self._forget_stale(table, now)
                f = table[key] = _Failures(first=now)
            f.count += 1
            f.last = now
            if f.count >= FREE_FAILURES:
                delay = min(cap, BASE_DELAY * 2 ** min(f.count - FREE_FAILURES, 20))
                f.until = now + delay
                wait = max(wait, delay)
        return wait

    def succeeded(self, client: str, account: str) -> None:
        self._clients.pop(client, None)
        self._accounts.pop(account, None)

    def _current(self, client: str, account: str) -> Iterable[_Failures | None]:
        return (self._clients.get(client), self._accounts.get(account))

    @staticmethod
    def _forget_stale(table: dict[str, _Failures], now: float) -> None:
        for key in [k for k, f in table.items() if now - f.last > WINDOW and f.until <= now]:
            del table[key]
        while len(table) >= MAX_KEYS:  # still full of fresh failures: forget the oldest
            del table[min(table, key=lambda k: table[k].last)]


def retry_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


# ---------------------------------------------------------------------- identities


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request acts as. ``actor`` is what the audit trail records: a config id for a
    person, ``token:<name>`` for an integration."""

    actor: str
    name: str
    role: ConsoleRole
    via: str  # "console" (signed in) or "api" (a token)
    buildings: frozenset[str] | None = None  # None: every building
    households: frozenset[str] | None = None  # None: not limited to households
    csrf: str = ""  # the session's CSRF token ("" for a token: no cookie, no CSRF)
    expires_at: float | None = None  # the session's end

    @property
    def is_token(self) -> bool:
        return self.actor.startswith(TOKEN_ACTOR)

    def sees(self, alert: Alert, household: str) -> bool:
        """Whether this identity may see ``alert`` (``household``: the alert's household id)."""
        if self.households is not None:
            return bool(household) and household in self.households
        if self.buildings is None or not alert.location.building:
            return True  # a site-wide alert (no building) concerns everyone on duty
        return alert.location.building in self.buildings

    def may_act(self, alert: Alert, household: str) -> bool:
        """Acknowledge or resolve: what they see; an installer only maintenance tickets (四级)."""
        if not self.sees(alert, household):
            return False
        return self.role is not ConsoleRole.INSTALLER or alert.severity is Severity.GENERAL


def person_identity(
    config: SiteConfig, person: str, *, csrf: str = "", expires_at: float | None = None
) -> Identity | None:
    """The identity of a staff member or registered visitor by config id; None for anyone else
    (a family contact, or an id no longer in the config: they cannot sign in)."""
    for s in config.staff:
        if s.id == person:
            role = STAFF_ROLES[s.role]
            everywhere = role in (ConsoleRole.MANAGER, ConsoleRole.INSTALLER) or not s.buildings
            buildings = None if everywhere else frozenset(s.buildings)
            return Identity(s.id, s.name, role, "console", buildings, None, csrf, expires_at)
    for v in config.visitors:
        if v.id == person:
            return Identity(v.id, v.name, VISITOR_ROLE, "console", None, frozenset(v.households), csrf, expires_at)
    return None


def token_identity(name: str, role: str) -> Identity:
    """An integration: the whole site, with its token's role."""
    return Identity(f"{TOKEN_ACTOR}{name}", name, ConsoleRole(role), "api")


def people_who_sign_in(config: SiteConfig) -> list[Identity]:
    """Everyone the config lets sign in (staff and registered visitors), in config order."""
    ids = [s.id for s in config.staff] + [v.id for v in config.visitors]
    return [i for i in (person_identity(config, p) for p in ids) if i is not None]
