"""Model versions and their lineage.

Every retrain creates a :class:`ModelVersion`: which pair it serves, its parent, the Kafka data it
was trained on (topic, partition, first and last offset, time span), its parameters and learned
baseline, the code and configuration it came from, and what triggered it. Versions are appended
to ``<state_dir>/registry/versions.jsonl`` and published to the models topic.

Version 1 of every pair is the online model started at the pair's first reading; it is implicit
(not recorded) so that new devices cost nothing here. Retrained versions count up from 2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

import monitor


class TrainingData(msgspec.Struct, frozen=True):
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    readings: int
    first_ts: int
    last_ts: int


class ModelVersion(msgspec.Struct, frozen=True):
    device_id: str
    sensor: str
    version: int
    parent: int
    trained_on: TrainingData
    params: dict[str, float]
    baseline: dict[str, list[float]]
    trigger_rule: str
    trigger_alert_id: str
    code_version: str
    config_hash: str
    created_at: int  # event time, epoch ms

    @property
    def key(self) -> bytes:
        return self.device_id.encode()


def code_version() -> str:
    """Package version plus a hash of the package's source files."""
    digest = hashlib.sha256()
    for path in sorted(Path(monitor.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return f"{monitor.__version__}+{digest.hexdigest()[:12]}"


_ENCODER = msgspec.json.Encoder()


def encode(v: ModelVersion) -> bytes:
    return _ENCODER.encode(v)


def decode(raw: bytes) -> ModelVersion:
    return msgspec.json.decode(raw, type=ModelVersion)


class ModelRegistry:
    """An append-only JSON-lines file of model versions."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "registry" / "versions.jsonl"

    def append(self, versions: list[ModelVersion]) -> None:
        if not versions:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            for v in versions:
                f.write(encode(v) + b"\n")

    def __iter__(self) -> Iterator[ModelVersion]:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for line in f:
                yield decode(line)
