"""scripts/install into a scratch root (--root): the user in dialout, the files, their modes and
owners, the unit's contents checked by `systemd-analyze verify`, an upgrade that keeps the config
and the store; and once with the virtualenv, sensegate importable and runnable from it."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "scripts" / "install"
UNIT = "etc/systemd/system/sensegate.service"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="scripts/install runs as root (CI and ./scripts/test do)")


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(INSTALL), "--root", str(root), *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def ids(root: Path) -> tuple[int, int, dict[str, list[str]]]:
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    members = {name: g[3].split(",") if g[3] else [] for name, g in groups.items()}
    return int(users["sensegate"][2]), int(groups["sensegate"][2]), members


def mode_owner(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def verify_unit(root: Path) -> None:
    """`systemd-analyze verify` on the installed unit. It checks that ExecStart exists on this
    machine, so the copy it reads runs the program in the scratch root; nothing else changes."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (./scripts/test installs package systemd)")
    text = (root / UNIT).read_text().replace("ExecStart=/opt/", f"ExecStart={root}/opt/")
    copy = root / "verify" / "sensegate.service"
    copy.parent.mkdir(exist_ok=True)
    copy.write_text(text)
    proc = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and not proc.stderr.strip() and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_install_into_a_scratch_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    out = install(root, "--no-venv").stdout
    assert "wrote /etc/sensegate/site.toml" in out
    uid, gid, members = ids(root)
    assert "sensegate" in members["dialout"]
    passwd = next(line for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("sensegate:"))
    assert passwd.endswith(":/var/lib/sensegate:/usr/sbin/nologin")

    assert mode_owner(root / "etc/sensegate") == (0o750, 0, gid)
    assert mode_owner(root / "etc/sensegate/site.toml") == (0o640, 0, gid)
    assert (root / "etc/sensegate/site.toml").read_bytes() == (ROOT / "config/example-site.toml").read_bytes()
    assert mode_owner(root / "etc/sensegate/secrets.env") == (0o600, 0, 0)
    assert mode_owner(root / "var/lib/sensegate") == (0o700, uid, gid)
    assert not (root / "opt/sensegate/venv").exists()

    unit = (root / UNIT).read_text()
    settings = unit_settings(unit)
    for key, value in {
        "Type": "notify",
        "WatchdogSec": "30",
        "Restart": "always",
        "User": "sensegate",
        "SupplementaryGroups": "dialout",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/sensegate",
        "NoNewPrivileges": "yes",
        "StandardOutput": "journal",
        "ExecStart": "/opt/sensegate/venv/bin/sensegate run -c /etc/sensegate/site.toml",
    }.items():
        assert settings[key] == [value], key
    assert os.readlink(root / "etc/systemd/system/multi-user.target.wants/sensegate.service") == f"/{UNIT}"

    stub = root / "opt/sensegate/venv/bin/sensegate"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    verify_unit(root)


def test_an_upgrade_keeps_the_config_and_the_store_and_repairs_modes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root, "--no-venv")
    uid, gid, _ = ids(root)
    site = root / "etc/sensegate/site.toml"
    site.write_text("# edited by the installer of this block\n")
    site.chmod(0o666)  # someone loosened it
    store = root / "var/lib/sensegate/store.sqlite3"
    db = sqlite3.connect(store)
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (42)")
    db.commit()
    db.close()
    os.chown(store, uid, gid)
    out = install(root, "--no-venv").stdout
    assert "keeping /etc/sensegate/site.toml" in out
    assert site.read_text() == "# edited by the installer of this block\n"
    assert mode_owner(site) == (0o640, 0, gid)
    assert sqlite3.connect(store).execute("SELECT x FROM t").fetchall() == [(42,)]
    assert ids(root)[:2] == (uid, gid)  # the same user, not a second one


def test_install_refuses_unknown_options(tmp_path: Path) -> None:
    proc = subprocess.run([str(INSTALL), "--bogus"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr


def test_install_with_the_virtualenv(tmp_path: Path) -> None:
    """The slow path (a minute: pip installs SenseGate and its dependencies into the venv)."""
    root = tmp_path / "root"
    out = install(root).stdout
    venv = root / "opt/sensegate/venv"
    assert re.search(r"installed sensegate \S+ in /opt/sensegate/venv", out), out
    proc = subprocess.run(
        [str(venv / "bin/python"), "-c", "import gateway.cli.app, gateway.runtime, uvloop; print('ok')"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # the venv's own copy, not this tree
    )
    assert proc.stdout.strip() == "ok", proc.stderr
    assert os.readlink(root / "usr/local/bin/sensegate") == "/opt/sensegate/venv/bin/sensegate"
    check = subprocess.run(
        [str(venv / "bin/sensegate"), "check", "-c", str(root / "etc/sensegate/site.toml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert check.returncode == 0 and check.stdout.startswith("ok: "), check.stdout + check.stderr
    verify_unit(root)
