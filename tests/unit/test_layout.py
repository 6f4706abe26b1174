"""The package layout is the data flow: a module imports only from its own layer or earlier ones.

``monitor`` is read bottom-up: the foundation (errors, shared file helpers, settings, the wire
format and the records stages pass), state, then the stages in stream order (ingest -> detect ->
analyze -> govern), the pipeline that runs them over a batch, the service around it, and the command line.
The producers sit between the service and the command line: they publish the wire format to
Kafka and know nothing of monitoring.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Layers from the bottom; a module belongs to the longest prefix that names it.
LAYERS: dict[str, int] = {
    "monitor": 0,
    "monitor.errors": 0,
    "monitor.common": 1,
    "monitor.settings": 2,
    "monitor.schema": 2,
    "monitor.records": 2,
    "monitor.state": 3,
    "monitor.ingest": 4,
    "monitor.detect": 5,
    "monitor.analyze": 6,
    "monitor.govern": 7,
    "monitor.govern.rules": 7,
    "monitor.govern.training": 7,
    "monitor.pipeline": 8,
    "monitor.kernel": 8,
    "monitor.serve": 9,
    "producers": 10,
    "monitor.cli": 11,
    "monitor.evaluation": 11,
    "monitor.report": 11,
    "producers.cli": 11,
}
#: What the producers may use of the monitor: the wire format, the Kafka client, settings, errors.
PRODUCER_USES = (
    "monitor.errors",
    "monitor.schema",
    "monitor.settings",
    "monitor.ingest.kafka",
    "monitor.common",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every monitor or producers module ``path`` imports, at any depth of its code."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                ).strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("monitor", "producers")}


def graph() -> dict[str, set[str]]:
    paths = [*(ROOT / "monitor").rglob("*.py"), *(ROOT / "producers").rglob("*.py")]
    modules = {module_name(p): p for p in paths if "configs" not in p.parts}
    return {name: {i for i in imports(p) if i in modules and i != name} for name, p in modules.items()}


def layer(module: str) -> int:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def test_every_import_points_down_the_layers() -> None:
    backward = sorted(
        f"{mod} (layer {layer(mod)}) imports {dep} (layer {layer(dep)})"
        for mod, deps in graph().items()
        for dep in deps
        if layer(dep) > layer(mod)
    )
    assert backward == []


def test_no_module_imports_itself_through_others() -> None:
    edges, cycles = graph(), []
    done: set[str] = set()

    def visit(mod: str, path: list[str]) -> None:
        if mod in path:
            cycles.append(" -> ".join([*path[path.index(mod) :], mod]))
            return
        if mod in done:
            return
        for dep in sorted(edges[mod]):
            visit(dep, [*path, mod])
        done.add(mod)

    for mod in sorted(edges):
        visit(mod, [])
    assert cycles == []


def test_producers_use_only_the_wire_format_and_the_kafka_client() -> None:
    used = sorted(
        f"{mod} imports {dep}"
        for mod, deps in graph().items()
        if mod.startswith("producers") and layer(mod) == LAYERS["producers"]
        for dep in deps
        if dep.startswith("monitor") and dep != "monitor" and not dep.startswith(PRODUCER_USES)
    )
    assert used == []


def test_the_layers_name_every_package() -> None:
    packages = {module_name(p.parent) for p in (ROOT / "monitor").rglob("__init__.py")}
    assert sorted(p for p in packages if p not in LAYERS) == []
