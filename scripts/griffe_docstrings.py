"""A griffe extension for the documentation site's Python API page (mkdocs.yml): the docstrings'
reStructuredText habits as Markdown, so that mkdocstrings renders them as meant.

- ````name```` and roles (``:class:`~a.B```, ``:func:`f```, ...) become code spans (the short name
  for ``~``);
- doctest runs (``>>>`` lines up to a blank line) become ``pycon`` blocks instead of quotes;
- a paragraph ending in ``::`` (a literal block follows) ends in ``:``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")
_LITERAL = re.compile(r"(?<=\S)::$")


def _code_span(match: re.Match[str]) -> str:
    short, target = match[1], match[2]
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _inline(line: str) -> str:
    return _LITERAL.sub(":", _ROLE.sub(_code_span, line).replace("``", "`"))


def markdown(doc: str) -> str:
    """The docstring ``doc`` in Markdown."""
    lines, out, i = doc.split("\n"), list[str](), 0
    while i < len(lines):
        stripped = lines[i].lstrip()
        if stripped.startswith(">>>"):
            indent = len(lines[i]) - len(stripped)
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][indent:])
                i += 1
            out += ([""] if out and out[-1].strip() else []) + ["```pycon", *block, "```"]
            continue
        out.append(lines[i] if lines[i].startswith("    ") else _inline(lines[i]))
        i += 1
    return "\n".join(out)


class RestructuredTextHabits(griffe.Extension):
    """Rewrites every loaded object's docstring with :func:`markdown`."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
