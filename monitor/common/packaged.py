"""The configs shipped inside the package: ``monitor/configs`` (the repository's ``configs/``).

``telemon run`` without ``--config`` uses the packaged rules, and ``telemon demo`` the packaged
demo scenario, so an installed telemon works from any folder.
"""

from __future__ import annotations

from pathlib import Path

CONFIGS = (Path(__file__).parents[1] / "configs").resolve()


def config(name: str) -> Path:
    """A packaged config file, e.g. ``config("rules.yaml")``."""
    return CONFIGS / name
