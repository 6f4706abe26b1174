"""Lineage that reproduces: a retrain trained from the (in-memory) readings topic records what
rebuilds it, `reproduce` rebuilds it byte for byte and says what differs when the data changed;
versions trained from the ring buffer, whose data is gone, or registered before lineage was kept
are refused with the reason, and their manifests still decode."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pytest

from monitor.cli.main import main
from monitor.errors import ArtifactError, RegistryError
from monitor.govern import training
from monitor.govern.registry import Manifest, ModelRegistry, VersionRef
from monitor.govern.reproduce import check_reproducible, reproduce
from monitor.govern.rules import RuleSet, load_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.schema import encode_reading
from monitor.settings import KafkaSettings, Settings, load_settings
from tests.partition_kit import MemoryPartition, MemoryReader, Record

RULES = Path(__file__).resolve().parents[2] / "configs" / "rules.yaml"
KEY = b"r" * 32
T0 = 1_700_000_000_000
DRIFT = {"reference_size": 32, "window_size": 32, "check_every": 16}
LEVEL, NOISE, SHIFT_AT = 21.0, 0.5, 300
PAIR = ("dev-1", "temperature")


def _stream(readings: int, devices: int = 3, seed: int = 2) -> dict[int, list[Record]]:
    """Temperature readings of ``devices`` devices, dev-<d> on partition d % 2; dev-1's level
    shifts by 50 noise deviations at reading ``SHIFT_AT``."""
    rng = np.random.default_rng(seed)
    parts: dict[int, list[Record]] = {0: [], 1: []}
    for i in range(readings):
        for d in range(devices):
            v = LEVEL + NOISE * rng.standard_normal() + (50 * NOISE if d == 1 and i >= SHIFT_AT else 0.0)
            dev, ts, p = f"dev-{d}", T0 + 1000 * i, d % 2
            value = encode_reading(dev, "temperature", ts, i, {"value": round(v, 4)})
            parts[p].append(Record(value, dev.encode(), len(parts[p]), ts, p))
    return parts


@dataclass
class Retrained:
    settings: Settings
    registry: ModelRegistry
    partition: MemoryPartition
    results: list[BatchResult]

    def version(self, number: int) -> VersionRef:
        return VersionRef(*PAIR, number)


def _retrain(tmp: Path, settings: Settings, parts: dict[int, list[Record]]) -> Retrained:
    """The stream through a pipeline whose worker re-reads windows from partition 1; the versions
    registered as the service registers them."""
    rules = RuleSet(rules=[r for r in load_rules(RULES).rules if r.name == "score_drift"])
    source = training.TopicSource(
        MemoryReader(MemoryPartition(parts[1])),
        settings.retrain,
        settings.consume,
        settings.channels.catalog(),
    )
    worker = training.TrainingWorker(settings.retrain, source)
    pipeline = Pipeline(settings, rules, trainer=worker)
    merged = sorted(parts[0] + parts[1], key=lambda r: (r.ts, r.key_ or b""))
    results = [pipeline.process(merged[i : i + 50]) for i in range(0, len(merged), 50)]
    worker.close(30)
    registry = ModelRegistry(tmp / "registry", KEY)
    for blob in pipeline.governor.provenance.blobs():
        registry.put_blob(blob)
    for r in results:
        for v, m in zip(r.versions, r.models, strict=True):
            registry.register(v, m)
    return Retrained(settings, registry, MemoryPartition(parts[1]), results)


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> Retrained:
    settings = load_settings(None, drift=DRIFT, model={"warmup": 50}, retrain={"history_readings": 200})
    return _retrain(tmp_path_factory.mktemp("reproduce"), settings, _stream(700))


def test_a_retrain_from_the_topic_records_what_rebuilds_it(retrained: Retrained) -> None:
    m = retrained.registry.manifest(*retrained.version(2)).model
    assert (m.source, m.source_note, m.records_skipped) == ("topic", "", 0)
    assert m.trained_on.readings == 200 and m.test_data is not None and m.test_data.readings == 50
    assert m.shadow_data is not None and m.shadow_data.readings == retrained.settings.retrain.shadow_readings
    assert m.shadow_data.first_offset > m.trained_on.last_offset and m.shadow_quarantined == []
    assert m.seed is not None and m.search["strategy"] == "grid" and m.search["space"]["fading"]
    assert set(m.dependencies) == {"python", "numpy", "river", "scipy", "msgspec", "confluent-kafka"}
    recorded = json.loads(retrained.registry.blob(m.settings_sha256))
    assert recorded["retrain"]["history_readings"] == 200
    assert recorded["registry"]["signing_key"] is None
    assert retrained.registry.blob(m.rules_sha256) == RULES.read_bytes()
    v1 = retrained.registry.manifest(*retrained.version(1)).model
    assert v1.source == "" and v1.seed is None  # the online model: nothing to rebuild it from
    (action, *_) = [e for r in retrained.results for e in r.audit if e.action == "retrain"]
    assert "training on the pair's last 200 readings up to offset" in action.reason


def test_reproduce_rebuilds_a_byte_identical_artifact(retrained: Retrained) -> None:
    r = reproduce(
        retrained.registry, retrained.version(2), KafkaSettings(), reader=MemoryReader(retrained.partition)
    )
    assert r.identical and r.differences == []


def test_changed_readings_are_reported_field_by_field(retrained: Retrained) -> None:
    m = retrained.registry.manifest(*retrained.version(2)).model
    records = list(retrained.partition.records)
    at = m.trained_on.first_offset + 40
    old = records[at]
    assert old.value_ is not None and old.key_ == b"dev-1"
    records[at] = Record(old.value_.replace(b'"value":2', b'"value":3'), old.key_, at, old.ts, 1)
    r = reproduce(
        retrained.registry,
        retrained.version(2),
        KafkaSettings(),
        reader=MemoryReader(MemoryPartition(records)),
    )
    assert not r.identical
    assert any(c.field.startswith("model.state[") for c in r.differences)


def test_readings_gone_from_the_topic_cannot_reproduce(retrained: Retrained) -> None:
    m = retrained.registry.manifest(*retrained.version(2)).model
    cut = MemoryPartition(retrained.partition.records, low=m.trained_on.first_offset + 1)
    with pytest.raises(
        RegistryError, match=r"are gone from the topic, which now starts at offset \d+ \(retention\)"
    ):
        reproduce(retrained.registry, retrained.version(2), KafkaSettings(), reader=MemoryReader(cut))


def test_a_version_trained_from_the_ring_buffer_is_refused_with_the_reason(tmp_path: Path) -> None:
    settings = load_settings(None, drift=DRIFT, model={"warmup": 50}, retrain={"history_readings": 0})
    ring = _retrain(tmp_path, settings, _stream(700))
    m = ring.registry.manifest(*ring.version(2)).model
    assert (m.source, m.source_note) == ("buffer", "retrain.history_readings is 0")
    with pytest.raises(
        RegistryError, match=r"trained from the ring buffer .* cannot be reproduced from Kafka"
    ):
        reproduce(ring.registry, ring.version(2), KafkaSettings(), reader=MemoryReader(ring.partition))


def test_the_command_says_in_one_line_why_a_version_cannot_be_reproduced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(None, drift=DRIFT, model={"warmup": 50}, retrain={"history_readings": 0})
    _retrain(tmp_path, settings, _stream(700))
    monkeypatch.setenv("TELEMON_REGISTRY__DIR", str(tmp_path / "registry"))
    monkeypatch.setenv("TELEMON_REGISTRY__SIGNING_KEY", KEY.decode())
    code = main(["registry", "reproduce", *PAIR, "2"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "") and err.count("\n") == 1
    assert err.startswith("telemon registry reproduce: dev-1/temperature v2 was trained from the ring buffer")
    code = main(["registry", "show", *PAIR, "2"])
    out, _ = capsys.readouterr()
    assert code == 0 and "rows from    buffer (retrain.history_readings is 0)" in out


#: A manifest written before the lineage fields existed (README's v3 of the demo).
OLD_MANIFEST = b"""{
  "schema_version": 1,
  "model": {
    "device_id": "dev-0007", "sensor": "temperature", "version": 3, "parent": 1,
    "trained_on": {"topic": "telemon.readings", "partition": 2, "first_offset": 67216,
                   "last_offset": 71556, "readings": 32, "first_ts": 1767226080000, "last_ts": 1767226111000},
    "params": {"fading": 0.02, "var_fading": 0.005, "resolution": 0.01},
    "baseline": {"mean": [34.37983496007084], "var": [0.016878611939561635]},
    "trigger_rule": "score_drift", "trigger_alert_id": "965f8733636e615a",
    "code_version": "0.1.0+ed1065361e73", "config_hash": "89a082437f47168b", "created_at": 1767226238000,
    "test_data": null, "metrics": {"candidate_metric": 1.0}
  },
  "artifact": {"sha256": "651db021de087bb2", "bytes": 232,
               "python_class": "monitor.detect.model.AdaptiveGaussian", "pickle_protocol": 5},
  "registered_at": 1795726611570
}"""


def test_a_manifest_from_before_the_lineage_fields_decodes_and_is_refused_with_the_reason() -> None:
    m = msgspec.json.decode(OLD_MANIFEST, type=Manifest).model
    assert (m.source, m.seed, m.shadow_data, m.dependencies, m.settings_sha256) == ("", None, None, {}, "")
    with pytest.raises(RegistryError, match="registered before lineage was kept"):
        check_reproducible(VersionRef("dev-0007", "temperature", 3), m)


def test_blobs_are_stored_once_and_checked_against_their_digest(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path, KEY)
    digest = reg.put_blob(b"settings")
    assert reg.put_blob(b"settings") == digest and reg.blob(digest) == b"settings"
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == [digest]
    (tmp_path / "blobs" / digest).write_bytes(b"edited")
    with pytest.raises(ArtifactError, match="does not match its digest"):
        reg.blob(digest)
    with pytest.raises(RegistryError, match="is not in the registry"):
        reg.blob("0" * 64)
    with pytest.raises(RegistryError, match="not a SHA-256 digest"):
        reg.blob("../../etc/passwd")
