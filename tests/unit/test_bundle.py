"""``telemon registry export|import``: a version moves between two deployments (two registries,
two HMAC keys) as one bundle signed with Ed25519, loads equal there, and every damaged, truncated or
untrusted bundle is refused with one line and nothing registered."""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from monitor.cli.main import main
from monitor.govern import bundle
from monitor.govern.registry import ModelRegistry, VersionRef
from monitor.settings import load_settings
from tests.registry_kit import write_pickled_version
from tests.unit.test_registry import DEV, SENSOR, _add, _model, _version

KEY_A, KEY_B = b"a" * 32, b"b" * 32


@dataclass
class Deployment:
    config: Path
    reg: ModelRegistry
    public: Path  # its bundle key's public half


def _keypair(folder: Path) -> tuple[Path, Path, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    private, public = folder / "bundle.key", folder / "bundle.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    private.chmod(0o600)
    public.write_bytes(bundle.public_pem(key))
    return private, public, key


def _deployment(folder: Path, hmac_key: bytes, **registry: object) -> Deployment:
    folder.mkdir()
    key_file = folder / "registry.key"
    key_file.write_bytes(hmac_key)
    key_file.chmod(0o600)
    private, public, _ = _keypair(folder)
    settings = {"signing_key_file": str(key_file), "bundle_key_file": str(private), **registry}
    config = folder / "monitor.yaml"
    config.write_text(json.dumps({"state_dir": str(folder / "state"), "registry": settings}))
    return Deployment(config, ModelRegistry(folder / "state" / "registry", hmac_key), public)


@pytest.fixture
def a(tmp_path: Path) -> Deployment:
    """Deployment A: v2 and v3 of dev-0007/temperature, v3 serving."""
    d = _deployment(tmp_path / "a", KEY_A)
    _add(d.reg, 2, 1)
    _add(d.reg, 3, 2)
    d.reg.promote(DEV, SENSOR, 3, reason="retrained", actor="rule:score_drift")
    return d


@pytest.fixture
def b(tmp_path: Path, a: Deployment) -> Deployment:
    """Deployment B: another HMAC key, trusting A's bundle key; its registry does not exist yet."""
    return _deployment(tmp_path / "b", KEY_B, trusted_keys=[str(a.public)])


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["registry", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _export(capsys: pytest.CaptureFixture[str], d: Deployment, out: Path, version: int = 3) -> Path:
    code, text, err = _run(
        capsys, "export", DEV, SENSOR, str(version), "--output", str(out), "--config", str(d.config)
    )
    assert (code, err) == (0, ""), err
    assert text.startswith(f"{DEV}/{SENSOR} v{version} exported to {out} (")
    return out


def _bits(xs: list[float]) -> list[bytes]:
    return [struct.pack("<d", x) for x in xs]


def test_a_version_exported_from_one_deployment_loads_equal_in_another(
    a: Deployment, b: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _export(capsys, a, tmp_path / "v3.bundle")
    with tarfile.open(path) as tar:
        assert tar.getnames() == ["bundle.json", "manifest.json", "model.json", "audit.jsonl", "bundle.sig"]
    code, out, err = _run(capsys, "import", str(path), "--config", str(b.config), "--actor", "ops")
    assert (code, err) == (0, "")
    assert "dev-0007/temperature v3 imported from" in out and "v1 serves" in out
    original, imported = a.reg.load(DEV, SENSOR, 3), b.reg.load(DEV, SENSOR, 3)
    assert _bits(imported.state()) == _bits(original.state()) and imported.dump() == original.dump()
    assert imported.score_one({"value": 24.0}) == original.score_one({"value": 24.0})
    assert b.reg.manifest(DEV, SENSOR, 3) == a.reg.manifest(DEV, SENSOR, 3)  # lineage, byte for byte
    signature = json.loads((b.reg.path(DEV, SENSOR, 3) / "signature").read_bytes())
    assert signature["mac"] != json.loads((a.reg.path(DEV, SENSOR, 3) / "signature").read_bytes())["mac"]
    (event,) = b.reg.history(DEV, SENSOR)
    assert (event.kind, event.version, event.actor) == ("registered", 3, "ops")
    assert event.reason.startswith("imported from bundle v3.bundle: exported by cli:")
    assert bundle.key_id(bundle.load_public_key(a.public)) in event.reason
    assert b.reg.serving(DEV, SENSOR) == 1  # imported, not serving until promoted
    code, out, _ = _run(
        capsys, "promote", DEV, SENSOR, "3", "--reason", "from plant A", "--config", str(b.config)
    )
    assert code == 0 and b.reg.serving(DEV, SENSOR) == 3


def test_the_bundle_carries_the_versions_audit_events(
    a: Deployment, b: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _export(capsys, a, tmp_path / "v3.bundle")
    verified = bundle.read(path.read_bytes(), [bundle.load_public_key(a.public)])
    assert [e.kind for e in verified.events] == ["registered", "promoted"]
    assert verified.index.ref == VersionRef(DEV, SENSOR, 3)


def test_importing_the_same_bundle_twice_changes_nothing(
    a: Deployment, b: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _export(capsys, a, tmp_path / "v3.bundle")
    assert _run(capsys, "import", str(path), "--config", str(b.config))[0] == 0
    log = b.reg.audit_path.read_bytes()
    code, out, _ = _run(capsys, "import", str(path), "--config", str(b.config))
    assert (code, out) == (
        0,
        "dev-0007/temperature v3 is already registered with this content: nothing changed\n",
    )
    assert b.reg.audit_path.read_bytes() == log
    again = _export(capsys, a, tmp_path / "again.bundle")  # exported again: same version, same content
    assert _run(capsys, "import", str(again), "--config", str(b.config))[0] == 0
    assert b.reg.audit_path.read_bytes() == log


def test_a_version_number_taken_by_other_content_is_refused(
    a: Deployment, b: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _export(capsys, a, tmp_path / "v3.bundle")
    _add(b.reg, 3, 1, config_hash="plant-b")
    files = b.reg.version_files(DEV, SENSOR, 3)
    code, out, err = _run(capsys, "import", str(path), "--config", str(b.config))
    assert (code, out) == (1, "")
    assert (
        err == "telemon registry import: dev-0007/temperature v3 is already registered with other content\n"
    )
    assert b.reg.version_files(DEV, SENSOR, 3) == files


def test_a_version_stored_as_model_pkl_is_exported_as_model_json(
    a: Deployment, b: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(30.0)
    write_pickled_version(a.reg, _version(4, 3, model), model)
    path = _export(capsys, a, tmp_path / "v4.bundle", version=4)
    with tarfile.open(path) as tar:
        assert "model.pkl" not in tar.getnames()
    assert _run(capsys, "import", str(path), "--config", str(b.config))[0] == 0
    assert (b.reg.path(DEV, SENSOR, 4) / "model.json").is_file()
    assert b.reg.load(DEV, SENSOR, 4).dump() == model.dump()
    assert b.reg.manifest(DEV, SENSOR, 4).model == a.reg.manifest(DEV, SENSOR, 4).model
    _, shown, _ = _run(capsys, "show", DEV, SENSOR, "4", "--config", str(a.config))
    assert "artifact     model.pkl (pickle protocol 5, monitor.detect.model.AdaptiveGaussian)" in shown
    _, shown, _ = _run(capsys, "show", DEV, SENSOR, "4", "--config", str(b.config))
    assert "model.json (telemon.model.adaptive-gaussian v1, monitor.detect.model.AdaptiveGaussian)" in shown


# --- refused bundles -------------------------------------------------------------------------------


def _member_span(data: bytes, name: str) -> tuple[int, int]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        info = tar.getmember(name)
        return info.offset_data, info.size


def _flip(name: str, at: float = 0.5) -> Callable[[bytes], bytes]:
    def tamper(data: bytes) -> bytes:
        start, size = _member_span(data, name)
        out = bytearray(data)
        out[start + int(size * at)] ^= 0x01
        return bytes(out)

    return tamper


def _truncate(keep: float) -> Callable[[bytes], bytes]:
    return lambda data: data[: int(len(data) * keep)]


def _cut_into_the_signature(data: bytes) -> bytes:
    start, size = _member_span(data, "bundle.sig")
    return data[: start + size // 2]


def _extra_member(data: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for m, content in [*members, (tarfile.TarInfo("model.pkl"), b"x")]:
            m.size = len(content)
            tar.addfile(m, io.BytesIO(content))
    return out.getvalue()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_flip("manifest.json"), r"manifest.json does not match the digest in its signed index \(tampered"),
        (_flip("model.json"), "model.json does not match the digest in its signed index \\(tampered\\)"),
        (_flip("audit.jsonl"), "audit.jsonl does not match the digest in its signed index \\(tampered\\)"),
        (_flip("bundle.json"), "bundle.json does not match its signature \\(tampered\\)"),
        (_flip("bundle.sig", 0.9), "does not match its signature|unreadable bundle.sig"),
        (_flip("bundle.sig", 0.3), "unreadable bundle.sig|untrusted|does not trust"),
        (_truncate(0.5), "truncated|cut short|not a readable bundle"),
        (_truncate(0.05), "truncated|cut short|not a readable bundle"),
        (_cut_into_the_signature, "truncated|cut short|not a readable bundle"),
        (lambda data: b"", "truncated|not a readable bundle"),
        (lambda data: b"PK\x03\x04 a zip file", "not a readable bundle"),
        (_extra_member, "an unexpected member 'model.pkl'"),
    ],
    ids=[
        "manifest",
        "model",
        "audit",
        "index",
        "signature",
        "signature-key",
        "half",
        "header",
        "mid-signature",
        "empty",
        "zip",
        "extra-member",
    ],
)
def test_a_damaged_bundle_is_refused_and_nothing_registered(
    a: Deployment,
    b: Deployment,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[bytes], bytes],
    message: str,
) -> None:
    path = _export(capsys, a, tmp_path / "v3.bundle")
    path.write_bytes(tamper(path.read_bytes()))
    code, out, err = _run(capsys, "import", str(path), "--config", str(b.config))
    assert (code, out) == (1, "")
    assert err.startswith("telemon registry import: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert b.reg.versions() == [] and not b.reg.audit_path.exists()


def test_a_bundle_signed_by_an_untrusted_key_is_refused(
    a: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, stranger, _ = _keypair(tmp_path)
    c = _deployment(tmp_path / "c", KEY_B, trusted_keys=[str(stranger)])
    path = _export(capsys, a, tmp_path / "v3.bundle")
    code, _, err = _run(capsys, "import", str(path), "--config", str(c.config))
    assert code == 1
    assert "is signed by a key this deployment does not trust" in err and "--trust-key FILE" in err
    assert c.reg.versions() == []
    code, _, err = _run(capsys, "import", str(path), "--config", str(c.config), "--trust-key", str(a.public))
    assert (code, err) == (0, "")  # trusted on the command line


def _resigned(
    data: bytes, key: Ed25519PrivateKey, manifest: bytes | None = None, **index_changes: object
) -> bytes:
    """The bundle with its index (and manifest) changed and signed again by ``key`` (a trusted
    exporter's): a bundle whose signature verifies, but whose content is wrong."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    index = json.loads(members["bundle.json"])
    if manifest is not None:
        members["manifest.json"] = manifest
        listed = [m for m in index["members"] if m["name"] == "manifest.json"]
        listed[0].update(bytes=len(manifest), sha256=hashlib.sha256(manifest).hexdigest())
    index.update(index_changes)
    members["bundle.json"] = json.dumps(index).encode()
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    sig = {
        "algorithm": "ed25519",
        "key_id": hashlib.sha256(public).hexdigest()[:16],
        "public_key": public.hex(),
        "signature": key.sign(bundle.SIGNED_PREFIX + members["bundle.json"]).hex(),
    }
    members["bundle.sig"] = json.dumps(sig).encode()
    return bundle._tar(members.items(), 0)


def test_a_bundle_of_an_unknown_format_is_refused_with_one_line(
    a: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public, key = _keypair(tmp_path)
    path = _export(capsys, a, tmp_path / "v3.bundle")
    code, _, _ = _run(
        capsys,
        "export",
        DEV,
        SENSOR,
        "3",
        "-o",
        str(tmp_path / "k.bundle"),
        "--key",
        str(private),
        "--config",
        str(a.config),
    )
    assert code == 0
    data = (tmp_path / "k.bundle").read_bytes()
    c = _deployment(tmp_path / "c", KEY_B, trusted_keys=[str(public)])
    for changes, message in [
        (
            {"format_version": 2},
            "is of format telemon.registry.bundle v2; this telemon reads telemon.registry.bundle v1",
        ),
        ({"version": 2}, "its manifest.json describes dev-0007/temperature v3, not dev-0007/temperature v2"),
        ({"members": []}, "its index lists [], not manifest.json, model.json and audit.jsonl"),
    ]:
        path.write_bytes(_resigned(data, key, **changes))
        code, out, err = _run(capsys, "import", str(path), "--config", str(c.config))
        assert (code, out) == (1, "") and message in err and err.count("\n") == 1, err
    assert c.reg.versions() == []


def test_bad_keys_and_files_are_clear_errors(
    a: Deployment, b: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v3.bundle"
    code, _, err = _run(
        capsys, "export", DEV, SENSOR, "3", "-o", str(out), "--key", str(a.public), "--config", str(a.config)
    )
    assert code == 2 and "not an unencrypted PEM private key" in err
    code, _, err = _run(
        capsys,
        "export",
        DEV,
        SENSOR,
        "3",
        "-o",
        str(out),
        "--key",
        str(tmp_path / "nope"),
        "--config",
        str(a.config),
    )
    assert code == 2 and "cannot read the key file" in err
    code, _, err = _run(capsys, "export", DEV, SENSOR, "9", "-o", str(out), "--config", str(a.config))
    assert (code, err) == (1, "telemon registry export: dev-0007/temperature v9 is not registered\n")
    _export(capsys, a, out)
    code, _, err = _run(capsys, "export", DEV, SENSOR, "3", "-o", str(out), "--config", str(a.config))
    assert code == 1 and "exists: remove it or choose another --output" in err
    code, _, err = _run(capsys, "import", str(tmp_path / "missing.bundle"), "--config", str(b.config))
    assert code == 1 and "cannot read the bundle" in err
    code, _, err = _run(capsys, "import", str(out), "--config", str(a.config))  # A trusts nobody
    assert code == 2 and "no trusted bundle key" in err
    code, _, err = _run(capsys, "import", str(out), "--config", str(b.config), "--trust-key", str(a.config))
    assert code == 2 and "not a PEM public key" in err
    assert b.reg.versions() == []


def test_export_needs_a_bundle_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _deployment(tmp_path / "d", KEY_A, bundle_key_file=None)
    _add(d.reg, 2, 1)
    code, _, err = _run(
        capsys, "export", DEV, SENSOR, "2", "-o", str(tmp_path / "x"), "--config", str(d.config)
    )
    assert code == 2 and "no bundle key: pass --key FILE or set registry.bundle_key_file" in err


def test_json_output(
    a: Deployment, b: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v3.bundle"
    code, text, _ = _run(
        capsys, "export", DEV, SENSOR, "3", "-o", str(out), "--json", "--config", str(a.config)
    )
    exported = json.loads(text)
    assert code == 0 and exported["bytes"] == out.stat().st_size and exported["version"] == 3
    code, text, _ = _run(capsys, "import", str(out), "--json", "--config", str(b.config))
    doc = json.loads(text)
    assert (doc["imported"], doc["serving"], doc["origin"]["key_id"]) == (True, 1, exported["key_id"])
    assert msgspec.json.decode(text)["version"] == 3


def test_a_signed_bundle_whose_manifest_names_a_pickle_is_refused(
    a: Deployment, b: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even signed by a trusted key, a bundle never brings a pickle in."""
    private, public, key = _keypair(tmp_path)
    path = tmp_path / "v3.bundle"
    args = ["export", DEV, SENSOR, "3", "-o", str(path), "--key", str(private), "--config", str(a.config)]
    assert _run(capsys, *args)[0] == 0
    manifest = json.loads(a.reg.version_files(DEV, SENSOR, 3)["manifest.json"])
    manifest["artifact"].update(file="model.pkl", format="python-pickle", format_version=0)
    path.write_bytes(_resigned(path.read_bytes(), key, manifest=json.dumps(manifest).encode()))
    code, _, err = _run(capsys, "import", str(path), "--config", str(b.config), "--trust-key", str(public))
    assert code == 1 and "names model.pkl of format python-pickle v0, not model.json" in err
    assert b.reg.versions() == []


def test_key_paths_in_a_config_file_are_relative_to_its_folder(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "monitor.yaml"
    config.parent.mkdir()
    config.write_text(
        "registry:\n  bundle_key_file: keys/bundle.key\n  trusted_keys: [plant-a.pub, /abs/b.pub]\n"
    )
    r = load_settings(config).registry
    assert r.bundle_key_file == tmp_path / "etc" / "keys" / "bundle.key"
    assert r.trusted_keys == [tmp_path / "etc" / "plant-a.pub", Path("/abs/b.pub")]
