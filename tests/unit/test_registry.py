"""Tests for the model registry: signing keys, restricted unpickling, signed versions, tampering,
lineage and diff, promotion/rollback through the audit log, and ``telemon registry`` end to end."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import stat
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from pydantic import SecretStr, ValidationError
from river.drift import ADWIN

from monitor import errors
from monitor.cli.main import main
from monitor.common import safepickle
from monitor.detect.model import AdaptiveGaussian
from monitor.govern.registry import (
    ArtifactError,
    AuditEvent,
    Feedback,
    ModelRegistry,
    ModelVersion,
    RegistryError,
    TrainingData,
    UnknownVersionError,
    VersionRef,
    feedback,
    open_registry,
    sign_manifest,
)
from monitor.settings import RegistrySettings, Settings, load_settings
from monitor.state import signing
from tests.registry_kit import write_pickled_version

KEY = b"k" * 32
DEV, SENSOR = "dev-0007", "temperature"
T0 = 1_767_225_600_000


def _model(level: float = 21.0) -> AdaptiveGaussian:
    return AdaptiveGaussian.fit([(level,), (level + 0.5,), (level - 0.25,)], resolution=0.01)


def _version(v: int, parent: int, model: AdaptiveGaussian, **changes: object) -> ModelVersion:
    off = 1000 * v
    base = ModelVersion(
        device_id=DEV,
        sensor=SENSOR,
        version=v,
        parent=parent,
        trained_on=TrainingData(
            "telemon.readings", 3, off, off + 31, 32, T0 + v * 60_000, T0 + v * 60_000 + 31_000
        ),
        params={"fading": 0.05, "var_fading": 0.005},
        baseline=model.params(),
        trigger_rule="score_drift",
        trigger_alert_id=f"{v:016x}",
        code_version="0.1.0+test",
        config_hash="cfg1",
        created_at=T0 + v * 60_000 + 31_000,
        test_data=TrainingData("telemon.readings", 3, off + 24, off + 31, 8, T0, T0 + 1),
        metrics={"auc": 0.9},
    )
    return msgspec.structs.replace(base, **changes)


def _add(reg: ModelRegistry, v: int, parent: int, **changes: object) -> ModelVersion:
    model = _model(20.0 + v)
    version = _version(v, parent, model, **changes)
    reg.register(version, model)
    return version


@pytest.fixture
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry", KEY)


def _vdir(reg: ModelRegistry, v: int) -> Path:
    return reg.path(DEV, SENSOR, v)


# --- signing keys ----------------------------------------------------------------------------------


def test_key_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TELEMON_REGISTRY__SIGNING_KEY", "s" * 40)
    s = load_settings(state_dir=str(tmp_path))
    assert signing.load_key(s.registry, tmp_path / "signing.key") == b"s" * 40
    assert not (tmp_path / "signing.key").exists()


def test_key_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("a" * 64 + "\n")
    path.chmod(0o600)
    assert signing.load_key(RegistrySettings(signing_key_file=path), tmp_path / "gen") == b"a" * 64


@pytest.mark.parametrize("source", ["secret", "file"])
def test_short_keys_are_refused(tmp_path: Path, source: str) -> None:
    path = tmp_path / "key"
    path.write_text("short\n")
    cfg = (
        RegistrySettings(signing_key=SecretStr("short"))
        if source == "secret"
        else RegistrySettings(signing_key_file=path)
    )
    with pytest.raises(errors.SigningKeyError, match="the signing key has 5 bytes; at least 32"):
        signing.load_key(cfg, tmp_path / "gen")


def test_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(errors.SigningKeyError, match="cannot read the signing key file"):
        signing.load_key(RegistrySettings(signing_key_file=tmp_path / "nope"), tmp_path / "gen")


def test_default_key_is_generated_once_private_and_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "registry" / "signing.key"
    with caplog.at_level(logging.WARNING):
        key = signing.load_key(RegistrySettings(), path)
    assert len(key) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "generated" in caplog.text
    assert signing.load_key(RegistrySettings(), path) == key
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_no_key_without_generation_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(errors.SigningKeyError, match=r"TELEMON_REGISTRY__SIGNING_KEY.*generate_key is false"):
        signing.load_key(RegistrySettings(generate_key=False), tmp_path / "signing.key")
    with pytest.raises(errors.SigningKeyError, match="no generated key exists"):
        signing.load_key(RegistrySettings(), tmp_path / "signing.key", create=False)


def test_one_key_source_only(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        RegistrySettings(signing_key=SecretStr("x" * 32), signing_key_file=tmp_path / "k")


def test_sign_and_verify() -> None:
    mac = signing.sign(KEY, b"data")
    assert signing.verify(KEY, b"data", mac)
    assert not signing.verify(KEY, b"datA", mac)
    assert not signing.verify(b"j" * 32, b"data", mac)
    assert not signing.verify(KEY, b"data", "not hex \u00e9")
    assert signing.key_id(KEY) != signing.key_id(b"j" * 32)


# --- restricted unpickling -------------------------------------------------------------------------


def _adwin() -> ADWIN:
    a = ADWIN(delta=0.002)
    for i in range(200):
        a.update((i % 7) / 7)
    return a


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_models_and_adwins_round_trip(protocol: int) -> None:
    m, a = _model(), _adwin()
    models, adwins = safepickle.loads(pickle.dumps(([[m, None]], [[a], [None]]), protocol=protocol))
    assert models[0][0]._state == m._state and models[0][0].params() == m.params()
    assert pickle.dumps(adwins[0][0]) == pickle.dumps(a)
    assert adwins[0][0].update(0.5) is None and models[0][1] is None


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(errors.RefusedClassError, match=r"refusing to unpickle \w+\.system"):
        safepickle.loads(pickle.dumps(_Evil(marker)))
    assert not marker.exists()


@pytest.mark.parametrize("obj", [eval, Path("x"), {1, 2}.__class__.__mro__, ValueError("x")])
def test_other_globals_are_refused(obj: object) -> None:
    with pytest.raises(errors.RefusedClassError):
        safepickle.loads(pickle.dumps(obj))


def test_the_drift_classes_are_not_model_classes() -> None:
    with pytest.raises(errors.RefusedClassError, match="ADWIN"):
        safepickle.loads(pickle.dumps(_adwin()), safepickle.MODEL_CLASSES)


# --- register and load -----------------------------------------------------------------------------


def test_round_trip(reg: ModelRegistry) -> None:
    model = _model()
    version = _version(2, 1, model)
    path = reg.register(version, model)
    assert path == reg.root / "models" / DEV / SENSOR / "v2"
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "model.json", "signature"]
    loaded = reg.load(DEV, SENSOR, 2)
    assert loaded._state == model._state and loaded.score_one({"value": 21.0}) == model.score_one(
        {"value": 21.0}
    )
    manifest = reg.manifest(DEV, SENSOR, 2)
    assert manifest.model == version
    assert manifest.artifact.python_class == "monitor.detect.model.AdaptiveGaussian"
    assert reg.versions() == [VersionRef(DEV, SENSOR, 2)]
    (event,) = reg.events()[0]
    assert (event.kind, event.version, event.actor) == ("registered", 2, "rule:score_drift")


def test_registering_again_is_idempotent_but_not_with_other_content(reg: ModelRegistry) -> None:
    model = _model()
    reg.register(_version(2, 1, model), model)
    reg.register(_version(2, 1, model), model)
    assert len(reg.events()[0]) == 1
    with pytest.raises(RegistryError, match="already registered with other content"):
        reg.register(_version(2, 1, model, config_hash="other"), model)


def test_only_models_are_registered(reg: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="only AdaptiveGaussian"):
        reg.register(_version(2, 1, _model()), _adwin())  # type: ignore[arg-type]


def test_names_are_validated(reg: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="not a device id"):
        reg.load("../../etc", SENSOR, 2)
    with pytest.raises(RegistryError, match="not a sensor name"):
        reg.load(DEV, "../passwd", 2)
    with pytest.raises(RegistryError, match="not a device id"):
        reg.versions("*")


def _flip_model_byte(reg: ModelRegistry) -> None:
    path = _vdir(reg, 2) / "model.json"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_manifest(reg: ModelRegistry) -> None:
    path = _vdir(reg, 2) / "manifest.json"
    path.write_text(path.read_text().replace('"first_offset": 2000', '"first_offset": 1999'))


def _delete_signature(reg: ModelRegistry) -> None:
    (_vdir(reg, 2) / "signature").unlink()


def _garble_signature(reg: ModelRegistry) -> None:
    (_vdir(reg, 2) / "signature").write_text("hmac-sha256 deadbeef\n")


def _delete_model(reg: ModelRegistry) -> None:
    (_vdir(reg, 2) / "model.json").unlink()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_flip_model_byte, "model.json does not match the digest in its signed manifest"),
        (_edit_manifest, "manifest.json does not match its signature"),
        (_delete_signature, "is unsigned"),
        (_garble_signature, "unreadable signature file"),
        (_delete_model, "model.json is missing"),
    ],
)
def test_tampered_versions_are_refused(
    reg: ModelRegistry, tamper: Callable[[ModelRegistry], None], message: str
) -> None:
    _add(reg, 2, 1)
    tamper(reg)
    with pytest.raises(ArtifactError, match=message):
        reg.load(DEV, SENSOR, 2)
    with pytest.raises(ArtifactError, match=message):
        reg.manifest(DEV, SENSOR, 2)


def test_another_key_is_refused(reg: ModelRegistry) -> None:
    _add(reg, 2, 1)
    other = ModelRegistry(reg.root, b"j" * 32)
    with pytest.raises(ArtifactError, match="signed with another key"):
        other.load(DEV, SENSOR, 2)


def test_a_version_copied_to_another_place_is_refused(reg: ModelRegistry) -> None:
    _add(reg, 2, 1)
    _vdir(reg, 2).rename(_vdir(reg, 5))
    with pytest.raises(ArtifactError, match=r"its manifest\.json describes dev-0007/temperature v2"):
        reg.load(DEV, SENSOR, 5)


def test_a_signed_malicious_pickle_is_still_refused(reg: ModelRegistry, tmp_path: Path) -> None:
    """A leaked key lets an attacker sign anything; the restricted unpickler still refuses it."""
    model = _model()
    d = write_pickled_version(reg, _version(2, 1, model), model)
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(marker))
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["artifact"]["sha256"] = hashlib.sha256(evil).hexdigest()
    raw = json.dumps(manifest).encode()
    (d / "model.pkl").write_bytes(evil)
    (d / "manifest.json").write_bytes(raw)
    (d / "signature").write_bytes(sign_manifest(KEY, raw))
    with pytest.raises(ArtifactError, match=r"model.pkl refused: refusing to unpickle \w+\.system"):
        reg.load(DEV, SENSOR, 2)
    assert not marker.exists()


def test_unknown_versions(reg: ModelRegistry) -> None:
    with pytest.raises(UnknownVersionError, match="v3 is not registered"):
        reg.load(DEV, SENSOR, 3)
    with pytest.raises(UnknownVersionError, match="v1 is the online model"):
        reg.manifest(DEV, SENSOR, 1)


# --- lineage and diff ------------------------------------------------------------------------------


def test_lineage_follows_registered_parents(reg: ModelRegistry) -> None:
    for v in (2, 3, 4):
        _add(reg, v, v - 1)
    chain = reg.lineage(DEV, SENSOR, 4)
    assert [m.model.version for m in chain] == [4, 3, 2]
    assert [m.model.trained_on.first_offset for m in chain] == [4000, 3000, 2000]
    assert chain[-1].model.parent == 1  # the online model, not registered


def test_diff_lists_only_what_changed(reg: ModelRegistry) -> None:
    _add(reg, 2, 1)
    _add(reg, 3, 2, params={"fading": 0.1, "var_fading": 0.005}, metrics={"auc": 0.95}, config_hash="cfg2")
    changes = {c.field: (c.a, c.b) for c in reg.diff(VersionRef(DEV, SENSOR, 2), VersionRef(DEV, SENSOR, 3))}
    assert changes["params.fading"] == (0.05, 0.1)
    assert changes["metrics.auc"] == (0.9, 0.95)
    assert changes["config_hash"] == ("cfg1", "cfg2")
    assert changes["trained_on.first_offset"] == (2000, 3000)
    assert "baseline.mean[0]" in changes
    assert "params.var_fading" not in changes and "code_version" not in changes


# --- serving, promotion, rollback, audit log -------------------------------------------------------


def test_serving_is_1_until_something_is_promoted(reg: ModelRegistry) -> None:
    _add(reg, 2, 1)
    assert reg.serving(DEV, SENSOR) == 1 and reg.serving_event(DEV, SENSOR) is None


def test_promote_and_rollback(reg: ModelRegistry) -> None:
    for v in (2, 3):
        _add(reg, v, v - 1)
    event = reg.promote(DEV, SENSOR, 3, reason="validated", actor="cli:alice")
    assert event is not None and (event.kind, event.version, event.previous) == ("promoted", 3, 1)
    assert reg.serving(DEV, SENSOR) == 3
    assert reg.promote(DEV, SENSOR, 3, reason="again", actor="cli:alice") is None  # already serving
    back = reg.rollback(DEV, SENSOR, reason="false alarms", actor="cli:bob")
    assert (back.kind, back.version, back.previous, back.actor) == ("rolled_back", 2, 3, "cli:bob")
    assert reg.serving(DEV, SENSOR) == 2
    assert reg.rollback(DEV, SENSOR, to=3, reason="fixed", actor="cli:bob").version == 3
    kinds = [e.kind for e in reg.history(DEV, SENSOR)]
    assert kinds == ["registered", "registered", "promoted", "rolled_back", "rolled_back"]


def test_rollback_needs_a_registered_target(reg: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="no parent to roll back to"):
        reg.rollback(DEV, SENSOR, reason="r", actor="a")
    _add(reg, 2, 1)
    reg.promote(DEV, SENSOR, 2, reason="r", actor="a")
    with pytest.raises(UnknownVersionError, match="v1 is not registered"):
        reg.rollback(DEV, SENSOR, reason="r", actor="a")
    assert reg.serving(DEV, SENSOR) == 2


def test_promoting_an_unknown_version_records_nothing(reg: ModelRegistry) -> None:
    with pytest.raises(UnknownVersionError):
        reg.promote(DEV, SENSOR, 7, reason="r", actor="a")
    assert reg.events() == ([], 0)


def test_a_tampered_promotion_is_rejected_and_the_current_version_keeps_serving(reg: ModelRegistry) -> None:
    for v in (2, 3):
        _add(reg, v, v - 1)
    reg.promote(DEV, SENSOR, 2, reason="r", actor="a")
    (_vdir(reg, 3) / "signature").unlink()
    with pytest.raises(ArtifactError, match="unsigned"):
        reg.promote(DEV, SENSOR, 3, reason="r", actor="cli:mallory")
    rejected = reg.history(DEV, SENSOR)[-1]
    assert (rejected.kind, rejected.version, rejected.previous, rejected.actor) == (
        "rejected",
        3,
        2,
        "cli:mallory",
    )
    assert reg.serving(DEV, SENSOR) == 2


def test_a_promotion_the_service_could_not_apply_leaves_the_previous_version_serving(
    reg: ModelRegistry,
) -> None:
    for v in (2, 3):
        _add(reg, v, v - 1)
    reg.promote(DEV, SENSOR, 2, reason="r", actor="a")
    reg.promote(DEV, SENSOR, 3, reason="r", actor="cli:alice")
    refused = AuditEvent(
        kind="rejected", device_id=DEV, sensor=SENSOR, version=3, previous=2, actor="service"
    )
    reg.record(refused)
    assert reg.serving(DEV, SENSOR) == 2
    assert reg.serving_event(DEV, SENSOR) == reg.events()[0][-1]


def test_events_are_tailed_from_a_position(reg: ModelRegistry) -> None:
    _add(reg, 2, 1)
    first, pos = reg.events()
    assert len(first) == 1 and pos == reg.audit_path.stat().st_size
    cli = ModelRegistry(reg.root, KEY)  # another process, e.g. `telemon registry promote`
    cli.promote(DEV, SENSOR, 2, reason="r", actor="cli:alice")
    new, pos2 = reg.events(pos)
    assert [e.kind for e in new] == ["promoted"] and reg.events(pos2) == ([], pos2)
    assert reg.serving(DEV, SENSOR) == 2


def test_a_partial_line_waits_and_a_corrupt_line_is_skipped(
    reg: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    event = AuditEvent(
        kind="rule_fired", device_id=DEV, sensor=SENSOR, rule="score_drift", signals={"psi": 0.8}
    )
    reg.record(event)
    _, pos = reg.events()
    line = msgspec.json.encode(msgspec.structs.replace(event, wall_ts=1))
    with reg.audit_path.open("ab") as f:
        f.write(b"{not json}\n" + line[:10])
    with caplog.at_level(logging.WARNING):
        assert reg.events(pos) == ([], pos + len(b"{not json}\n"))
    assert "unreadable line" in caplog.text
    with reg.audit_path.open("ab") as f:
        f.write(line[10:] + b"\n")
    events, _ = reg.events(pos)
    assert [e.signals for e in events] == [{"psi": 0.8}]


def test_record_stamps_the_wall_clock(reg: ModelRegistry) -> None:
    reg.record(AuditEvent(kind="action", device_id=DEV, sensor=SENSOR, action="retrain", rule="score_drift"))
    (event,) = reg.events()[0]
    assert event.wall_ts > T0 and event.action == "retrain"


def test_open_registry_uses_the_settings(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, registry=RegistrySettings(signing_key=SecretStr("z" * 32)))
    reg = open_registry(settings)
    assert reg.root == tmp_path / "registry" and reg.key == b"z" * 32


# --- the command line ------------------------------------------------------------------------------


@pytest.fixture
def cli_reg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    """A registry with v2 and v3 (serving, triggered by a recorded rule firing) in the state dir the
    command line reads (from the environment)."""
    monkeypatch.setenv("TELEMON_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TELEMON_REGISTRY__SIGNING_KEY", KEY.decode())
    reg = ModelRegistry(tmp_path / "state" / "registry", KEY)
    _add(reg, 2, 1)
    _add(reg, 3, 2, params={"fading": 0.1, "var_fading": 0.005})
    firing = AuditEvent(
        kind="rule_fired",
        device_id=DEV,
        sensor=SENSOR,
        version=2,
        rule="score_drift",
        alert_id=f"{3:016x}",
        signals={"ks_pvalue": 1e-9, "psi": 0.8},
    )
    reg.record(firing)
    reg.promote(DEV, SENSOR, 3, reason="retrained after score_drift", actor="rule:score_drift")
    return reg


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["registry", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_list(cli_reg: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["DEVICE", "SENSOR", "VERSION", "PARENT", "SERVING"]
    assert "v3" in lines[3] and " * " in lines[3] and "offsets 3000-3031" in lines[3]
    code, out, _ = _run(capsys, "list", "--json")
    rows = json.loads(out)
    assert [(r["version"], r["serving"], r["status"]) for r in rows] == [(2, False, "ok"), (3, True, "ok")]


def test_cli_show_says_why_a_version_serves_and_what_it_was_trained_on(
    cli_reg: ModelRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "show", DEV, SENSOR)
    assert code == 0
    assert out.startswith("dev-0007/temperature v3 (serving)")
    assert "promoted v3 (was v1) by rule:score_drift: retrained after score_drift" in out
    assert "signals at the firing: ks_pvalue=1e-09 psi=0.8" in out
    assert "telemon.readings[3] offsets 3000-3031 (32 readings), 2026-01-01 00:03:00Z" in out
    assert "signature verified" in out
    code, out, _ = _run(capsys, "show", DEV, SENSOR, "2", "--json")
    doc = json.loads(out)
    assert doc["serving"] == 3 and doc["manifest"]["model"]["trained_on"]["first_offset"] == 2000
    assert doc["why_serving"]["kind"] == "promoted"


def _verdict(n: int, kind: str, version: int = 3, ts: int = 1_767_229_200_000) -> AuditEvent:
    return AuditEvent(
        kind="verdict",
        device_id=DEV,
        sensor=SENSOR,
        version=version,
        actor="operator:alice",
        rule="score_drift",
        alert_id=f"{n:016x}",
        verdict=kind,
        event_ts=ts,
    )


def test_feedback_counts_the_latest_verdict_per_alert_once() -> None:
    events = [
        _verdict(1, "true_positive"),
        _verdict(1, "true_positive"),  # recorded by a second replica
        _verdict(2, "true_positive", ts=1_767_229_200_000),
        _verdict(2, "false_positive", ts=1_767_229_300_000),  # corrected
        _verdict(3, "false_positive", ts=1_767_229_300_000),
        _verdict(3, "true_positive", ts=1_767_229_200_000),  # an older verdict, recorded late
        _verdict(4, "expected_maintenance"),
        _verdict(5, "true_positive", version=2),
    ]
    assert feedback(events) == {
        VersionRef(DEV, SENSOR, 3): Feedback(true_positive=1, false_positive=2, maintenance=1),
        VersionRef(DEV, SENSOR, 2): Feedback(true_positive=1),
    }
    assert Feedback(1, 2, 1).precision == pytest.approx(1 / 3) and Feedback(0, 0, 1).precision is None


def test_cli_shows_each_versions_feedback(cli_reg: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    cli_reg.record(_verdict(1, "true_positive"), _verdict(2, "false_positive"), _verdict(3, "true_positive"))
    code, out, _ = _run(capsys, "show", DEV, SENSOR)
    assert code == 0
    assert (
        "feedback     operators' verdicts on its alerts: 2 TP, 1 FP, 0 expected maintenance; precision 0.67"
        in out
    )
    assert f"verdict false_positive on alert {2:016x} of rule score_drift (v3) by operator:alice" in out
    code, out, _ = _run(capsys, "list")
    assert "2 TP 1 FP (0.67)" in out.splitlines()[3]
    code, out, _ = _run(capsys, "list", "--json")
    assert [r["feedback"]["precision"] for r in json.loads(out)] == [None, pytest.approx(2 / 3)]


def test_cli_show_the_online_model(cli_reg: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "show", DEV, SENSOR, "1")
    assert code == 0 and "not serving: v3 serves" in out and "online model" in out


def test_cli_lineage_and_diff(cli_reg: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "lineage", DEV, SENSOR)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["v3", "v2", "v1"]
    code, out, _ = _run(capsys, "diff", DEV, SENSOR, "2", "3", "--json")
    changes = {c["field"]: (c["a"], c["b"]) for c in json.loads(out)}
    assert changes["params.fading"] == (0.05, 0.1)
    code, out, _ = _run(capsys, "diff", DEV, SENSOR, "v2", "v3")
    assert code == 0 and "params.fading" in out


def test_cli_promote_and_rollback(cli_reg: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "rollback", DEV, SENSOR, "--reason", "false alarms", "--actor", "cli:bob")
    assert (code, out.strip()) == (0, "dev-0007/temperature: rolled back to v2 (was v3)")
    code, out, _ = _run(capsys, "promote", DEV, SENSOR, "3", "--reason", "fixed", "--json")
    assert code == 0 and json.loads(out)["previous"] == 2
    assert cli_reg.serving(DEV, SENSOR) == 3
    assert cli_reg.history(DEV, SENSOR)[-2].actor == "cli:bob"


def test_cli_unknown_version_exits_1_with_one_line(
    cli_reg: ModelRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "show", DEV, SENSOR, "9")
    assert (code, out) == (1, "")
    assert err == "telemon registry show: dev-0007/temperature v9 is not registered\n"


def test_cli_tampered_artifact_exits_1(cli_reg: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    _flip_model_byte(cli_reg)
    code, _, err = _run(capsys, "promote", DEV, SENSOR, "2", "--reason", "r")
    assert code == 1 and "does not match the digest" in err and err.count("\n") == 1
    assert cli_reg.serving(DEV, SENSOR) == 3
    code, out, _ = _run(capsys, "list")
    assert code == 0 and "REFUSED: dev-0007/temperature v2: model.json does not match" in out
    code, _, err = _run(capsys, "show", DEV, SENSOR, "2")
    assert code == 1 and "tampered" in err


def test_cli_without_a_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TELEMON_STATE_DIR", str(tmp_path))
    assert _run(capsys, "list")[:2] == (0, f"no model versions registered in {tmp_path / 'registry'}\n")
    code, _, err = _run(capsys, "show", DEV, SENSOR)
    assert code == 1 and "no registry at" in err
    assert not (tmp_path / "registry").exists()  # reading never creates a key or a directory


def test_cli_bad_key_is_a_configuration_error(
    cli_reg: ModelRegistry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TELEMON_REGISTRY__SIGNING_KEY", "short")
    code, _, err = _run(capsys, "list")
    assert code == 2 and "at least 32" in err


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["registry", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(action in out for action in ("list", "show", "diff", "lineage", "promote", "rollback"))


# --- files that are not regular files --------------------------------------------------------------


@pytest.mark.parametrize("name", ["manifest.json", "model.json", "signature"])
def test_a_fifo_in_a_version_directory_is_refused_at_once(reg: ModelRegistry, name: str) -> None:
    _add(reg, 2, 1)
    path = _vdir(reg, 2) / name
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(ArtifactError, match="not a regular file"):
        reg.load(DEV, SENSOR, 2)


def test_a_fifo_as_the_audit_log_is_refused_not_waited_on(
    reg: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    reg.root.mkdir(parents=True)
    os.mkfifo(reg.audit_path)
    with pytest.raises(RegistryError, match="not a regular file"):
        reg.record(AuditEvent(kind="action", device_id=DEV, sensor=SENSOR))
    assert reg.events() == ([], 0)
    assert reg.events() == ([], 0)
    assert caplog.text.count("cannot read the audit log") == 1  # said once


def test_generated_key_lives_in_the_state_folder(tmp_path: Path) -> None:
    settings = load_settings(None, state_dir=str(tmp_path))
    key = open_registry(settings).key
    assert (tmp_path / "signing.key").read_bytes().rstrip() == key
    assert (tmp_path / "signing.key").stat().st_mode & 0o777 == 0o600
    assert open_registry(settings).key == key  # and is the one every later start uses


def test_a_key_generated_by_an_earlier_version_in_the_registry_is_still_found(tmp_path: Path) -> None:
    earlier = tmp_path / "registry" / "signing.key"
    earlier.parent.mkdir()
    earlier.write_text("e" * 64 + "\n")
    assert open_registry(load_settings(None, state_dir=str(tmp_path))).key == b"e" * 64


def test_a_model_pickled_before_the_package_moved_still_loads() -> None:
    m = AdaptiveGaussian.fit([(1.0,), (2.0,), (3.0,)])
    old = pickle.dumps(m, protocol=2).replace(b"cmonitor.detect.model\n", b"cmonitor.model\n")
    assert b"cmonitor.model\n" in old
    loaded = safepickle.loads(old)
    assert isinstance(loaded, AdaptiveGaussian) and loaded.dump() == m.dump()


def test_an_event_is_in_the_audit_log_once(tmp_path: Path) -> None:
    """A stream event made again (a batch processed again, read back from the audit topic) has the
    same identity whatever its wall-clock time; two commands at different times do not."""
    reg = ModelRegistry(tmp_path, KEY)
    fired = AuditEvent(kind="rule_fired", device_id=DEV, sensor=SENSOR, rule="score_drift", event_ts=T0)
    assert [e.kind for e in reg.record(fired, fired)] == ["rule_fired"]
    assert reg.record(fired) == []
    other = ModelRegistry(tmp_path, KEY)  # another process on the same directory
    assert other.record(msgspec.structs.replace(fired, wall_ts=5)) == []
    promoted = AuditEvent(
        kind="promoted", device_id=DEV, sensor=SENSOR, version=2, actor="cli:ops", wall_ts=1
    )
    assert len(other.record(promoted, msgspec.structs.replace(promoted, wall_ts=2))) == 2
    events = reg.events()[0]
    assert [e.kind for e in events] == ["rule_fired", "promoted", "promoted"]
    assert len({e.id for e in events}) == 3
