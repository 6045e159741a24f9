"""What the gateway keeps is its owner's alone, and what it obeys only its owner may change:
the store (names, phone numbers, password hashes, keys) and its directory are private; a config
file others may write is refused; one everyone may read is warned about when it holds a secret;
an API token that can be guessed is no token; and ``sensegate status`` says when ingest fails."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from pathlib import Path

import pytest
import tomli_w

from gateway.cli.app import main as cli
from gateway.ingest.health import failures
from gateway.runtime import open_store
from gateway.store import Store
from gateway.store.users import MIN_TOKEN_CHARS
from tests.gateway.factories import minimal_site
from tests.gateway.harness import running, site_config
from tests.servers import Mosquitto, free_port


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_site(tmp_path: Path, file_mode: int = 0o600, **sections: object) -> Path:
    site = minimal_site()
    site["gateway"] = {**site["gateway"], "data_dir": str(tmp_path / "data")}
    site.update(sections)
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site), encoding="utf-8")
    path.chmod(file_mode)
    return path


def test_the_store_its_directory_wal_and_shm_are_private(tmp_path: Path) -> None:
    umask = os.umask(0o022)  # the usual umask, which gave 0755 / 0644 before
    store = Store(tmp_path / "data" / "store.sqlite3")
    store.count({"x": 1})  # a write: the WAL and SHM exist now
    os.umask(umask)
    try:
        assert mode(tmp_path / "data") == 0o700
        for name in ("store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm"):
            assert mode(tmp_path / "data" / name) == 0o600, name
    finally:
        store.close()


def test_a_store_an_older_version_left_readable_is_narrowed_when_opened(tmp_path: Path) -> None:
    data = tmp_path / "var-lib-sensegate"
    data.mkdir(mode=0o755)
    Store(data / "store.sqlite3").close()
    for name in ("store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm"):
        if (data / name).exists():
            (data / name).chmod(0o644)
    store = Store(data / "store.sqlite3")
    try:
        assert mode(data / "store.sqlite3") == 0o600
        assert all(mode(p) == 0o600 for p in data.glob("store.sqlite3-*"))
        assert mode(data) == 0o755  # a directory that was there is left as it is
    finally:
        store.close()


@pytest.mark.parametrize("command", ["check", "run", "status"])
@pytest.mark.parametrize(("file_mode", "who"), [(0o664, "group"), (0o646, "others"), (0o666, "group and others")])
def test_a_config_file_others_may_write_is_refused_at_start_up_and_by_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, file_mode: int, who: str
) -> None:
    path = write_site(tmp_path, file_mode)
    assert cli([command, "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{path}: expected a file only its owner may write (chmod go-w {path}), "
        f"found mode {file_mode:04o}, writable by its {who}"
    ) in err
    assert not (tmp_path / "data").exists()  # refused before anything was opened


def test_a_world_readable_config_with_inline_secrets_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = [
        {"type": "influxdb_v1", "name": "tsdb", "url": "http://127.0.0.1:8086", "database": "sg", "password": "hunter2"}
    ]
    mqtt = {"username": "gateway", "password": "env:SENSEGATE_MQTT_PASSWORD"}
    path = write_site(tmp_path, 0o644, outputs=outputs, mqtt=mqtt)
    assert cli(["check", "-c", str(path)]) == 0
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "WARNING sensegate.config" in line]
    assert f"{path} is readable by everyone and holds secrets written into it (outputs[0].password)" in warning
    assert "hunter2" not in warning and "chmod o-r" in warning  # env: secrets are no concern
    path.chmod(0o640)  # not for everyone: no warning
    assert cli(["check", "-c", str(path)]) == 0
    assert "sensegate.config" not in capsys.readouterr().err


def test_an_empty_or_short_api_token_is_neither_kept_nor_accepted(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.sqlite3")
    try:
        for short in ("", "sgt_", "sgt_desk-secret", "x" * (MIN_TOKEN_CHARS - 1)):
            with pytest.raises(ValueError, match="at least 26 characters"):
                store.add_api_token(f"t{len(short)}", short, "duty", 0.0)
            assert store.api_token_by_secret(short) is None
        assert store.api_tokens() == []
    finally:
        store.close()


def test_tokens_create_makes_256_random_bits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_site(tmp_path)
    tokens = []
    for name in ("a", "b"):
        assert cli(["tokens", "create", "-c", str(path), name, "--role", "duty"]) == 0
        tokens.append(capsys.readouterr().out.strip())
    for token in tokens:
        assert token.startswith("sgt_")
        assert len(base64.urlsafe_b64decode(token[4:] + "=")) * 8 >= 128  # 256 bits: token_urlsafe(32)
    assert tokens[0] != tokens[1]


@pytest.mark.integration
async def test_status_shows_when_ingest_fails_and_since_when_then_that_it_works(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    nothing = free_port()  # no broker there
    config = site_config(minimal_site(), tmp_path, "127.0.0.1", nothing)
    path = write_site(tmp_path, mqtt={"host": "127.0.0.1", "port": nothing})
    from gateway.runtime import Gateway

    gateway = Gateway(config)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        for _ in range(200):
            if failures(gateway.store):
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    assert await asyncio.to_thread(cli, ["status", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ingest mqtt: FAILING since 20" in out and f"cannot reach the broker at 127.0.0.1:{nothing}" in out

    config = site_config(minimal_site(), tmp_path, mosquitto.host, mosquitto.port)
    async with running(config) as gateway:
        await asyncio.sleep(0.2)
        assert failures(gateway.store) == []
    store = open_store(config)
    try:
        assert failures(store) == []
    finally:
        store.close()
    assert await asyncio.to_thread(cli, ["status", "-c", str(path)]) == 0
    assert "ingest: ok" in capsys.readouterr().out


def test_an_in_memory_store_leaves_no_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Read-only commands open ":memory:" before the gateway's first run: that is no file name.
    monkeypatch.chdir(tmp_path)
    Store(":memory:").close()
    assert list(tmp_path.iterdir()) == []
