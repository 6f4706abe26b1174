"""The model registry: signed model versions with their lineage, and the audit trail.

Every retrain creates a :class:`ModelVersion`: which pair it serves, its parent, the Kafka data it
was trained (and tested) on, its hyperparameters, learned baseline and metrics, the code and
configuration it came from, and what triggered it. :class:`ModelRegistry` stores each version with
its model and an HMAC-SHA256 signature, and appends every lifecycle event to an audit log, under
one directory (``registry.dir``, default ``<state_dir>/registry``)::

    audit.jsonl                      append-only: one AuditEvent per line
    models/<device>/<sensor>/v<N>/
        manifest.json                a Manifest: the ModelVersion, the artifact's SHA-256 and class
        model.pkl                    the pickled model
        signature                    {"algorithm": "hmac-sha256", "key_id": ..., "mac": ...}

The MAC is ``HMAC-SHA256(key, b"telemon-registry-manifest-v1\\n" + manifest.json bytes)`` and the
manifest holds the SHA-256 of ``model.pkl``, so the signature covers both. A version directory is
written under a temporary name, fsynced and renamed into place: it appears whole or not at all.
Loading verifies the signature, the manifest's identity and the artifact's digest, then unpickles
with :mod:`monitor.common.safepickle`; anything wrong raises :class:`ArtifactError` and nothing is loaded.

Which version serves a pair is derived from the audit log: the latest ``promoted`` or
``rolled_back`` event (a ``rejected`` event leaves its ``previous`` version serving), else version
1, the online model started at the pair's first reading, which is implicit until registered.
The command line (``telemon registry promote|rollback``) and a running service share the log:
the service tails it with :meth:`ModelRegistry.events`.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import pickle
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import msgspec

import monitor
from monitor import errors
from monitor.analyze.explain import Explanation
from monitor.common import files, safepickle
from monitor.errors import ArtifactError, RegistryError, UnknownVersionError
from monitor.schema import DEVICE_ID_PATTERN, NAME_PATTERN
from monitor.settings import Settings
from monitor.state import signing

if TYPE_CHECKING:  # River and scipy load only when a model is (un)pickled: `telemon --help` stays quick
    from monitor.detect.model import AdaptiveGaussian

log = logging.getLogger(__name__)

MANIFEST, ARTIFACT, SIGNATURE = "manifest.json", "model.pkl", "signature"
KEY_FILE, AUDIT_FILE = "signing.key", "audit.jsonl"
SIGNED_PREFIX = b"telemon-registry-manifest-v1\n"
PICKLE_PROTOCOL = 5


class TrainingData(msgspec.Struct, frozen=True):
    """A slice of one partition of the readings topic: offsets and event-time span (epoch ms)."""

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
    parent: int  # 0: none
    trained_on: TrainingData
    params: dict[str, float]  # hyperparameters
    baseline: dict[str, list[float]]
    trigger_rule: str
    trigger_alert_id: str
    code_version: str
    config_hash: str
    created_at: int  # event time, epoch ms
    test_data: TrainingData | None = None
    metrics: dict[str, float] = {}

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
    """A version as the models topic carries it (JSON)."""
    return _ENCODER.encode(v)


def decode(raw: bytes) -> ModelVersion:
    return msgspec.json.decode(raw, type=ModelVersion)


class Artifact(msgspec.Struct, frozen=True):
    sha256: str
    bytes: int
    python_class: str
    pickle_protocol: int


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """``manifest.json``: the signed description of one registered version."""

    schema_version: int = 1
    model: ModelVersion
    artifact: Artifact
    registered_at: int  # wall clock, epoch ms


class Signature(msgspec.Struct, frozen=True):
    algorithm: str
    key_id: str
    mac: str


EventKind = Literal[
    "registered", "promoted", "rolled_back", "rejected", "rule_fired", "rule_resolved", "action", "verdict"
]
SERVING_KINDS = frozenset({"promoted", "rolled_back", "rejected"})


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line of ``audit.jsonl`` (and of the audit topic).

    ``version`` is the version registered, promoted, rolled back to or rejected (for rule events
    and actions: the version serving the pair); ``previous`` the version serving before a
    promotion or rollback, which keeps serving after a rejection. ``actor`` says who acted:
    ``rule:<name>``, ``service``, ``cli:<user>``.
    """

    kind: EventKind
    device_id: str
    sensor: str
    version: int = 0
    previous: int = 0
    actor: str = ""
    reason: str = ""
    rule: str = ""
    alert_id: str = ""
    action: str = ""
    signals: dict[str, float] = {}
    explanation: Explanation | None = None  # of rule events: as in the alert (monitor.analyze.explain)
    verdict: str = ""  # kind "verdict": true_positive, false_positive or expected_maintenance
    event_ts: int = 0  # event time (epoch ms) of stream-driven events; of a verdict, when it was given
    wall_ts: int = 0  # wall clock (epoch ms), filled in by ModelRegistry.record
    schema_version: int = 1


_EVENT_DECODER = msgspec.json.Decoder(AuditEvent)


def encode_event(event: AuditEvent) -> bytes:
    return _ENCODER.encode(event)


def decode_event(raw: bytes) -> AuditEvent:
    return _EVENT_DECODER.decode(raw)


class Feedback(NamedTuple):
    """Operators' verdicts on the alerts raised while a version served (the latest per alert)."""

    true_positive: int = 0
    false_positive: int = 0
    maintenance: int = 0

    @property
    def precision(self) -> float | None:
        judged = self.true_positive + self.false_positive
        return self.true_positive / judged if judged else None

    def __str__(self) -> str:
        p = "-" if self.precision is None else f"{self.precision:.2f}"
        tp, fp, maintenance = self
        return f"{tp} TP, {fp} FP, {maintenance} expected maintenance; precision {p}"


_VERDICT_SLOTS = {"true_positive": 0, "false_positive": 1, "expected_maintenance": 2}


def feedback(events: Iterable[AuditEvent]) -> dict[VersionRef, Feedback]:
    """The verdicts of ``verdict`` events per version. Of an alert's verdicts the one given last
    (``event_ts``; on a tie, the later recorded) counts: every replica records the verdicts it
    joins, so the log may hold one several times."""
    latest: dict[str, AuditEvent] = {}
    for e in events:
        if e.kind == "verdict" and e.event_ts >= latest.get(e.alert_id, e).event_ts:
            latest[e.alert_id] = e
    counts: dict[VersionRef, list[int]] = {}
    for e in latest.values():
        if e.verdict in _VERDICT_SLOTS:
            tally = counts.setdefault(VersionRef(e.device_id, e.sensor, e.version), [0, 0, 0])
            tally[_VERDICT_SLOTS[e.verdict]] += 1
    return {ref: Feedback(*c) for ref, c in counts.items()}


class VersionRef(NamedTuple):
    device_id: str
    sensor: str
    version: int

    def __str__(self) -> str:
        return f"{self.device_id}/{self.sensor} v{self.version}"


class Change(NamedTuple):
    """One field that differs between two versions (``None``: absent on that side)."""

    field: str
    a: Any
    b: Any


def registry_dir(settings: Settings) -> Path:
    return settings.registry.dir if settings.registry.dir is not None else settings.state_dir / "registry"


def signing_key(settings: Settings, *, create: bool = True) -> bytes:
    """The configured signing key (see :mod:`monitor.state.signing`); the generated one lives in the
    state folder (``<state_dir>/signing.key``; earlier versions kept it in the registry
    directory, where it is still found). Raises :class:`errors.SigningKeyError`."""
    generated = settings.state_dir / KEY_FILE
    earlier = registry_dir(settings) / KEY_FILE
    if not generated.exists() and earlier.is_file():
        generated = earlier
    return signing.load_key(settings.registry, generated, create=create)


def open_registry(settings: Settings, *, create_key: bool = True) -> ModelRegistry:
    return ModelRegistry(registry_dir(settings), signing_key(settings, create=create_key))


def sign_manifest(key: bytes, manifest: bytes) -> bytes:
    """The content of a ``signature`` file for ``manifest`` (the exact bytes of manifest.json)."""
    sig = Signature("hmac-sha256", signing.key_id(key), signing.sign(key, SIGNED_PREFIX + manifest))
    return _ENCODER.encode(sig) + b"\n"


class ModelRegistry:
    """Signed model versions under ``root`` and the audit log of what served when, and why."""

    def __init__(self, root: Path, key: bytes) -> None:
        self.root = root
        self.key = signing.check_key(key, "registry key")
        self.audit_path = root / AUDIT_FILE
        self._position = 0  # of the audit log, read up to here into _serving
        self._serving: dict[tuple[str, str], AuditEvent] = {}
        self._unreadable = False  # the audit log could not be read: said once until it can again

    # --- versions ---------------------------------------------------------------------------------

    def path(self, device_id: str, sensor: str, version: int) -> Path:
        """The directory of a version (validated names: nothing outside ``root``)."""
        _check_names(device_id, sensor)
        if version < 1:
            raise RegistryError(f"versions count from 1, got {version}")
        return self.root / "models" / device_id / sensor / f"v{version}"

    def register(self, version: ModelVersion, model: AdaptiveGaussian) -> Path:
        """Store ``model`` as ``version`` (signed) and record a ``registered`` event; returns its
        directory. Registering the same version again with the same content is a no-op (a batch
        processed again after a crash); with other content it is a :class:`RegistryError`."""
        ref = VersionRef(version.device_id, version.sensor, version.version)
        final = self.path(*ref)
        artifact = _pickled(model)
        raw = _manifest_bytes(version, model, artifact)
        files = {MANIFEST: raw, ARTIFACT: artifact, SIGNATURE: sign_manifest(self.key, raw)}
        if not _write_dir(final, files):
            if self.manifest(*ref).model != version:
                raise RegistryError(f"{ref} is already registered with other content")
            return final
        rule = version.trigger_rule
        reason = f"retrained: rule {rule} fired (alert {version.trigger_alert_id})" if rule else "registered"
        actor = f"rule:{rule}" if rule else "service"
        self.record(_event("registered", ref, actor=actor, reason=reason, event_ts=version.created_at))
        return final

    def load(self, device_id: str, sensor: str, version: int) -> AdaptiveGaussian:
        """The verified model of a version; raises :class:`ArtifactError` (nothing is unpickled
        unless the signature, the manifest and the artifact's digest all check out)."""
        ref = VersionRef(device_id, sensor, version)
        artifact = self._verified(ref)[1]
        try:
            model = safepickle.loads(artifact, safepickle.MODEL_CLASSES)
        except errors.RefusedClassError as exc:
            raise ArtifactError(f"{ref}: {ARTIFACT} refused: {exc}") from exc
        except (pickle.UnpicklingError, ValueError, TypeError, EOFError) as exc:
            raise ArtifactError(f"{ref}: {ARTIFACT} does not unpickle: {exc}") from exc
        from monitor.detect.model import AdaptiveGaussian

        if not isinstance(model, AdaptiveGaussian):
            raise ArtifactError(f"{ref}: {ARTIFACT} holds a {type(model).__name__}, not an AdaptiveGaussian")
        return model

    def manifest(self, device_id: str, sensor: str, version: int) -> Manifest:
        """The verified manifest of a version (its artifact checked too)."""
        return self._verified(VersionRef(device_id, sensor, version))[0]

    def versions(self, device_id: str | None = None, sensor: str | None = None) -> list[VersionRef]:
        """Registered versions, sorted by device, sensor and version (not verified: see
        :meth:`manifest`)."""
        _check_names(device_id, sensor)
        refs = []
        for d in (self.root / "models").glob(f"{device_id or '*'}/{sensor or '*'}/v*"):
            name = d.name[1:]
            if d.is_dir() and name.isdigit():
                refs.append(VersionRef(d.parent.parent.name, d.parent.name, int(name)))
        return sorted(refs)

    def lineage(self, device_id: str, sensor: str, version: int) -> list[Manifest]:
        """The version and its registered ancestors, newest first (it stops at parent 0 or at the
        first parent that is not registered, usually the implicit online model v1)."""
        chain = [self.manifest(device_id, sensor, version)]
        parent = chain[-1].model.parent
        while parent > 0 and parent not in {m.model.version for m in chain}:
            try:
                chain.append(self.manifest(device_id, sensor, parent))
            except UnknownVersionError:
                break
            parent = chain[-1].model.parent
        return chain

    def diff(self, a: VersionRef, b: VersionRef) -> list[Change]:
        """Every field of the two versions' :class:`ModelVersion` that differs (dotted paths:
        ``params.fading``, ``trained_on.first_offset``, ``baseline.mean[0]``, ``metrics.auc``)."""
        fa = _flatten(msgspec.to_builtins(self.manifest(*a).model))
        fb = _flatten(msgspec.to_builtins(self.manifest(*b).model))
        keys = list(fa) + [k for k in fb if k not in fa]
        return [Change(k, fa.get(k), fb.get(k)) for k in keys if fa.get(k) != fb.get(k)]

    def _verified(self, ref: VersionRef) -> tuple[Manifest, bytes]:
        d = self.path(*ref)
        if not d.is_dir():
            hint = " (v1 is the online model; it is registered only when the service records it)"
            raise UnknownVersionError(f"{ref} is not registered{hint if ref.version == 1 else ''}")
        raw = _read(d / MANIFEST, ref)
        self._check_signature(ref, raw, d / SIGNATURE)
        try:
            manifest = msgspec.json.decode(raw, type=Manifest)
        except msgspec.MsgspecError as exc:
            raise ArtifactError(f"{ref}: signed {MANIFEST} does not decode: {exc}") from exc
        m = manifest.model
        if (m.device_id, m.sensor, m.version) != ref:
            raise ArtifactError(
                f"{ref}: its {MANIFEST} describes {VersionRef(m.device_id, m.sensor, m.version)}"
            )
        artifact = _read(d / ARTIFACT, ref)
        if hashlib.sha256(artifact).hexdigest() != manifest.artifact.sha256:
            raise ArtifactError(
                f"{ref}: {ARTIFACT} does not match the digest in its signed manifest (tampered)"
            )
        return manifest, artifact

    def _check_signature(self, ref: VersionRef, manifest: bytes, path: Path) -> None:
        try:
            sig = msgspec.json.decode(files.read_bytes(path, files.MAX_KEY_BYTES), type=Signature)
        except FileNotFoundError:
            raise ArtifactError(f"{ref} is unsigned (no {SIGNATURE} file): refusing to load it") from None
        except (msgspec.MsgspecError, OSError) as exc:
            raise ArtifactError(f"{ref}: unreadable {SIGNATURE} file: {exc}") from exc
        mine = signing.key_id(self.key)
        if sig.algorithm != "hmac-sha256":
            raise ArtifactError(f"{ref}: unsupported signature algorithm {sig.algorithm!r}")
        if sig.key_id != mine:
            raise ArtifactError(
                f"{ref} is signed with another key (key id {sig.key_id}; the configured key is {mine})"
            )
        if not signing.verify(self.key, SIGNED_PREFIX + manifest, sig.mac):
            raise ArtifactError(f"{ref}: {MANIFEST} does not match its signature (tampered)")

    # --- audit log and serving versions -----------------------------------------------------------

    def record(self, *events: AuditEvent) -> None:
        """Append events to the audit log (one write, fsynced), stamping their wall-clock time.
        Raises :class:`RegistryError` if the log cannot be written (nor is: a FIFO there is
        refused, not waited on)."""
        if not events:
            return
        now = _now_ms()
        lines = b"".join(
            encode_event(e if e.wall_ts else msgspec.structs.replace(e, wall_ts=now)) + b"\n" for e in events
        )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with files.open_append(self.audit_path) as f:
                f.write(lines)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise RegistryError(f"cannot append to the audit log: {exc}") from None

    def events(self, since: int = 0) -> tuple[list[AuditEvent], int]:
        """Complete events after byte position ``since`` of the audit log, and the position to
        pass next time: a running service tails what the command line appends cheaply."""
        try:
            data = files.read_bytes(self.audit_path, None, since)
        except FileNotFoundError:
            return [], since
        except OSError as exc:
            if not self._unreadable:
                log.error("cannot read the audit log (%s): registry commands are not followed", exc)
            self._unreadable = True
            return [], since
        self._unreadable = False
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        return list(self._decode_lines(data[:end], since)), since + end

    def _decode_lines(self, data: bytes, start: int) -> Iterator[AuditEvent]:
        pos = start
        for line in data.splitlines(keepends=True):
            if line.strip():
                try:
                    yield decode_event(line)
                except msgspec.MsgspecError as exc:
                    log.warning("%s: skipping an unreadable line at byte %d: %s", self.audit_path, pos, exc)
            pos += len(line)

    def history(self, device_id: str, sensor: str) -> list[AuditEvent]:
        """Every event of a pair, oldest first."""
        return [e for e in self.events()[0] if (e.device_id, e.sensor) == (device_id, sensor)]

    def serving_event(self, device_id: str, sensor: str) -> AuditEvent | None:
        """The event that made the pair's current version serve (``None``: nothing recorded)."""
        new, self._position = self.events(self._position)
        for e in new:
            if e.kind in SERVING_KINDS and (e.kind != "rejected" or e.previous >= 1):
                self._serving[(e.device_id, e.sensor)] = e
        return self._serving.get((device_id, sensor))

    def serving(self, device_id: str, sensor: str) -> int:
        """The version serving the pair according to the audit log (1 if nothing is recorded)."""
        e = self.serving_event(device_id, sensor)
        if e is None:
            return 1
        return e.previous if e.kind == "rejected" else e.version

    def promote(
        self, device_id: str, sensor: str, version: int, *, reason: str, actor: str
    ) -> AuditEvent | None:
        """Make ``version`` serve the pair, after verifying it loads. Returns the ``promoted``
        event, or ``None`` if it already serves. A version that fails verification is refused
        with :class:`ArtifactError` and a ``rejected`` event: the current version keeps serving."""
        with self._exclusive():
            current = self.serving(device_id, sensor)
            if current == version:
                return None
            return self._switch("promoted", VersionRef(device_id, sensor, version), current, reason, actor)

    def rollback(
        self, device_id: str, sensor: str, to: int | None = None, *, reason: str, actor: str
    ) -> AuditEvent:
        """Serve ``to`` (default: the parent of the serving version) again, after verifying it."""
        with self._exclusive():
            current = self.serving(device_id, sensor)
            target = self._parent(VersionRef(device_id, sensor, current)) if to is None else to
            if target == current:
                raise RegistryError(f"{device_id}/{sensor} v{current} is already serving")
            return self._switch("rolled_back", VersionRef(device_id, sensor, target), current, reason, actor)

    def _parent(self, ref: VersionRef) -> int:
        parent = self.manifest(*ref).model.parent if ref.version > 1 else 0
        if parent < 1:
            raise RegistryError(f"{ref} has no parent to roll back to; name a version with --to")
        return parent

    def _switch(self, kind: EventKind, ref: VersionRef, current: int, reason: str, actor: str) -> AuditEvent:
        try:
            self.load(*ref)
        except UnknownVersionError:
            raise
        except ArtifactError as exc:
            what = "promotion" if kind == "promoted" else "rollback"
            self.record(
                _event("rejected", ref, previous=current, actor=actor, reason=f"{what} refused: {exc}")
            )
            raise
        event = _event(kind, ref, previous=current, actor=actor, reason=reason)
        self.record(event)
        return event

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise promotions and rollbacks across processes (read serving, verify, append)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with files.open_append(self.root / ".lock") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _check_names(device_id: str | None, sensor: str | None) -> None:
    """Device ids and sensors become path components: only valid ones (never ``..`` or ``*``)."""
    if device_id is not None and not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise RegistryError(f"not a device id: {device_id!r} (must match {DEVICE_ID_PATTERN.pattern})")
    if sensor is not None and not NAME_PATTERN.fullmatch(sensor):
        raise RegistryError(f"not a sensor name: {sensor!r} (must match {NAME_PATTERN.pattern})")


def _event(kind: EventKind, ref: VersionRef, **fields: Any) -> AuditEvent:
    return AuditEvent(
        kind=kind,
        device_id=ref.device_id,
        sensor=ref.sensor,
        version=ref.version,
        wall_ts=_now_ms(),
        **fields,
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _class_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _pickled(model: AdaptiveGaussian) -> bytes:
    """The model's pickle, refused now if the restricted unpickler could not load it later."""
    from monitor.detect.model import AdaptiveGaussian

    if not isinstance(model, AdaptiveGaussian):
        raise RegistryError(f"only AdaptiveGaussian models can be registered, not {_class_name(model)}")
    data = pickle.dumps(model, protocol=PICKLE_PROTOCOL)
    try:
        safepickle.loads(data, safepickle.MODEL_CLASSES)
    except errors.RefusedClassError as exc:
        raise RegistryError(f"the model would not load back: {exc}") from exc
    return data


def _manifest_bytes(version: ModelVersion, model: AdaptiveGaussian, artifact: bytes) -> bytes:
    digest = hashlib.sha256(artifact).hexdigest()
    manifest = Manifest(
        model=version,
        artifact=Artifact(digest, len(artifact), _class_name(model), PICKLE_PROTOCOL),
        registered_at=_now_ms(),
    )
    return msgspec.json.format(_ENCODER.encode(manifest), indent=2) + b"\n"


#: The largest manifest or model artifact loaded (a model pickles to a few kilobytes).
MAX_ENTRY_BYTES = 64 << 20


def _read(path: Path, ref: VersionRef) -> bytes:
    try:
        return files.read_bytes(path, MAX_ENTRY_BYTES)
    except FileNotFoundError:
        raise ArtifactError(f"{ref}: {path.name} is missing") from None
    except OSError as exc:
        raise ArtifactError(f"{ref}: {exc}") from None


def _write_dir(final: Path, files: dict[str, bytes]) -> bool:
    """Create directory ``final`` holding ``files``, atomically: written and fsynced under a
    temporary name, then renamed. ``False`` (nothing changed) if ``final`` already exists."""
    if final.exists():
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    try:
        for name, data in files.items():
            with (tmp / name).open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        return False  # another process registered it first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after the rename
    for directory in final.parents[:4]:  # the pair's, the device's, models/ and the root: all may be new
        _fsync_dir(directory)
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1, 2]}}`` -> ``{"a.b[0]": 1, "a.b[1]": 2}``."""
    if isinstance(value, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
    else:
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(_flatten(v, k))
    return out
