"""telemon as a user installs it: a wheel built from the repository (sdist, then the wheel from the
sdist, as a release builds it), installed into a fresh virtual environment outside the repository,
then the commands run from an empty folder (the default configs are package data)."""

from __future__ import annotations

import email
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import monitor
from monitor.cli.broker import EmbeddedBroker, free_port
from tests.chaos_harness import probe
from tests.report_kit import look

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: What the package is built from: the Docker build context's files (.dockerignore), nothing else.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "monitor", "producers", "configs")
#: How build shows setuptools' warnings (a deprecation, data outside the packages): "WARNING ...",
#: framed by "!!" lines (distutils' lowercase "warning: byte-compiling is disabled" is no such thing).
BUILD_WARNING = re.compile(r"^\s*(WARNING|!!)|[Dd]eprecat", re.M)


def _clean_env() -> dict[str, str]:
    """The environment without this checkout's venv or sources on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEMON_", "VIRTUAL_ENV", "PYTHONPATH"))}
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built by ``python -m build`` from a copy of the package's sources (nothing of the
    checkout's build leftovers can slip in), without a setuptools warning."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
            shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_clean_env(),
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert not BUILD_WARNING.search(log), log[-5000:]
    (built,) = dist.glob("telemon-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a fresh venv with the wheel and its ``embedded`` extra (not ``mqtt``)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run([*pip, f"{wheel}[embedded]"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv / "bin"


def test_the_wheel_holds_the_package_its_data_and_its_license(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        info = f"telemon-{monitor.__version__}.dist-info"
        metadata = email.message_from_bytes(whl.read(f"{info}/METADATA"))
        license_text = whl.read(f"{info}/licenses/LICENSE")
    configs = ROOT / "configs"
    assert {f"monitor/configs/{p.relative_to(configs)}" for p in configs.rglob("*") if p.is_file()} <= names
    assert {"monitor/py.typed", "producers/py.typed", "monitor/cli/main.py"} <= names
    assert {n.split("/")[0] for n in names} == {"monitor", "producers", info}  # no tests, no scripts
    assert license_text == (ROOT / "LICENSE").read_bytes()
    assert metadata["Version"] == monitor.__version__  # one version: monitor.__version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert {"embedded", "mqtt", "dev"} <= set(metadata.get_all("Provides-Extra"))
    paho = [r for r in metadata.get_all("Requires-Dist") if r.startswith("paho-mqtt")]
    assert paho == ['paho-mqtt>=2; extra == "mqtt"']  # not a core dependency


def test_help_and_packaged_rules(installed: Path, tmp_path: Path) -> None:
    telemon = str(installed / "telemon")
    done = subprocess.run([telemon, "--help"], cwd=tmp_path, capture_output=True, text=True, env=_clean_env())
    assert done.returncode == 0 and "telemon demo" in done.stdout
    where = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import importlib.util, monitor.common.packaged as p; "
            "print(p.CONFIGS); print(importlib.util.find_spec('paho'))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    configs, paho = where.stdout.split()
    assert ROOT not in Path(configs).parents and paho == "None"  # inside the installed package; no MQTT
    rules = sorted(Path(configs).glob("*rules*.yaml"))
    assert {r.name for r in rules} >= {"rules.yaml", "rules-governance.yaml"}
    check = subprocess.run(
        [telemon, "rules", "check", *map(str, rules)], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.count(" rules OK") == len(rules)


def test_bridge_without_the_mqtt_extra_names_it(installed: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(installed / "telemon"), "bridge", "mqtt"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "telemon bridge: the MQTT bridge needs paho-mqtt, which is not installed: pip install 'telemon[mqtt]'"
    ]


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
