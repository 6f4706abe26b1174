"""Version bundles: one registered version in one signed file, to move it between deployments.

A bundle is an uncompressed POSIX tar archive (``tar -tvf`` lists it, ``tar -xOf FILE
model.json`` prints a member) of five regular files, in this order:

================  ================================================================================
``bundle.json``   the index: ``format`` ``telemon.registry.bundle``, ``format_version`` 1, the
                  version (``device_id``, ``sensor``, ``version``), its ``origin`` (bundle key id,
                  host, who exported it and when, code version) and each other member's name,
                  size and SHA-256
``manifest.json`` the version's signed manifest (its lineage: the ModelVersion), byte for byte
``model.json``    the model (:mod:`monitor.govern.artifact`); a version registered as
                  ``model.pkl`` is exported in this format, so no bundle holds a pickle
``audit.jsonl``   the version's events in the exporting registry's audit trail (provenance only)
``bundle.sig``    ``{"algorithm": "ed25519", "key_id", "public_key", "signature"}``: the Ed25519
                  signature of ``b"telemon-registry-bundle-v1\\n" + bundle.json``
================  ================================================================================

The signature covers the index, and the index the digest of every other member, so a changed byte
anywhere, a missing, extra or repeated member and a truncated file are all refused. A registry's
HMAC key cannot sign a bundle (the importing deployment does not have it, and must not: whoever
holds it can forge that deployment's versions); the exporter signs with an Ed25519 private key
(``registry.bundle_key_file`` or ``--key``) and the importer accepts only bundles signed by a
public key it trusts (``registry.trusted_keys`` or ``--trust-key``). :func:`read` checks all of it
and returns the manifest and model to register: nothing is registered from a bundle that fails.
"""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from monitor.common import files
from monitor.errors import BundleError, SigningKeyError
from monitor.govern import artifact as formats
from monitor.govern.registry import (
    MANIFEST,
    Artifact,
    AuditEvent,
    Manifest,
    ModelRegistry,
    VersionRef,
    code_version,
    encode_event,
)

FORMAT, FORMAT_VERSION = "telemon.registry.bundle", 1
INDEX, AUDIT, SIGNATURE = "bundle.json", "audit.jsonl", "bundle.sig"
MODEL = formats.JSON_FILE
#: The members of a bundle, in the order they are written.
MEMBERS = (INDEX, MANIFEST, MODEL, AUDIT, SIGNATURE)
SIGNED_PREFIX = b"telemon-registry-bundle-v1\n"
#: The largest bundle read (a bundle is a few kilobytes; its audit events are most of it).
MAX_BUNDLE_BYTES = 64 << 20


class Member(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    bytes: int
    sha256: str


class Origin(msgspec.Struct, frozen=True):
    """Where a bundle comes from (as the exporter said; the key id is what the signature proves)."""

    key_id: str
    host: str
    exported_by: str
    exported_at: int  # wall clock, epoch ms
    code_version: str


class Index(msgspec.Struct, frozen=True):
    """``bundle.json``."""

    format: str
    format_version: int
    device_id: str
    sensor: str
    version: int
    origin: Origin
    members: list[Member]

    @property
    def ref(self) -> VersionRef:
        return VersionRef(self.device_id, self.sensor, self.version)


class Signature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``bundle.sig``."""

    algorithm: str
    key_id: str
    public_key: str  # the raw 32-byte Ed25519 public key, hex
    signature: str  # hex


class Header(msgspec.Struct, frozen=True):
    format: str
    format_version: int


@dataclass(frozen=True)
class Verified:
    """A bundle that checked out: what to register, and where it comes from."""

    index: Index
    manifest: bytes  # manifest.json, byte for byte
    model: bytes  # model.json
    events: list[AuditEvent]


_ENCODER = msgspec.json.Encoder()


# --- keys ------------------------------------------------------------------------------------------


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file (``openssl genpkey -algorithm ed25519``);
    :class:`SigningKeyError` for anything else."""
    data = _read_key(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path}: not an unencrypted PEM private key ({_first_line(exc)})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (``openssl pkey -in KEY -pubout``), or the public half
    of a private key file; :class:`SigningKeyError` for anything else."""
    data = _read_key(path)
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path}: not a PEM public key ({_first_line(exc)})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: a {type(key).__name__}, not an Ed25519 public key")
    return key


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _read_key(path: Path) -> bytes:
    try:
        return files.read_bytes(path, files.MAX_KEY_BYTES)
    except OSError as exc:
        raise SigningKeyError(f"cannot read the key file {path}: {exc.strerror or exc}") from None


def _first_line(exc: Exception) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0]


# --- writing ---------------------------------------------------------------------------------------


def export(reg: ModelRegistry, ref: VersionRef, key: Ed25519PrivateKey, *, actor: str) -> bytes:
    """The bundle of a registered version (verified first: :class:`ArtifactError` if it does not
    load), signed with ``key``."""
    raw, model = _portable(reg, ref)
    events = [e for e in reg.history(ref.device_id, ref.sensor) if e.version == ref.version]
    content = {MANIFEST: raw, MODEL: model, AUDIT: b"".join(encode_event(e) + b"\n" for e in events)}
    origin = Origin(key_id(key.public_key()), socket.gethostname(), actor, _now_ms(), code_version())
    index = Index(
        FORMAT,
        FORMAT_VERSION,
        *ref,
        origin,
        [Member(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in content.items()],
    )
    index_bytes = msgspec.json.format(_ENCODER.encode(index), indent=2) + b"\n"
    public = key.public_key()
    sig = Signature(
        "ed25519", key_id(public), _raw(public).hex(), key.sign(SIGNED_PREFIX + index_bytes).hex()
    )
    members = {INDEX: index_bytes, **content, SIGNATURE: _ENCODER.encode(sig) + b"\n"}
    return _tar(members.items(), index.origin.exported_at // 1000)


def _portable(reg: ModelRegistry, ref: VersionRef) -> tuple[bytes, bytes]:
    """The version's ``manifest.json`` and its ``model.json``: those stored, or for
    a version stored as ``model.pkl``, its model in the JSON format with a manifest that says so
    (same lineage and registration time)."""
    manifest, stored = reg.verified_files(ref)
    if manifest.artifact.fmt == (formats.JSON_FORMAT, formats.JSON_VERSION):
        return stored[MANIFEST], stored[MODEL]
    model = formats.encode(reg.load(*ref))
    converted = msgspec.structs.replace(
        manifest,
        artifact=Artifact(
            sha256=hashlib.sha256(model).hexdigest(),
            bytes=len(model),
            python_class=formats.PYTHON_CLASS,
            file=formats.JSON_FILE,
            format=formats.JSON_FORMAT,
            format_version=formats.JSON_VERSION,
        ),
    )
    return msgspec.json.format(_ENCODER.encode(converted), indent=2) + b"\n", model


def _tar(members: Iterable[tuple[str, bytes]], mtime: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, mtime
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# --- reading ---------------------------------------------------------------------------------------


def read_file(path: Path) -> bytes:
    """A bundle file's bytes; :class:`BundleError` if it cannot be read."""
    try:
        return files.read_bytes(path, MAX_BUNDLE_BYTES)
    except OSError as exc:
        raise BundleError(f"cannot read the bundle {path}: {exc.strerror or exc}") from None


def read(data: bytes, trusted: Sequence[Ed25519PublicKey], what: str = "the bundle") -> Verified:
    """The content of a bundle signed by one of the ``trusted`` keys, every member checked against
    the signed index; :class:`BundleError` (one line, naming ``what``) for anything else."""
    members = _untar(data, what)
    sig = _signature(members[SIGNATURE], what)
    _check_signature(sig, members[INDEX], trusted, what)
    index = _index(members[INDEX], what)
    listed = {m.name: m for m in index.members}
    if sorted(listed) != sorted(set(MEMBERS) - {INDEX, SIGNATURE}):
        raise BundleError(f"{what}: its index lists {sorted(listed)}, not {MANIFEST}, {MODEL} and {AUDIT}")
    for name, m in listed.items():
        if (len(members[name]), hashlib.sha256(members[name]).hexdigest()) != (m.bytes, m.sha256):
            raise BundleError(f"{what}: {name} does not match the digest in its signed index (tampered)")
    if index.origin.key_id != sig.key_id or sig.key_id != key_id(_public(sig)):
        raise BundleError(f"{what}: its index and its signature name different keys")
    _check_manifest(members[MANIFEST], index.ref, what)
    return Verified(index, members[MANIFEST], members[MODEL], _events(members[AUDIT], what))


def _check_manifest(raw: bytes, ref: VersionRef, what: str) -> None:
    """The manifest describes the bundle's version, and a model in the JSON format (a bundle never
    carries a pickle)."""
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.MsgspecError as exc:
        raise BundleError(f"{what}: {MANIFEST} does not decode: {exc}") from None
    m, a = manifest.model, manifest.artifact
    if (m.device_id, m.sensor, m.version) != ref:
        described = VersionRef(m.device_id, m.sensor, m.version)
        raise BundleError(f"{what}: its {MANIFEST} describes {described}, not {ref}")
    if (a.file, a.fmt) != (MODEL, (formats.JSON_FORMAT, formats.JSON_VERSION)):
        raise BundleError(f"{what}: its {MANIFEST} names {a.file} of format {a.fmt}, not {MODEL}")


def _untar(data: bytes, what: str) -> dict[str, bytes]:
    """The members of a tar archive, read into memory (nothing is extracted to disk): only the
    bundle's regular files, each once."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                if info.name not in MEMBERS or not info.isreg() or info.name in out:
                    kind = "a repeated" if info.name in out else "an unexpected"
                    expected = ", ".join(MEMBERS)
                    raise BundleError(f"{what}: {kind} member {info.name!r} (a bundle holds {expected})")
                f = tar.extractfile(info)
                out[info.name] = f.read() if f is not None else b""
                if len(out[info.name]) != info.size:
                    raise BundleError(f"{what}: {info.name} is cut short (a truncated file)")
    except (tarfile.TarError, EOFError, OSError) as exc:
        why = _first_line(exc)
        raise BundleError(f"{what} is not a readable bundle (a damaged or truncated tar: {why})") from None
    missing = [name for name in MEMBERS if name not in out]
    if missing:
        raise BundleError(f"{what}: {', '.join(missing)} missing (a truncated or incomplete bundle)")
    return out


def _signature(raw: bytes, what: str) -> Signature:
    try:
        sig = msgspec.json.decode(raw, type=Signature)
        public = bytes.fromhex(sig.public_key)
        bytes.fromhex(sig.signature)
    except (msgspec.MsgspecError, ValueError) as exc:
        raise BundleError(f"{what}: unreadable {SIGNATURE}: {_first_line(exc)}") from None
    if sig.algorithm != "ed25519":
        raise BundleError(f"{what}: unsupported signature algorithm {sig.algorithm!r} (ed25519 is)")
    if len(public) != 32:
        raise BundleError(f"{what}: {SIGNATURE} holds no Ed25519 public key")
    return sig


def _public(sig: Signature) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(sig.public_key))


def _check_signature(sig: Signature, index: bytes, trusted: Sequence[Ed25519PublicKey], what: str) -> None:
    signer = next((k for k in trusted if _raw(k) == bytes.fromhex(sig.public_key)), None)
    if signer is None:
        given = ", ".join(key_id(k) for k in trusted) or "none"
        raise BundleError(
            f"{what} is signed by a key this deployment does not trust (key id {key_id(_public(sig))}; "
            f"trusted: {given}): add the exporter's public key to registry.trusted_keys or pass "
            "--trust-key FILE"
        )
    try:
        signer.verify(bytes.fromhex(sig.signature), SIGNED_PREFIX + index)
    except InvalidSignature:
        raise BundleError(f"{what}: {INDEX} does not match its signature (tampered)") from None


def _index(raw: bytes, what: str) -> Index:
    try:
        header = msgspec.json.decode(raw, type=Header)
    except msgspec.MsgspecError as exc:
        raise BundleError(f"{what}: signed {INDEX} does not decode: {exc}") from None
    if (header.format, header.format_version) != (FORMAT, FORMAT_VERSION):
        raise BundleError(
            f"{what} is of format {header.format} v{header.format_version}; this telemon reads "
            f"{FORMAT} v{FORMAT_VERSION}"
        )
    try:
        return msgspec.json.decode(raw, type=Index)
    except msgspec.MsgspecError as exc:
        raise BundleError(f"{what}: signed {INDEX} does not decode: {exc}") from None


def _events(raw: bytes, what: str) -> list[AuditEvent]:
    try:
        return [msgspec.json.decode(line, type=AuditEvent) for line in raw.splitlines() if line.strip()]
    except msgspec.MsgspecError as exc:
        raise BundleError(f"{what}: {AUDIT} does not decode: {exc}") from None


def describe(origin: Origin) -> str:
    """Where a bundle comes from, in words."""
    when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(origin.exported_at / 1000))
    return (
        f"exported by {origin.exported_by} on {origin.host} at {when} (telemon {origin.code_version}), "
        f"signed by bundle key {origin.key_id}"
    )


def import_reason(name: str, origin: Origin) -> str:
    """The ``registered`` event's reason for a version imported from bundle ``name``."""
    return f"imported from bundle {name}: {describe(origin)}"


def _now_ms() -> int:
    return int(time.time() * 1000)
