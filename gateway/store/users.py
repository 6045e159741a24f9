"""People who sign in to the console, and the machines that call its API: the ``users``,
``sessions`` and ``api_tokens`` tables (docs/console.md).

- ``users``: one row per staff or visitor id from the site config that has a password: its
  argon2 hash (never the password) and when it was set. Who the person is and what they may do
  stay in the config; this table only says how they prove it.
- ``sessions``: a signed-in browser. The row is keyed by the SHA-256 of the session id in the
  cookie, so a copy of the store gives nobody a live session; it expires at ``expires_at`` and is
  deleted at sign-out, when the password changes, and once expired.
- ``api_tokens``: one per integration, by ``name``: the SHA-256 of the token (the token itself is
  printed once, when created), the role it acts with, when it was created and revoked. A name is
  never reused, so ``token:<name>`` in an audit trail always means the same integration.
- ``mqtt_keys``: for an integration that commands alerts over MQTT, its HMAC-SHA256 key, kept as
  it is (the gateway must compute the MAC; a hash would not do). Its token row in ``api_tokens``
  gives its name, role and revocation; such a token is no bearer for the console's API. The
  store is 0600 (``base.py``): whoever can read it can sign commands, as root can anyway.
- ``mqtt_nonces``: the nonces of signed commands accepted in the last ``NONCE_KEEP`` seconds, per
  key, written in the transaction that queues the command: a command replayed, even after a
  restart, finds its nonce here (gateway/alerts/commands.py).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.store.base import StoreBase

USERS_DDL = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    id_sha256 TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id);
CREATE TABLE IF NOT EXISTS api_tokens (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mqtt_keys (
    name TEXT PRIMARY KEY,
    key TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mqtt_nonces (
    name TEXT NOT NULL,
    nonce TEXT NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (name, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mqtt_nonces_ts ON mqtt_nonces(ts);
"""

# How long an accepted command's nonce is remembered after its own ``ts``: a command is taken
# while its ts is within ±60 s of the gateway's clock, so after ts + 60 s it is refused anyway;
# twice that leaves room for the clock being set back a little.
NONCE_KEEP = 120.0


# The shortest API token kept or accepted: "sgt_" and 22 base64url characters, 132 bits.
# ``sensegate tokens create`` makes 43 (256 bits); an empty or short bearer fails unlooked-up.
MIN_TOKEN_CHARS = 26


def sha256(secret: str) -> str:
    """How session ids and API tokens are kept: random secrets of 256 bits need no salt or
    slow hash (a password does: that is argon2, in the console)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    password_hash: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class SessionRow:
    user_id: str
    csrf: str
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class ApiToken:
    name: str
    role: str
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class UsersStore(StoreBase):
    # ------------------------------------------------------------------ passwords

    def set_password_hash(self, user_id: str, password_hash: str, at: float) -> None:
        """Set a person's password hash; their open sessions end (a new password signs out
        everywhere, which is what a person changing a leaked password wants)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO users(id, password_hash, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET "
                "password_hash = excluded.password_hash, updated_at = excluded.updated_at",
                (user_id, password_hash, at),
            )
            db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

    def user(self, user_id: str) -> UserRow | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, password_hash, updated_at FROM users WHERE id = ?", (user_id,)
            ).fetchone()
        return None if row is None else UserRow(str(row[0]), str(row[1]), float(row[2]))

    def users(self) -> list[UserRow]:
        with self._lock:
            rows = self._db.execute("SELECT id, password_hash, updated_at FROM users ORDER BY id").fetchall()
        return [UserRow(str(i), str(h), float(u)) for i, h, u in rows]

    # ------------------------------------------------------------------ sessions

    def add_session(self, session_id: str, user_id: str, csrf: str, at: float, expires_at: float) -> None:
        """A new sign-in; sessions that expired before ``at`` are forgotten in passing."""
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (at,))
            db.execute(
                "INSERT INTO sessions(id_sha256, user_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (sha256(session_id), user_id, csrf, at, expires_at),
            )

    def session(self, session_id: str, now: float) -> SessionRow | None:
        """The live session with this id, or None (unknown or expired)."""
        with self._lock:
            row = self._db.execute(
                "SELECT user_id, csrf, created_at, expires_at FROM sessions WHERE id_sha256 = ? AND expires_at > ?",
                (sha256(session_id), now),
            ).fetchone()
        return None if row is None else SessionRow(str(row[0]), str(row[1]), float(row[2]), float(row[3]))

    def drop_session(self, session_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE id_sha256 = ?", (sha256(session_id),))

    # ------------------------------------------------------------------ API tokens

    def add_api_token(self, name: str, token: str, role: str, at: float) -> bool:
        """Keep a new token (by its hash); False if the name was ever used. ``ValueError`` for a
        token shorter than ``MIN_TOKEN_CHARS``: one that can be guessed is no credential."""
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"an API token has at least {MIN_TOKEN_CHARS} characters")
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO api_tokens(name, token_sha256, role, created_at) VALUES (?, ?, ?, ?)",
                (name, sha256(token), role, at),
            )
            return cur.rowcount == 1

    def revoke_api_token(self, name: str, at: float) -> bool:
        """Revoke a token; False if there is no active token by that name."""
        with self._tx() as db:
            cur = db.execute("UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (at, name))
            return cur.rowcount == 1

    def api_token_by_secret(self, token: str) -> ApiToken | None:
        """The active token whose secret this is, or None (unknown, revoked, or too short to be one)."""
        if len(token) < MIN_TOKEN_CHARS:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT name, role, created_at, revoked_at FROM api_tokens "
                "WHERE token_sha256 = ? AND revoked_at IS NULL AND name NOT IN (SELECT name FROM mqtt_keys)",
                (sha256(token),),
            ).fetchone()
        return None if row is None else ApiToken(str(row[0]), str(row[1]), float(row[2]), None)

    def api_token(self, name: str) -> ApiToken | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, role, created_at, revoked_at FROM api_tokens WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else ApiToken(str(row[0]), str(row[1]), float(row[2]), row[3])

    def api_tokens(self) -> list[ApiToken]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, role, created_at, revoked_at FROM api_tokens ORDER BY name"
            ).fetchall()
        return [ApiToken(str(n), str(r), float(c), v) for n, r, c, v in rows]

    # ------------------------------------------------------------------ MQTT signing keys

    def add_mqtt_key(self, name: str, key: str, role: str, at: float) -> bool:
        """Keep a new integration's MQTT signing key; False if the name was ever used (by a
        token or a key). ``ValueError`` for a key shorter than ``MIN_TOKEN_CHARS``."""
        if len(key) < MIN_TOKEN_CHARS:
            raise ValueError(f"an MQTT key has at least {MIN_TOKEN_CHARS} characters")
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO api_tokens(name, token_sha256, role, created_at) VALUES (?, ?, ?, ?)",
                (name, sha256(key), role, at),
            )
            if cur.rowcount != 1:
                return False
            db.execute("INSERT INTO mqtt_keys(name, key) VALUES (?, ?)", (name, key))
            return True

    def mqtt_key(self, name: str) -> tuple[str, ApiToken] | None:
        """The signing key of the integration ``name`` and its token row (revoked or not); None
        if it has none."""
        with self._lock:
            row = self._db.execute(
                "SELECT k.key, t.name, t.role, t.created_at, t.revoked_at FROM mqtt_keys k "
                "JOIN api_tokens t ON t.name = k.name WHERE k.name = ?",
                (name,),
            ).fetchone()
        if row is None:
            return None
        return str(row[0]), ApiToken(str(row[1]), str(row[2]), float(row[3]), row[4])

    def mqtt_key_names(self) -> frozenset[str]:
        with self._lock:
            return frozenset(str(n) for (n,) in self._db.execute("SELECT name FROM mqtt_keys"))

    def nonce_used(self, name: str, nonce: str) -> bool:
        """Whether a command signed with ``name``'s key already came with this nonce."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM mqtt_nonces WHERE name = ? AND nonce = ?", (name, nonce)).fetchone()
        return row is not None


def _insert_nonces(db: sqlite3.Connection, nonces: Iterable[tuple[str, str, float]], now: float) -> None:
    """Remember the nonces ``(key name, nonce, ts)`` of commands queued in this transaction, and
    forget those whose window has long passed."""
    db.executemany("INSERT OR IGNORE INTO mqtt_nonces(name, nonce, ts) VALUES (?, ?, ?)", nonces)
    db.execute("DELETE FROM mqtt_nonces WHERE ts < ?", (now - NONCE_KEEP,))
