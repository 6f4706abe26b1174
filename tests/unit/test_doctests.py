"""The examples in the package's docstrings are run: every module that has one must pass."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WITH_EXAMPLES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for folder in ("monitor", "producers")
    for p in (ROOT / folder).rglob("*.py")
    if "configs" not in p.parts and ">>> " in p.read_text(encoding="utf-8")
)


def test_modules_with_examples_are_found() -> None:
    assert len(WITH_EXAMPLES) >= 10


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples_pass(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
