"""`sensegate demo`: a machine with no broker and no database still shows alerts within a minute,
serves the duty desk with a sign-in for its duty staff, and stops by itself — also with its Modbus
bus polling (a swallowed cancel once hung the stop)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_on_the_embedded_broker_shows_alerts_within_a_minute(tmp_path: Path) -> None:
    # --broker amqtt: what a machine without Mosquitto gets (no database is ever needed).
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "demo",
            "--broker",
            "amqtt",
            "--duration",
            "14",
            "--report-every",
            "5",
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "broker: amqtt (embedded)" in out
    # The duty desk, and who signs in to it (the demo sets a password for its duty staff).
    console = next(line for line in out.splitlines() if line.startswith("值班台 console: http://127.0.0.1:"))
    assert "sign in as s-day or s-night, password " in console
    alerts = [line for line in out.splitlines() if line.startswith("[")]
    assert any("【紧急呼叫】" in line and "独居老人" in line and "SOS pressed" in line for line in alerts), out
    # the scripted gas leak on the simulated RS-485 bus, read over Modbus RTU through a pty
    assert any("【燃气报警】" in line and "1号楼1单元202室" in line and "Gas alarm" in line for line in alerts), out
    status = [line for line in out.splitlines() if line.startswith("· events accepted")]
    assert status and int(status[-1].split()[3].rstrip(",")) > 50  # the block is streaming
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "demo" / "store.sqlite3").exists()
