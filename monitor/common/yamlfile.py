"""Every YAML file telemon reads (config, rules, cohorts, scenarios, replay mappings), read one way.

:func:`load` reads the file with :func:`monitor.common.files.read_text` (a regular file of at most
``max_bytes``), composes it with PyYAML's safe loader and constructs the data exactly as
``yaml.safe_load`` would, with three refusals on the way, each a :class:`YamlError` naming the
file, line and column:

- more than :data:`MAX_ALIASES` aliases (``*name``);
- aliases that expand the document by more than :data:`MAX_EXPANSION` nodes, or refer to the
  node that contains them: an "alias bomb" is a few hundred bytes that a program walking the data
  (a validator, say) expands into billions of nodes;
- duplicate keys in a mapping (YAML forbids them; PyYAML keeps the last one silently).

:class:`YamlDocument` also keeps the position of every key and list item, so that a validation
error can point at ``FILE:LINE:COLUMN`` (:meth:`YamlDocument.locate`).

The positions come from the composed nodes of PyYAML's safe loader, not from ruamel.yaml's
round-trip loader (``CommentedMap.lc``): that one is about 1.6 times slower on the shipped
configs (without the checks above, which it would still need), stops at the first duplicate key,
reads YAML 1.2 (``on``/``yes`` become strings, ``010`` ten), hands back its own scalar and mapping
types, and resolves a recursive alias to ``None`` silently.

>>> doc = YamlDocument.parse("a: &x [1, 2]\\nb: *x\\n", "example.yaml")
>>> doc.data, doc.locate(("b",), "oops")
({'a': [1, 2], 'b': [1, 2]}, 'example.yaml:2:1: b: oops')
>>> YamlDocument.parse("a: 1\\na: 2\\n", "example.yaml").check_duplicates()
Traceback (most recent call last):
...
monitor.errors.YamlError: example.yaml:2:1: a: duplicate key (first at line 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from monitor.common import files
from monitor.errors import YamlError

#: Aliases allowed in one document (anchors are legitimate, e.g. shared rule conditions).
MAX_ALIASES = 100
#: Nodes the aliases may add to the document, expanded.
MAX_EXPANSION = 100_000

Loc = Sequence[str | int]


class _Loader(yaml.SafeLoader):
    """The safe loader, counting aliases as it composes."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases: refused (an alias bomb?)", mark
                )
        return super().compose_node(parent, index)


@dataclass
class YamlDocument:
    """A YAML document read with the safe loader, plus the position of every key and list item."""

    source: str
    data: Any = None
    root: yaml.Mark | None = None
    marks: dict[tuple[str, ...], yaml.Mark] = field(default_factory=dict)
    duplicates: list[tuple[int, int, str]] = field(default_factory=list)  # (line, column, problem)

    @classmethod
    def parse(cls, text: str, source: str) -> YamlDocument:
        """The document in ``text``; ``source`` names it in error messages."""
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            doc = cls(source)
            if node is not None:
                _check_expansion(node, source)
                doc._index(node, ())
                doc.data, doc.root = loader.construct_document(node), node.start_mark
            return doc
        except RecursionError:
            raise YamlError(f"{source}: nested too deeply") from None
        except yaml.MarkedYAMLError as exc:
            raise YamlError(_marked_error(source, exc)) from None
        except yaml.YAMLError as exc:
            raise YamlError(f"{source}: invalid YAML: {exc}") from None
        finally:
            loader.dispose()

    def _index(self, node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            first: dict[str, yaml.Mark] = {}
            for key_node, value_node in node.value:
                key = (*path, str(key_node.value))
                seen = first.setdefault(key[-1], key_node.start_mark)
                if seen is not key_node.start_mark:
                    problem = f"duplicate key (first at line {seen.line + 1})"
                    self.duplicates.append(self._position(key_node.start_mark, key, problem))
                self.marks.setdefault(key, key_node.start_mark)
                self._index(value_node, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.marks.setdefault((*path, str(i)), item.start_mark)
                self._index(item, (*path, str(i)))

    def check_duplicates(self) -> YamlDocument:
        """The document, unless it repeats a key (:class:`YamlError` listing every repetition)."""
        if self.duplicates:
            raise YamlError("\n".join(line for _, _, line in sorted(self.duplicates)))
        return self

    def locate(self, loc: Loc, message: str) -> str:
        """``FILE:LINE:COLUMN: dotted.path: message`` at the nearest key or item of ``loc``."""
        return self.position(loc, message)[2]

    def position(self, loc: Loc, message: str) -> tuple[int, int, str]:
        """:meth:`locate` with its line and column, for sorting problems by position."""
        path = tuple(str(p) for p in loc)
        known = (self.marks[path[:n]] for n in range(len(path), 0, -1) if path[:n] in self.marks)
        return self._position(next(known, self.root), path, message)

    def has(self, loc: Loc) -> bool:
        """Whether the document spells out the key or item at ``loc``."""
        return tuple(str(p) for p in loc) in self.marks

    def _position(self, mark: yaml.Mark | None, path: tuple[str, ...], message: str) -> tuple[int, int, str]:
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        return line, col, f"{self.source}:{line}:{col}: {'.'.join(path) or '(top level)'}: {message}"


def read(path: Path, max_bytes: int = files.MAX_CONFIG_BYTES) -> YamlDocument:
    """The YAML document in the file at ``path`` (see the module docstring for what is refused)."""
    try:
        text = files.read_text(path, max_bytes)
    except UnicodeDecodeError as exc:
        raise YamlError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise YamlError(f"cannot read {path}: {exc.strerror or exc}") from None
    return YamlDocument.parse(text, str(path))


def load(path: Path, max_bytes: int = files.MAX_CONFIG_BYTES) -> Any:
    """The data of the YAML file at ``path`` (``None`` for an empty file); a repeated key is an
    error."""
    return read(path, max_bytes).check_duplicates().data


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse aliases that add more than :data:`MAX_EXPANSION` nodes, or that contain themselves."""
    sizes: dict[int, int] = {}
    composed: set[int] = set()

    def size(node: yaml.Node, active: frozenset[int]) -> int:
        key = id(node)
        if key in active:
            raise YamlError(_mark_line(source, node.start_mark, "a recursive alias: refused"))
        composed.add(key)
        if key not in sizes:
            children: list[yaml.Node] = []
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            inner = active | {key}
            sizes[key] = 1 + sum(size(c, inner) for c in children)
        return sizes[key]

    expanded = size(root, frozenset())
    if expanded - len(composed) > MAX_EXPANSION:
        raise YamlError(
            _mark_line(
                source,
                root.start_mark,
                f"its aliases expand it by {expanded - len(composed):,} nodes (at most {MAX_EXPANSION:,}): "
                "refused (an alias bomb?)",
            )
        )


def _mark_line(source: str, mark: yaml.Mark, message: str) -> str:
    return f"{source}:{mark.line + 1}:{mark.column + 1}: {message}"


def _marked_error(source: str, exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{mark.line + 1}:{mark.column + 1}:" if mark is not None else ""
    context = exc.context or ""
    if context and exc.context_mark is not None and exc.problem_mark is not None:
        context += f" at line {exc.context_mark.line + 1}"
    detail = f" ({context})" if context and exc.problem else ""
    return f"{source}:{where} invalid YAML: {exc.problem or context}{detail}"
