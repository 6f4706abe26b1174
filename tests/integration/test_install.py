"""telemon as a user installs it: `pip install .` into a fresh virtual environment outside the
repository, then the commands run from an empty folder (the default configs are package data)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.cli.broker import EmbeddedBroker, free_port
from tests.chaos_harness import probe
from tests.report_kit import look

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a fresh venv with ``telemon[embedded]`` installed from the repository."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run([*pip, f"{ROOT}[embedded]"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv / "bin"


def _clean_env() -> dict[str, str]:
    """The environment without this checkout's venv or sources on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEMON_", "VIRTUAL_ENV", "PYTHONPATH"))}
    return env


def test_help_and_packaged_rules(installed: Path, tmp_path: Path) -> None:
    telemon = str(installed / "telemon")
    done = subprocess.run([telemon, "--help"], cwd=tmp_path, capture_output=True, text=True, env=_clean_env())
    assert done.returncode == 0 and "telemon demo" in done.stdout
    where = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import monitor.common.packaged as p; print(p.config('rules.yaml'))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    rules = Path(where.stdout.strip())
    assert ROOT not in rules.parents and rules.is_file()  # inside the installed package
    check = subprocess.run(
        [telemon, "rules", "check", str(rules)], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def test_demo_runs_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(installed / "telemon"), "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "demo result: OK" in done.stdout
    assert list(tmp_path.iterdir()) == []  # the demo keeps its state in a temporary folder
    report = Path(done.stdout.split("\nreport: ")[1].splitlines()[0])  # kept, in a folder of its own
    try:
        html = report.read_text(encoding="utf-8")
        assert "dev-0007 / temperature" in html  # the drifted device has the most alerts: shown first
        assert re.search(r"<h3>dev-0007/temperature v2</h3>", html)  # its retrained version's lineage
        seen = look(report, tmp_path.parent / "demo-report.png")  # as a person would look at it
        assert seen.errors == [] and seen.requests == [report.resolve().as_uri()]
        assert seen.svgs["overview"] == 1 and seen.svgs["devices"] >= 3
        assert seen.svgs["alerts"] >= 2  # each explained alert: its reading, its quantiles
    finally:
        shutil.rmtree(report.parent)


def test_run_starts_with_the_packaged_defaults(installed: Path, tmp_path: Path) -> None:
    with EmbeddedBroker() as broker:
        port = free_port()
        env = _clean_env() | {
            "TELEMON_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "TELEMON_KAFKA__SESSION_TIMEOUT_MS": "3000",
            "TELEMON_METRICS__PORT": str(port),
        }
        proc = subprocess.Popen(
            [str(installed / "telemon"), "run"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 60
            while probe(port, "/readyz")[0] != 200:  # in its consumer group
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert "consuming telemon.readings" in stderr
    assert (tmp_path / ".telemon" / "signing.key").stat().st_mode & 0o777 == 0o600
