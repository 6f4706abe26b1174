"""One exception root: every public exception class derives from it, and the tree documents all."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from monitor import errors

ROOT = Path(__file__).resolve().parents[2]


def test_every_exception_class_is_defined_in_errors() -> None:
    elsewhere = sorted(
        f"{path.relative_to(ROOT)}: {node.name}"
        for folder in ("monitor", "producers")
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "errors.py" and "configs" not in path.parts
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
        and not node.name.startswith("_")
        and any(isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception")) for b in node.bases)
    )
    assert elsewhere == []


def test_every_class_is_under_the_root_and_in_the_tree() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) >= 20
    assert all(issubclass(c, errors.TelemonError) for c in classes)
    tree = errors.__doc__ or ""
    assert [c.__name__ for c in classes if f" {c.__name__}" not in tree] == []


def test_bad_input_is_a_value_error_and_unreachable_services_a_runtime_error() -> None:
    assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.RulesError, errors.InvalidInput)
    assert issubclass(errors.KafkaUnavailable, RuntimeError)
    assert issubclass(errors.SinkRejected, errors.Unavailable)
    assert issubclass(errors.UnsafeFileError, OSError)
