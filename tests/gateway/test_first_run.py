"""First-run friction (issue 12): before the gateway's first run the read-only commands say
"nothing yet" and exit 0; `--version`; output piped to `head` ends quietly; the demo cleans up
its temporary store and prints an ack command that runs as printed; a visit report for a month
before the gateway existed says so instead of 0 %."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import tomli_w

from gateway.cli import app
from gateway.cli.app import main as cli
from gateway.models import Alert, AlertState, Family, Kind, Severity
from gateway.site.config import load_config
from gateway.store import Store
from tests.gateway.factories import event, minimal_site

ROOT = Path(__file__).resolve().parents[2]
OCT_10 = datetime(2026, 10, 10, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()


def write_site(tmp_path: Path) -> Path:
    site = minimal_site(visitors=[{"id": "v1", "name": "李社工", "role": "community_worker"}])
    site["gateway"]["data_dir"] = "data"
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    return path


def test_read_only_commands_before_the_first_run_say_nothing_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_site(tmp_path)
    for argv in (
        ["status", "-c", str(path)],
        ["rules", "explain", "-c", str(path), "--household", "1-1-101"],
        ["visits", "report", "-c", str(path), "--month", "2026-10", "--out", str(tmp_path / "out")],
    ):
        assert cli(argv) == 0, argv
        assert "no events yet" in capsys.readouterr().out, argv
    assert cli(["alerts", "list", "-c", str(path)]) == 0
    assert capsys.readouterr().out == "no open alerts\n"
    assert not (tmp_path / "data").exists()  # nobody created the gateway's store for it
    assert not (tmp_path / "out").exists()


def test_a_visit_report_for_a_month_before_the_gateway_existed_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_site(tmp_path)
    store = Store(load_config(path).store_path)
    store.append([event(Kind.DOOR_OPENED, Family.DOOR, device="101-door", t=OCT_10)], {})
    store.close()
    out = tmp_path / "out"
    assert cli(["visits", "report", "-c", str(path), "--month", "2026-09", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the gateway was not running yet (its first event: 2026-10-10 00:00); no report" in printed
    assert "0.0 %" not in printed and not out.exists()
    # The month it started in is reported, with a word on the days before it.
    assert cli(["visits", "report", "-c", str(path), "--month", "2026-10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "网关自 2026-10-10 00:00 起运行" in printed and (out / "visit-report-2026-10.md").exists()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("sensegate ")


def test_output_piped_to_head_ends_without_a_traceback(tmp_path: Path) -> None:
    store_path = tmp_path / "store.sqlite3"
    store = Store(store_path)
    # ~200 KB of lines: far more than a pipe holds, so the command still writes when head exits.
    alerts = [
        Alert(f"a-{i:05d}", f"k{i}", "sos", Severity.CRITICAL, AlertState.RAISED, OCT_10, OCT_10, "紧急呼叫" * 8, "SOS")
        for i in range(2000)
    ]
    store.save_alerts(alerts, [])
    store.close()
    command = f"{shlex.quote(sys.executable)} -m gateway.cli alerts list --store {shlex.quote(str(store_path))}"
    proc = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} | head -n 1; echo rc=$?"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    first, rc = proc.stdout.splitlines()
    assert first.startswith("a-00000 raised") and rc == "rc=141"


def test_main_maps_broken_pipe_to_141(monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = os.pipe()
    os.close(r)
    saved = os.dup(1)
    try:
        os.dup2(w, 1)

        def write_lots(args: object) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        monkeypatch.setattr(app, "cmd_scenario_run", write_lots)
        assert cli(["scenario", "run", "x.toml"]) == 141
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(w)


def test_the_demo_removes_its_temporary_store_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    seen: list[Path] = []

    def fake_demo(args: object, data_dir: Path) -> int:
        (data_dir / "store.sqlite3").write_bytes(b"")
        seen.append(data_dir)
        return 0

    monkeypatch.setattr(app, "_demo", fake_demo)
    assert cli(["demo"]) == 0
    (data_dir,) = seen
    assert data_dir.parent == tmp_path and not data_dir.exists()
    assert f"removed its store {data_dir}" in capsys.readouterr().out
    kept = tmp_path / "kept"
    assert cli(["demo", "--data-dir", str(kept)]) == 0
    assert (kept / "store.sqlite3").exists() and f"its store is in {kept}" in capsys.readouterr().out


def test_the_printed_command_runs_as_printed_without_an_activated_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # scripts/demo runs .venv/bin/sensegate; .venv/bin is not on PATH: the absolute path is printed.
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    exe = bin_dir / "sensegate"
    exe.write_text(f"#!{sys.executable}\nimport sys\nfrom gateway.cli import main\nsys.exit(main())\n")
    exe.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(exe)])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert app.self_command() == str(exe)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert app.self_command() == "sensegate"
    monkeypatch.setattr(sys, "argv", ["-m"])  # python -m gateway.cli
    assert app.self_command() == f"{sys.executable} -m gateway.cli"
    # And what it prints runs: the alert list of a store given by path.
    store = tmp_path / "store.sqlite3"
    Store(store).close()
    monkeypatch.setattr(sys, "argv", [str(exe)])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    command = f"{app.self_command()} alerts list --store {store}"
    proc = subprocess.run(
        shlex.split(command), capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout == "no open alerts\n", proc.stderr
