"""The model artifact: ``model.json`` round-trips bit for bit, old ``model.pkl`` versions still
load, unknown formats are refused with one line, and the shared registry carries both layouts."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.detect.model import AdaptiveGaussian
from monitor.govern import artifact
from monitor.govern.registry import Artifact, ArtifactError, ModelRegistry, VersionRef, sign_manifest
from monitor.govern.replication import Assembler, chunks
from tests.registry_kit import write_pickled_version
from tests.unit.test_registry import DEV, KEY, SENSOR, _model, _version


def _bits(xs: list[float]) -> list[bytes]:
    """The doubles' bits (every NaN as one: JSON's "NaN" keeps neither sign nor payload)."""
    return [struct.pack("<d", x) if not math.isnan(x) else b"NaN" for x in xs]


def _trained(k: int, n: int, trend: float) -> AdaptiveGaussian:
    rows = [tuple(math.sin(i * (j + 1) * 0.37) * 10 + j for j in range(k)) for i in range(n)]
    model = AdaptiveGaussian(k, fading=0.1, var_fading=0.01, resolution=0.001, trend=trend)
    for row in rows:
        model.learn(row)
    return model


@pytest.mark.parametrize(("k", "n", "trend"), [(1, 0, 0.0), (1, 3, 0.0), (2, 500, 0.3), (3, 1234, 0.1)])
def test_model_json_round_trips_bit_for_bit(k: int, n: int, trend: float) -> None:
    model = _trained(k, n, trend)
    loaded = artifact.decode(artifact.encode(model))
    assert _bits(loaded.state()) == _bits(model.state())
    assert loaded.dump() == model.dump()
    for f in [tuple(float(v + j) for j in range(k)) for v in (-3.0, 0.0, 9.5, 1e6)]:
        assert loaded.distance(f) == model.distance(f)
    assert loaded.score_one({"value": 20.0}) == model.score_one({"value": 20.0})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=4, max_size=4))
def test_every_double_round_trips(values: list[float]) -> None:
    """Subnormals, -0.0, NaN and the infinities included."""
    model = AdaptiveGaussian(1)
    model.set_state(values)
    loaded = artifact.decode(artifact.encode(model))
    assert _bits(loaded.state()) == _bits(model.state())


def test_model_json_is_the_documented_schema() -> None:
    model = _trained(1, 3, 0.0)
    doc = json.loads(artifact.encode(model))
    assert doc == {
        "format": "telemon.model.adaptive-gaussian",
        "format_version": 1,
        "params": {"n_features": 1, "fading": 0.1, "var_fading": 0.01, "resolution": 0.001, "trend": 0.0},
        "state": {
            "n": 3.0,
            "level": [model.state()[1]],
            "variance": [model.state()[2]],
            "trend": [0.0],
        },
    }


def _doc(**changes: object) -> bytes:
    doc = json.loads(artifact.encode(_trained(1, 3, 0.0)))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = doc
        for p in parents:
            node = node[p]
        node[leaf] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_doc(format_version=2), "is of format telemon.model.adaptive-gaussian v2, not"),
        (_doc(format="telemon.model.other"), "is of format telemon.model.other v1"),
        (_doc(params__n_features=2), "state.level has 1 values, not 2"),
        (_doc(params__n_features=0), "params.n_features is 0, not 1 to 3"),
        (_doc(state__level=["lots"]), "'lots' is not a number"),
        (_doc(state__extra=[]), "does not follow .*unknown field `extra`"),
        (_doc(params__fading="fast"), "does not follow"),
        (b"\x80\x04pickle", "is not a model file"),
        (b"[]", "is not a model file"),
    ],
)
def test_a_model_file_that_is_not_the_format_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        artifact.decode(data)


# --- in the registry -------------------------------------------------------------------------------


@pytest.fixture
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry", KEY)


def test_a_registered_version_is_model_json_and_loads_equal(reg: ModelRegistry) -> None:
    model = _trained(2, 300, 0.2)
    d = reg.register(_version(2, 1, model), model)
    a = reg.manifest(DEV, SENSOR, 2).artifact
    assert (a.file, a.format, a.format_version) == ("model.json", "telemon.model.adaptive-gaussian", 1)
    manifest = json.loads((d / "manifest.json").read_bytes())
    assert "pickle_protocol" not in manifest["artifact"]
    loaded = reg.load(DEV, SENSOR, 2)
    assert _bits(loaded.state()) == _bits(model.state()) and loaded.dump() == model.dump()


def test_a_version_registered_as_model_pkl_still_loads(reg: ModelRegistry) -> None:
    model = _model(23.5)
    write_pickled_version(reg, _version(2, 1, model), model)
    m = reg.manifest(DEV, SENSOR, 2)
    a = m.artifact
    assert (a.file, a.format, a.pickle_protocol) == ("model.pkl", "python-pickle", 5)
    assert reg.load(DEV, SENSOR, 2).dump() == model.dump()
    reg.promote(DEV, SENSOR, 2, reason="old versions stay usable", actor="cli:test")
    assert reg.serving(DEV, SENSOR) == 2


def test_a_tampered_model_pkl_is_still_refused(reg: ModelRegistry) -> None:
    model = _model()
    d = write_pickled_version(reg, _version(2, 1, model), model)
    (d / "model.pkl").write_bytes((d / "model.pkl").read_bytes()[:-1] + b"\x00")
    with pytest.raises(ArtifactError, match=r"model\.pkl does not match the digest in its signed manifest"):
        reg.load(DEV, SENSOR, 2)


def _resign(reg: ModelRegistry, d: Path, **artifact_fields: object) -> None:
    manifest = json.loads((d / "manifest.json").read_bytes())
    manifest["artifact"].update(artifact_fields)
    raw = json.dumps(manifest).encode()
    (d / "manifest.json").write_bytes(raw)
    (d / "signature").write_bytes(sign_manifest(reg.key, raw))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"format_version": 2},
            r"dev-0007/temperature v2: unknown artifact format telemon.model.adaptive-gaussian v2 "
            r"\(this telemon reads telemon.model.adaptive-gaussian v1, python-pickle v0\)",
        ),
        ({"format": "onnx", "file": "model.onnx"}, "unknown artifact format onnx v1"),
        ({"file": "model.pkl"}, "names 'model.pkl' for format telemon.model.adaptive-gaussian v1"),
        ({"file": "../../etc/passwd"}, "names '../../etc/passwd' for format"),
    ],
)
def test_an_unknown_format_is_refused_with_one_line(
    reg: ModelRegistry, fields: dict[str, object], message: str
) -> None:
    model = _model()
    d = reg.register(_version(2, 1, model), model)
    _resign(reg, d, **fields)
    with pytest.raises(ArtifactError, match=message) as exc:
        reg.load(DEV, SENSOR, 2)
    assert "\n" not in str(exc.value)


def test_a_signed_model_json_of_the_wrong_shape_is_refused(reg: ModelRegistry) -> None:
    model = _model()
    d = reg.register(_version(2, 1, model), model)
    bad = _doc(params__n_features=3)
    (d / "model.json").write_bytes(bad)
    _resign(reg, d, sha256=artifact_digest(bad), bytes=len(bad))
    with pytest.raises(ArtifactError, match=r"v2: model.json: state.level has 1 values, not 3"):
        reg.load(DEV, SENSOR, 2)


def artifact_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("layout", ["model.json", "model.pkl"])
def test_the_shared_registry_carries_both_layouts(reg: ModelRegistry, tmp_path: Path, layout: str) -> None:
    """What a replica publishes (version_files, in chunks) another installs, verified, as it was."""
    model = _model()
    version = _version(2, 1, model)
    if layout == "model.pkl":
        write_pickled_version(reg, version, model)
    else:
        reg.register(version, model)
    files = reg.version_files(DEV, SENSOR, 2)
    assert sorted(files) == sorted(["manifest.json", layout, "signature"])
    assembler = Assembler()
    (bundle,) = [b for _, v in chunks(VersionRef(DEV, SENSOR, 2), files) if (b := assembler.add(v))]
    other = ModelRegistry(tmp_path / "replica", KEY)
    assert other.install(VersionRef(DEV, SENSOR, 2), bundle.files)
    assert sorted(p.name for p in other.path(DEV, SENSOR, 2).iterdir()) == sorted(files)
    assert other.load(DEV, SENSOR, 2).dump() == model.dump()
    assert not other.install(VersionRef(DEV, SENSOR, 2), bundle.files)  # the first copy stays


def test_install_refuses_a_version_without_its_artifact(reg: ModelRegistry, tmp_path: Path) -> None:
    model = _model()
    reg.register(_version(2, 1, model), model)
    files = reg.version_files(DEV, SENSOR, 2)
    del files["model.json"]
    other = ModelRegistry(tmp_path / "replica", KEY)
    with pytest.raises(ArtifactError, match=r"v2: model\.json is missing"):
        other.install(VersionRef(DEV, SENSOR, 2), files)
    assert other.versions() == []


def test_the_model_of_a_manifest_decodes_as_before() -> None:
    """Manifests of model.pkl versions name no file or format: the defaults describe them."""
    raw = b'{"sha256": "ab", "bytes": 3, "python_class": "x", "pickle_protocol": 5}'
    a = msgspec.json.decode(raw, type=Artifact)
    assert (a.file, a.fmt) == ("model.pkl", ("python-pickle", 0))


def test_adopt_takes_model_json_versions_only(reg: ModelRegistry, tmp_path: Path) -> None:
    model = _model()
    d = write_pickled_version(ModelRegistry(tmp_path / "old", KEY), _version(2, 1, model), model)
    raw, pickled = (d / "manifest.json").read_bytes(), (d / "model.pkl").read_bytes()
    with pytest.raises(ArtifactError, match=r"only model\.json versions are taken from elsewhere"):
        reg.adopt(raw, pickled, actor="cli:test", reason="test")
    assert reg.versions() == []
