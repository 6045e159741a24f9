"""`sensegate users` and `sensegate tokens`: passwords only for people the config names, hashed
with argon2; tokens printed once, kept as a hash, never reused, revocable."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import tomli_w

from gateway.cli.app import main as cli
from gateway.site.config import load_config
from gateway.store import Store
from gateway.store.users import sha256
from gateway.web.auth import verify_password
from tests.web.helpers import two_buildings


def _config_file(tmp_path: Path) -> Path:
    site = two_buildings()
    site["gateway"]["data_dir"] = "data"
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site), encoding="utf-8")
    return path


def _store(path: Path) -> Store:
    return Store(load_config(path).store_path)


def test_set_password_for_a_known_id_from_stdin_and_refuse_others(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    path = _config_file(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-pass-word\n"))
    assert cli(["users", "set-password", "-c", str(path), "s-li", "--password-stdin"]) == 0
    assert "password set for s-li (李值班, 值班人员 / duty staff)" in capsys.readouterr().out
    store = _store(path)
    row = store.user("s-li")
    store.close()
    assert row is not None and row.password_hash.startswith("$argon2id$")
    assert verify_password(row.password_hash, "s3cret-pass-word") and not verify_password(row.password_hash, "nope")
    for person in ("nobody", "contact:r1:0"):
        monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-pass-word\n"))
        assert cli(["users", "set-password", "-c", str(path), person, "--password-stdin"]) == 1
        assert "is no staff or visitor id" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli(["users", "set-password", "-c", str(path), "s-li", "--password-stdin"]) == 1
    assert "at least 8 characters" in capsys.readouterr().err
    assert "s3cret-pass-word" not in caplog.text and "$argon2" not in caplog.text


def test_set_password_asks_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config_file(tmp_path)
    answers = iter(["first-password", "second-password"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert cli(["users", "set-password", "-c", str(path), "v-zhang"]) == 1
    assert "differ" in capsys.readouterr().err
    answers = iter(["same-password", "same-password"])
    assert cli(["users", "set-password", "-c", str(path), "v-zhang"]) == 0
    assert cli(["users", "list", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "v-zhang" in out and "community worker" in out and "households 1-1-101" in out
    assert "s-li" in out and "buildings 1" in out and "no password" in out
    assert "s-boss" in out and "every building" in out


def test_tokens_are_printed_once_kept_hashed_never_reused_and_revocable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config_file(tmp_path)
    assert cli(["tokens", "create", "-c", str(path), "home-assistant", "--role", "duty"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("sgt_") and len(token) > 40
    store = _store(path)
    found = store.api_token_by_secret(token)
    raw = store._db.execute("SELECT token_sha256 FROM api_tokens").fetchone()[0]
    store.close()
    assert found is not None and found.name == "home-assistant" and found.role == "duty"
    assert raw == sha256(token) and token not in raw
    assert cli(["tokens", "create", "-c", str(path), "home-assistant", "--role", "manager"]) == 1
    assert "never reused" in capsys.readouterr().err
    assert cli(["tokens", "create", "-c", str(path), "bad name!", "--role", "duty"]) == 1
    assert cli(["tokens", "revoke", "-c", str(path), "home-assistant"]) == 0
    assert cli(["tokens", "revoke", "-c", str(path), "home-assistant"]) == 1
    capsys.readouterr()
    assert cli(["tokens", "list", "-c", str(path)]) == 0
    assert "home-assistant" in (listed := capsys.readouterr().out) and "revoked" in listed and token not in listed
    store = _store(path)
    assert store.api_token_by_secret(token) is None
    store.close()
