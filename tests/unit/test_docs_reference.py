"""The documentation's reference pages (docs/reference/{configuration,cli,metrics,signals,api}.md)
are generated from the code by scripts/docs-reference: a committed page that differs from what
the code gives now is stale."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import types
from pathlib import Path

import pytest

from monitor.govern.rules.model import SIGNALS
from monitor.govern.rules.signals import DESCRIPTIONS

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "docs-reference"


@pytest.fixture(scope="module")
def generator() -> types.ModuleType:
    loader = importlib.machinery.SourceFileLoader("docs_reference", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_committed_reference_pages_are_what_the_code_gives(generator: types.ModuleType) -> None:
    pages = generator.render()
    stale = generator.stale(pages)
    assert not stale, generator.stale_message(stale)


def test_the_pages_are_marked_generated_and_do_not_depend_on_the_terminal(
    generator: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "37")
    pages = generator.render()
    assert all(content.startswith(generator.MARK) for content in pages.values())
    assert not generator.stale(pages), "the command line's page changes with $COLUMNS"


def test_every_rule_signal_is_described() -> None:
    signals = set().union(*SIGNALS.values())
    assert set(DESCRIPTIONS) == signals
    assert all(doc.meaning and doc.unit for doc in DESCRIPTIONS.values())
