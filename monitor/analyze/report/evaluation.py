"""The report of a ``telemon evaluate`` run (placeholder until written)."""

from __future__ import annotations

from pathlib import Path


def render_evaluation(path: Path, streams: int) -> str:
    raise NotImplementedError
