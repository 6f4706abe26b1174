"""The model registry: signed model versions with their lineage, and the audit trail.

Every retrain creates a :class:`ModelVersion`: which pair it serves, its parent, the Kafka data it
was trained (and tested) on, its hyperparameters, learned baseline and metrics, the code and
configuration it came from, and what triggered it. :class:`ModelRegistry` stores each version with
its model and an HMAC-SHA256 signature, and appends every lifecycle event to an audit log, under
one directory (``registry.dir``, default ``<state_dir>/registry``)::

    audit.jsonl                      append-only: one AuditEvent per line
    models/<device>/<sensor>/v<N>/
        manifest.json                a Manifest: the ModelVersion, the artifact's SHA-256, file and format
        model.json                   the model's state (monitor.govern.artifact; model.pkl before)
        signature                    {"algorithm": "hmac-sha256", "key_id": ..., "mac": ...}

The MAC is ``HMAC-SHA256(key, b"telemon-registry-manifest-v1\\n" + manifest.json bytes)`` and the
manifest holds the SHA-256 of the artifact, so the signature covers both. A version directory is
written under a temporary name, fsynced and renamed into place: it appears whole or not at all.
Loading verifies the signature, the manifest's identity and the artifact's digest, then reads the
artifact in the format its manifest names (:mod:`monitor.govern.artifact`: ``model.json``, or the
``model.pkl`` of an older version through :mod:`monitor.common.safepickle`); anything wrong raises
:class:`ArtifactError` and nothing is loaded.

Which version serves a pair is derived from the audit log: the latest ``promoted`` or
``rolled_back`` event (a ``rejected`` event leaves its ``previous`` version serving), else version
1, the online model started at the pair's first reading, which is implicit until registered.
The command line (``telemon registry promote|rollback``) and a running service share the log:
the service tails it with :meth:`ModelRegistry.events`.

Every event has an identity (:func:`event_id`, stored in ``id``): :meth:`ModelRegistry.record`
appends only events the log lacks, so an event that reaches a directory twice (recorded by the
replica that made it and read back from the audit topic, or made again when a batch is processed
again) is in its log once. With ``registry.shared`` the directory is one replica's copy of a
registry kept in Kafka (:mod:`monitor.govern.replication`): the registry hands the versions it
stores and the events it makes to its :class:`Publisher`.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import msgspec

import monitor
from monitor.analyze.explain import Explanation
from monitor.common import files
from monitor.errors import ArtifactError, RegistryError, UnknownVersionError
from monitor.govern import artifact as formats
from monitor.schema import DEVICE_ID_PATTERN, NAME_PATTERN
from monitor.settings import Settings
from monitor.state import signing

if TYPE_CHECKING:  # River and scipy load only when a model is (un)pickled: `telemon --help` stays quick
    from monitor.detect.model import AdaptiveGaussian

log = logging.getLogger(__name__)

MANIFEST, SIGNATURE = "manifest.json", "signature"
ARTIFACT = formats.JSON_FILE  # the artifact of a version registered now (model.pkl before)
KEY_FILE, AUDIT_FILE, BLOBS = "signing.key", "audit.jsonl", "blobs"
SIGNED_PREFIX = b"telemon-registry-manifest-v1\n"
#: Every file a version directory may hold.
VERSION_FILES = (MANIFEST, *sorted(formats.FILES), SIGNATURE)


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
    # What reproduces it (monitor.govern.lineage); absent from versions registered before them.
    source: str = ""  # where the rows came from: "topic" (re-read), "buffer" (the ring), "" (v1)
    source_note: str = ""  # why the ring buffer was used (or how the topic fell short)
    records_skipped: int = 0  # the device's records in the range read that failed the checks
    shadow_data: TrainingData | None = None  # the live readings it learned during its shadow
    shadow_quarantined: list[int] = []  # offsets of those it stepped under quarantine (not learned)
    seed: int | None = None  # of the job: the search's draws and the injected spikes
    search: dict[str, Any] = {}  # strategy, budget and space the parameters were chosen from
    settings_sha256: str = ""  # the effective settings, secrets redacted: blobs/<sha256>
    rules_sha256: str = ""  # the rules file's content: blobs/<sha256>
    dependencies: dict[str, str] = {}  # python and the libraries' versions

    @property
    def key(self) -> bytes:
        return self.device_id.encode()


def code_version() -> str:
    """Package version plus a hash of the package's source files (every module, subpackages too)."""
    digest = hashlib.sha256()
    root = Path(monitor.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{monitor.__version__}+{digest.hexdigest()[:12]}"


_ENCODER = msgspec.json.Encoder()


def encode(v: ModelVersion) -> bytes:
    """A version as the models topic carries it (JSON)."""
    return _ENCODER.encode(v)


def decode(raw: bytes) -> ModelVersion:
    return msgspec.json.decode(raw, type=ModelVersion)


class Artifact(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The manifest's description of the model's file. The defaults describe a version registered
    before ``model.json`` (whose manifest names no file or format): ``model.pkl``, a pickle."""

    sha256: str
    bytes: int
    python_class: str
    file: str = formats.PICKLE_FILE
    format: str = formats.PICKLE_FORMAT
    format_version: int = 0
    pickle_protocol: int = 0  # of a pickle

    @property
    def fmt(self) -> formats.Format:
        return formats.Format(self.format, self.format_version)


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
    id: str = ""  # the event's identity (event_id), filled in by stamped()
    schema_version: int = 1


_EVENT_DECODER = msgspec.json.Decoder(AuditEvent)


def encode_event(event: AuditEvent) -> bytes:
    return _ENCODER.encode(event)


def decode_event(raw: bytes) -> AuditEvent:
    return _EVENT_DECODER.decode(raw)


def event_id(e: AuditEvent) -> str:
    """The identity of an event: a digest of its content. An event of the stream (``event_ts``
    set) is the same event whenever it is made, so its wall-clock time does not count; an
    operator's or the service's (no ``event_ts``) is told apart by its wall-clock time."""
    basis = msgspec.structs.replace(e, id="", wall_ts=0 if e.event_ts else e.wall_ts)
    return hashlib.sha256(_ENCODER.encode(basis)).hexdigest()[:24]


def stamped(e: AuditEvent, now: int) -> AuditEvent:
    """``e`` with its wall-clock time (``now`` if it has none) and its identity."""
    if not e.wall_ts:
        e = msgspec.structs.replace(e, wall_ts=now)
    return e if e.id else msgspec.structs.replace(e, id=event_id(e))


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


class Publisher(Protocol):
    """Where a shared registry's versions and events go (:mod:`monitor.govern.replication`)."""

    def publish_version(self, ref: VersionRef, files: dict[str, bytes]) -> None: ...

    def publish_events(self, events: Sequence[AuditEvent]) -> None: ...


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

    def __init__(self, root: Path, key: bytes, publisher: Publisher | None = None) -> None:
        self.root = root
        self.key = signing.check_key(key, "registry key")
        self.publisher = publisher  # of a shared registry: gets the versions stored, the events made
        self.audit_path = root / AUDIT_FILE
        self._position = 0  # of the audit log, read up to here into _serving
        self._serving: dict[tuple[str, str], AuditEvent] = {}
        self._unreadable = False  # the audit log could not be read: said once until it can again
        self._ids: set[str] = set()  # of the events in the audit log up to _ids_position
        self._ids_position = 0
        self._appending = threading.Lock()  # the service's loop and its followers record

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
        artifact = artifact_bytes(model)
        raw = _manifest_bytes(version, artifact)
        rule = version.trigger_rule
        reason = f"retrained: rule {rule} fired (alert {version.trigger_alert_id})" if rule else "registered"
        actor = f"rule:{rule}" if rule else "service"
        event = _event("registered", ref, actor=actor, reason=reason, event_ts=version.created_at)
        files = self._store(ref, {MANIFEST: raw, ARTIFACT: artifact}, lambda m: m.model == version)[1]
        self._announce(ref, files, event)  # again too: a batch processed again publishes again
        return self.path(*ref)

    def adopt(self, raw: bytes, artifact: bytes, *, actor: str, reason: str) -> tuple[VersionRef, bool]:
        """Register a version made elsewhere (an imported bundle, :mod:`monitor.govern.bundle`):
        its manifest's exact bytes and its artifact, checked as a load checks them, then signed
        with this registry's key and recorded (``registered`` by ``actor`` for ``reason``). Returns
        the version and ``False`` if it is registered already with the same lineage and artifact
        (nothing recorded); a version of that number with other content is a
        :class:`RegistryError`."""
        manifest = _decode_manifest(raw, "the manifest")
        m = manifest.model
        ref = VersionRef(m.device_id, m.sensor, m.version)
        if manifest.artifact.fmt != (formats.JSON_FORMAT, formats.JSON_VERSION):
            raise ArtifactError(f"{ref}: only {formats.JSON_FILE} versions are taken from elsewhere")
        name = self._checked_artifact(ref, manifest, {manifest.artifact.file: artifact})
        formats.load(manifest.artifact.fmt, artifact, str(ref))

        def same(have: Manifest) -> bool:
            return have.model == m and have.artifact.sha256 == manifest.artifact.sha256

        new, files = self._store(ref, {MANIFEST: raw, name: artifact}, same)
        if new:
            self._announce(ref, files, _event("registered", ref, actor=actor, reason=reason))
        return ref, new

    def _store(
        self, ref: VersionRef, content: dict[str, bytes], same: Callable[[Manifest], bool]
    ) -> tuple[bool, dict[str, bytes]]:
        """Sign and write a version's files; returns whether they are new, and the version's files.
        A version already there stays as it is if ``same`` says it has this content, else it is a
        :class:`RegistryError`."""
        files = {**content, SIGNATURE: sign_manifest(self.key, content[MANIFEST])}
        if _write_dir(self.path(*ref), files):
            return True, files
        if not same(self.manifest(*ref)):
            raise RegistryError(f"{ref} is already registered with other content")
        return False, self.version_files(*ref)  # the first registration's: published again as they are

    def _announce(self, ref: VersionRef, files: dict[str, bytes], event: AuditEvent) -> None:
        """Record a version's ``registered`` event; publish both if the registry is shared."""
        self.record(event)
        if self.publisher is not None:
            self.publisher.publish_version(ref, files)
            self.publisher.publish_events([stamped(event, event.wall_ts)])

    def version_files(self, device_id: str, sensor: str, version: int) -> dict[str, bytes]:
        """The stored files of a version, as they are (verify with :meth:`install` elsewhere)."""
        ref = VersionRef(device_id, sensor, version)
        d = self.path(*ref)
        names = [n for n in VERSION_FILES if n in {MANIFEST, SIGNATURE} or (d / n).exists()]
        return {name: _read(d / name, ref) for name in names}

    def install(self, ref: VersionRef, files: dict[str, bytes]) -> bool:
        """Store a version another process registered (read from the artifacts topic), after
        verifying it as :meth:`load` would. ``False`` if it is stored already (the first copy
        stays). Raises :class:`ArtifactError` for a version that does not verify, one signed with
        another key included."""
        missing = sorted({MANIFEST, SIGNATURE} - set(files))
        if missing:
            raise ArtifactError(f"{ref}: incomplete, {', '.join(missing)} missing")
        final = self.path(*ref)
        if final.is_dir():
            return False
        manifest = self._verify(ref, files[MANIFEST], files[SIGNATURE], files)[0]
        name = manifest.artifact.file
        return _write_dir(final, {MANIFEST: files[MANIFEST], name: files[name], SIGNATURE: files[SIGNATURE]})

    def load(self, device_id: str, sensor: str, version: int) -> AdaptiveGaussian:
        """The verified model of a version; raises :class:`ArtifactError` (nothing is read unless
        the signature, the manifest and the artifact's digest all check out)."""
        ref = VersionRef(device_id, sensor, version)
        manifest, artifact = self._verified(ref)
        return formats.load(manifest.artifact.fmt, artifact, str(ref))

    def verified_files(self, ref: VersionRef) -> tuple[Manifest, dict[str, bytes]]:
        """A version's manifest and stored files, read once and verified as a load verifies them."""
        self._known(ref)
        files = self.version_files(*ref)
        return self._verify(ref, files[MANIFEST], files[SIGNATURE], files)[0], files

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

    def _known(self, ref: VersionRef) -> Path:
        """The directory of a registered version; :class:`UnknownVersionError` if there is none."""
        d = self.path(*ref)
        if not d.is_dir():
            hint = " (v1 is the online model; it is registered only when the service records it)"
            raise UnknownVersionError(f"{ref} is not registered{hint if ref.version == 1 else ''}")
        return d

    def _verified(self, ref: VersionRef) -> tuple[Manifest, bytes]:
        d = self._known(ref)
        raw = _read(d / MANIFEST, ref)
        try:
            sig = files.read_bytes(d / SIGNATURE, files.MAX_KEY_BYTES)
        except FileNotFoundError:
            raise ArtifactError(f"{ref} is unsigned (no {SIGNATURE} file): refusing to load it") from None
        except OSError as exc:
            raise ArtifactError(f"{ref}: unreadable {SIGNATURE} file: {exc}") from exc
        return self._verify(ref, raw, sig, _artifacts(d, ref))

    def _verify(
        self, ref: VersionRef, raw: bytes, sig: bytes, artifacts: Mapping[str, bytes]
    ) -> tuple[Manifest, bytes]:
        """The manifest and artifact of a version whose signature, identity and artifact digest
        check out; ``artifacts`` gives the artifact of the file name the manifest names."""
        self._check_signature(ref, raw, sig)
        manifest = _decode_manifest(raw, f"{ref}: signed {MANIFEST}")
        m = manifest.model
        if (m.device_id, m.sensor, m.version) != ref:
            raise ArtifactError(
                f"{ref}: its {MANIFEST} describes {VersionRef(m.device_id, m.sensor, m.version)}"
            )
        name = self._checked_artifact(ref, manifest, artifacts)
        return manifest, artifacts[name]

    @staticmethod
    def _checked_artifact(ref: VersionRef, manifest: Manifest, artifacts: Mapping[str, bytes]) -> str:
        """The artifact's file name, once its format is known and its bytes match the digest."""
        a = manifest.artifact
        name = formats.file_of(a.fmt, str(ref))
        if a.file != name:
            raise ArtifactError(f"{ref}: its {MANIFEST} names {a.file!r} for format {a.fmt}, not {name}")
        if name not in artifacts:
            raise ArtifactError(f"{ref}: {name} is missing")
        if hashlib.sha256(artifacts[name]).hexdigest() != a.sha256:
            raise ArtifactError(f"{ref}: {name} does not match the digest in its signed manifest (tampered)")
        return name

    def _check_signature(self, ref: VersionRef, manifest: bytes, raw: bytes) -> None:
        try:
            sig = msgspec.json.decode(raw, type=Signature)
        except msgspec.MsgspecError as exc:
            raise ArtifactError(f"{ref}: unreadable {SIGNATURE} file: {exc}") from exc
        mine = signing.key_id(self.key)
        if sig.algorithm != "hmac-sha256":
            raise ArtifactError(f"{ref}: unsupported signature algorithm {sig.algorithm!r}")
        if sig.key_id != mine:
            raise ArtifactError(
                f"{ref} is signed with another key (key id {sig.key_id}; the configured key is {mine}): "
                "every replica of a group and the registry command need the same registry.signing_key"
            )
        if not signing.verify(self.key, SIGNED_PREFIX + manifest, sig.mac):
            raise ArtifactError(f"{ref}: {MANIFEST} does not match its signature (tampered)")

    # --- blobs: content the manifests name by SHA-256 (settings, rules) -----------------------------

    def put_blob(self, data: bytes) -> str:
        """Store ``data`` once under ``blobs/<sha256>``; returns the digest."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / BLOBS / digest
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{digest}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        return digest

    def blob(self, digest: str) -> bytes:
        """The content stored under ``digest``, checked against it (a signed manifest names it)."""
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise RegistryError(f"not a SHA-256 digest: {digest!r}")
        try:
            data = files.read_bytes(self.root / BLOBS / digest, MAX_ENTRY_BYTES)
        except FileNotFoundError:
            raise RegistryError(f"{BLOBS}/{digest} is not in the registry") from None
        except OSError as exc:
            raise RegistryError(f"{BLOBS}/{digest}: {exc}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactError(f"{BLOBS}/{digest} does not match its digest (tampered)")
        return data

    # --- audit log and serving versions -----------------------------------------------------------

    def record(self, *events: AuditEvent) -> list[AuditEvent]:
        """Append the events the audit log lacks (by :func:`event_id`; one write, fsynced),
        stamped with their wall-clock time and identity; returns those appended. Raises
        :class:`RegistryError` if the log cannot be written (nor is: a FIFO there is refused, not
        waited on)."""
        if not events:
            return []
        now = _now_ms()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with self._appending, files.open_append(self.root / ".append.lock") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # other processes on this directory: the CLI
                return self._append([stamped(e, now) for e in events])
        except OSError as exc:
            raise RegistryError(f"cannot append to the audit log: {exc}") from None

    def _append(self, events: list[AuditEvent]) -> list[AuditEvent]:
        self._scan_ids()
        new = list({e.id: e for e in events if e.id not in self._ids}.values())
        if not new:
            return []
        with files.open_append(self.audit_path) as f:
            f.write(b"".join(encode_event(e) + b"\n" for e in new))
            f.flush()
            os.fsync(f.fileno())
            self._ids_position = f.tell()
        self._ids.update(e.id for e in new)
        return new

    def _scan_ids(self) -> None:
        """Read the identities of the events appended since the last call (by anyone)."""
        try:
            data = files.read_bytes(self.audit_path, None, self._ids_position)
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self._ids.update(e.id or event_id(e) for e in self._decode_lines(data[:end], self._ids_position))
        self._ids_position += end

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
            refused = f"{what} refused: {exc}"
            self._emit(_event("rejected", ref, previous=current, actor=actor, reason=refused))
            raise
        return self._emit(_event(kind, ref, previous=current, actor=actor, reason=reason))

    def _emit(self, event: AuditEvent) -> AuditEvent:
        """Record an event this registry made, and publish it if the registry is shared."""
        event = stamped(event, event.wall_ts)
        self.record(event)
        if self.publisher is not None:
            self.publisher.publish_events([event])
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


def artifact_bytes(model: AdaptiveGaussian) -> bytes:
    """The artifact of ``model`` exactly as :meth:`ModelRegistry.register` stores it."""
    return formats.encode(model)


def _manifest_bytes(version: ModelVersion, artifact: bytes) -> bytes:
    digest = hashlib.sha256(artifact).hexdigest()
    manifest = Manifest(
        model=version,
        artifact=Artifact(
            sha256=digest,
            bytes=len(artifact),
            python_class=formats.PYTHON_CLASS,
            file=formats.JSON_FILE,
            format=formats.JSON_FORMAT,
            format_version=formats.JSON_VERSION,
        ),
        registered_at=_now_ms(),
    )
    return msgspec.json.format(_ENCODER.encode(manifest), indent=2) + b"\n"


def _decode_manifest(raw: bytes, what: str) -> Manifest:
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.MsgspecError as exc:
        raise ArtifactError(f"{what} does not decode: {exc}") from exc
    return manifest


def _artifacts(d: Path, ref: VersionRef) -> dict[str, bytes]:
    """The artifact files in a version directory, each read once (the one the manifest names is
    then verified and used as read)."""
    return {name: _read(d / name, ref) for name in sorted(formats.FILES) if os.path.lexists(d / name)}


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
