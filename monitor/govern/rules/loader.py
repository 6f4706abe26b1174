"""Reading a rules file: YAML in, a validated :class:`RuleSet` out, or a :class:`RulesError` that
lists every problem with its line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from monitor import errors
from monitor.common import yamlfile
from monitor.errors import RulesError
from monitor.govern.rules.model import _NODE_TAGS, RuleSet
from monitor.schema import SENSOR_NAMES


def load_rules(path: Path, sensors: Sequence[str] = SENSOR_NAMES, registrable: bool = False) -> RuleSet:
    """Read and validate a rules file; :class:`RulesError` lists every problem with its line.
    ``sensors``: the names a rule may filter on (the deployment's catalog); ``registrable``: also
    the names of channels not registered yet (``channels.auto_register`` is on)."""
    try:
        doc = yamlfile.read(path)
    except FileNotFoundError as exc:
        raise RulesError(f"{path}: {exc.strerror}") from None
    except errors.YamlError as exc:
        raise RulesError(str(exc)) from None
    return _validated(doc, sensors, registrable)


def parse_rules(
    text: str, source: str = "<rules>", sensors: Sequence[str] = SENSOR_NAMES, registrable: bool = False
) -> RuleSet:
    """Validate rules from YAML text; ``source`` names it in error messages."""
    try:
        return _validated(yamlfile.YamlDocument.parse(text, source), sensors, registrable)
    except errors.YamlError as exc:
        raise RulesError(str(exc)) from None


def _validated(doc: yamlfile.YamlDocument, sensors: Sequence[str], registrable: bool) -> RuleSet:
    problems = list(doc.duplicates)
    rules = None
    try:
        context = {"sensors": tuple(sensors), "registrable": registrable}
        rules = RuleSet.model_validate(doc.data, context=context)
    except ValidationError as exc:
        for e in exc.errors():
            loc = [p for p in e["loc"] if p not in _NODE_TAGS]
            problems.append(doc.position(loc, _message(e)))
    if problems or rules is None:
        raise RulesError("\n".join(line for _, _, line in sorted(problems)))
    return rules


def _message(error: ErrorDetails) -> str:
    if error["type"] == "value_error":  # raised by a field validator: the text without pydantic's prefix
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return error["msg"]
