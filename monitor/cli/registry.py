"""``telemon registry list|show|diff|lineage|promote|rollback|reproduce|export|import``: the registry
in a shell.

Reads the registry of ``--config`` (``registry.dir``, default ``<state_dir>/registry``) with the
configured signing key; it never generates a key. Every command prints a table, or JSON with
``--json``. An unknown version, a tampered artifact or a refused promotion prints one line on
stderr and exits 1; a configuration problem (no usable key) exits 2. ``promote`` and ``rollback``
append to the audit log; a running service picks the change up at its next batch. With
``registry.shared`` the command first reads the registry's Kafka topics into its directory, and
``promote`` and ``rollback`` publish to the audit topic, which every replica follows; Kafka
unreachable exits 1. ``export`` and ``import`` (:mod:`monitor.cli.bundle`) move a version between
deployments as one signed file. ``reproduce`` rebuilds a version from the readings topic and exits 0 only if
the artifact is byte-identical.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from monitor.cli import bundle as bundle_cli
from monitor.cli.args import actor, emit, settings_from_args
from monitor.errors import ArtifactError, KafkaUnavailable, RegistryError, UnknownVersionError
from monitor.evaluation.report import table
from monitor.govern.registry import (
    Artifact,
    AuditEvent,
    Feedback,
    Manifest,
    ModelRegistry,
    TrainingData,
    VersionRef,
    feedback,
    open_registry,
    registry_dir,
)
from monitor.settings import Settings

if TYPE_CHECKING:
    from monitor.govern.registry import ModelVersion
    from monitor.govern.reproduce import Reproduction

DESCRIPTION = """\
Inspect and govern the model registry: every retrained model version of a (device, sensor) pair
with its lineage (parent, training, test and shadow data as Kafka offsets and event-time spans,
hyperparameters and the search they came from, seed, metrics, code version, settings and rules
digests, library versions, trigger), signed with HMAC-SHA256, and the audit log of which version
served when, and why. `reproduce` rebuilds a version from Kafka and checks it is byte-identical."""

EPILOG = f"""\
examples:
  telemon registry list --device dev-0007                  versions of one device; * = serving
  telemon registry show dev-0007 temperature               why the serving version serves, its data
  telemon registry show dev-0007 temperature 2 --json      one version's manifest and history as JSON
  telemon registry lineage dev-0007 temperature            the serving version and its ancestors
  telemon registry diff dev-0007 temperature 2 3           what changed between two versions
  telemon registry promote dev-0007 temperature 3 --reason "validated offline"
  telemon registry rollback dev-0007 temperature --reason "false alarms since the retrain"
  telemon registry reproduce dev-0007 temperature 3        rebuild v3 from Kafka; byte-identical?
{bundle_cli.EXAMPLES}

exit codes: 0 done (reproduce: byte-identical), 1 unknown version / tampered artifact or bundle /
  refused / not reproduced, 2 bad configuration (no usable key)"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``telemon registry`` and its actions."""
    reg = sub.add_parser(
        "registry",
        help="inspect, promote and roll back model versions (signed, with lineage and audit log)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    actions = reg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")

    ls = actions.add_parser("list", parents=[common], help="registered versions; * marks the serving one")
    ls.add_argument("--device", metavar="ID", help="only this device")
    ls.add_argument("--sensor", metavar="KIND", help="only this sensor")

    show = actions.add_parser(
        "show",
        parents=[common],
        help="one version: why it serves (or not), what data it was trained and tested on",
        description="Show a version's manifest (default: the serving version), whether and why it "
        "serves the pair, the rule firing that triggered it, and the pair's audit history.",
    )
    _pair(show)
    show.add_argument("version", type=_version, nargs="?", help="version (default: the serving one)")

    lineage = actions.add_parser(
        "lineage", parents=[common], help="a version and its ancestors with their training data"
    )
    _pair(lineage)
    lineage.add_argument("version", type=_version, nargs="?", help="version (default: the serving one)")

    diff = actions.add_parser("diff", parents=[common], help="fields that differ between two versions")
    _pair(diff)
    diff.add_argument("a", type=_version, metavar="A", help="first version")
    diff.add_argument("b", type=_version, metavar="B", help="second version")

    promote = actions.add_parser(
        "promote",
        parents=[common],
        help="make a version serve the pair (verified first; recorded in the audit log)",
    )
    _pair(promote)
    promote.add_argument("version", type=_version, help="the version to serve")
    _governance(promote)

    rollback = actions.add_parser(
        "rollback",
        parents=[common],
        help="serve the serving version's parent (or --to VERSION) again",
    )
    _pair(rollback)
    rollback.add_argument("--to", type=_version, metavar="VERSION", help="target (default: the parent)")
    _governance(rollback)
    bundle_cli.add_parsers(actions, common, _pair, _version)

    reproduce = actions.add_parser(
        "reproduce",
        parents=[common],
        help="rebuild a version from the readings topic and its recorded settings and seed; "
        "exit 0 if the artifact is byte-identical",
        description="Re-read a version's training, test and shadow readings from the readings topic "
        "(the recorded offsets; Kafka as --config says), re-run its training job with the settings and "
        "seed it recorded, and compare the rebuilt artifact with the registered one byte for byte. Exit "
        "0: identical; 1: it differs (the differing fields are printed), or it cannot be rebuilt (trained "
        "from the ring buffer, readings gone from the topic).",
    )
    _pair(reproduce)
    reproduce.add_argument("version", type=_version, help="the version to rebuild")
    reproduce.add_argument(
        "--timeout", type=_seconds, default=60.0, metavar="S", help="longest read of the topic (default 60)"
    )


def _pair(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", help="device id")
    p.add_argument("sensor", help="sensor kind (accelerometer, ..., temperature)")


def _governance(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    p.add_argument("--actor", default=None, help="who (default: cli:<user name>)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"give 0 < S <= 3600 seconds, not {text}")
    return value


def _version(text: str) -> int:
    try:
        value = int(text.removeprefix("v"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a version number: {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"versions count from 1: {text}")
    return value


def run(args: argparse.Namespace) -> int:
    """Run one ``telemon registry`` action; registry errors print one line and return 1."""
    settings = settings_from_args(args)
    args.settings = settings  # export and import read their keys' settings
    root = registry_dir(settings)
    try:
        if settings.registry.shared:
            return _shared(settings, args)
        if not root.is_dir() and args.registry_command != "import":  # import may start a registry
            return _empty(args, root)
        reg = open_registry(settings, create_key=False)
        if args.registry_command == "reproduce":
            return cmd_reproduce(reg, args, settings)
        return ACTIONS[args.registry_command](reg, args)
    except (RegistryError, KafkaUnavailable) as exc:
        print(f"telemon registry {args.registry_command}: {exc}", file=sys.stderr)
        return 1


def _shared(settings: Settings, args: argparse.Namespace) -> int:
    """A shared registry (``registry.shared``): bring the directory up to date from Kafka, run the
    action, and wait until Kafka has what it recorded (a refusal included)."""
    from monitor.govern.replication import RegistryReplica  # the Kafka client: only when needed

    reg = open_registry(settings, create_key=False)
    replica = RegistryReplica(settings, reg)
    try:
        replica.catch_up()
        try:
            if args.registry_command == "reproduce":
                return cmd_reproduce(reg, args, settings)
            return ACTIONS[args.registry_command](reg, args)
        finally:
            replica.flush()
    finally:
        replica.close()


def _empty(args: argparse.Namespace, root: Path) -> int:
    if args.registry_command != "list":
        raise RegistryError(f"no registry at {root}: nothing registered yet (check --config / state_dir)")
    emit(args, [], f"no model versions registered in {root}")
    return 0


# --- actions ---------------------------------------------------------------------------------------


class _Row(NamedTuple):
    ref: VersionRef
    serving: bool
    manifest: Manifest | None
    status: str
    feedback: Feedback = Feedback()


def cmd_list(reg: ModelRegistry, args: argparse.Namespace) -> int:
    rows: list[_Row] = []
    refs = reg.versions(args.device, args.sensor)
    verdicts = feedback(reg.events()[0])
    for device, sensor in sorted({(r.device_id, r.sensor) for r in refs}):
        serving = reg.serving(device, sensor)
        pair = [r for r in refs if (r.device_id, r.sensor) == (device, sensor)]
        if serving not in {r.version for r in pair}:
            ref = VersionRef(device, sensor, serving)
            rows.append(_Row(ref, True, None, "online model, not registered", verdicts.get(ref, Feedback())))
        rows += [_list_row(reg, r, serving)._replace(feedback=verdicts.get(r, Feedback())) for r in pair]
    headers = [
        "DEVICE",
        "SENSOR",
        "VERSION",
        "PARENT",
        "SERVING",
        "TRIGGER",
        "TRAINED ON",
        "CREATED",
        "FEEDBACK",
        "STATUS",
    ]
    text = table(headers, [_list_cells(r) for r in rows]) if rows else "no model versions registered"
    doc = [
        {
            **r.ref._asdict(),
            "serving": r.serving,
            "status": r.status,
            "feedback": _feedback_doc(r.feedback),
            "manifest": _builtins(r.manifest),
        }
        for r in rows
    ]
    emit(args, doc, text)
    return 0


def _list_row(reg: ModelRegistry, ref: VersionRef, serving: int) -> _Row:
    try:
        return _Row(ref, ref.version == serving, reg.manifest(*ref), "ok")
    except ArtifactError as exc:
        return _Row(ref, ref.version == serving, None, f"REFUSED: {exc}")


def _list_cells(row: _Row) -> list[object]:
    ref, m = row.ref, row.manifest.model if row.manifest else None
    described: list[object] = [None] * 4
    if m is not None:
        described = [f"v{m.parent}", m.trigger_rule or None, _offsets(m.trained_on), _when(m.created_at)]
    serving = "*" if row.serving else ""
    fb = row.feedback
    verdicts = f"{fb.true_positive} TP {fb.false_positive} FP" + (
        "" if fb.precision is None else f" ({fb.precision:.2f})"
    )
    return [
        ref.device_id,
        ref.sensor,
        f"v{ref.version}",
        described[0],
        serving,
        *described[1:],
        verdicts if any(fb) else None,
        row.status,
    ]


def _feedback_doc(fb: Feedback) -> dict[str, object]:
    return {**fb._asdict(), "precision": fb.precision}


def cmd_show(reg: ModelRegistry, args: argparse.Namespace) -> int:
    serving = reg.serving(args.device, args.sensor)
    version = serving if args.version is None else args.version
    ref = VersionRef(args.device, args.sensor, version)
    history = reg.history(args.device, args.sensor)
    manifest = _manifest_or_online(reg, ref, history)
    why = reg.serving_event(args.device, args.sensor)
    verdicts = feedback(history).get(ref, Feedback())
    doc = {
        "version": ref._asdict(),
        "serving": serving,
        "why_serving": _builtins(why),
        "manifest": _builtins(manifest),
        "feedback": _feedback_doc(verdicts),
        "history": msgspec.to_builtins(history),
    }
    emit(args, doc, _show_text(ref, serving, why, manifest, history, verdicts))
    return 0


def _manifest_or_online(reg: ModelRegistry, ref: VersionRef, history: list[AuditEvent]) -> Manifest | None:
    """The version's manifest; ``None`` for the implicit online model v1 of a pair the registry
    knows about."""
    try:
        return reg.manifest(*ref)
    except UnknownVersionError:
        if ref.version == 1 and (history or reg.versions(ref.device_id, ref.sensor)):
            return None
        raise


def cmd_lineage(reg: ModelRegistry, args: argparse.Namespace) -> int:
    version = reg.serving(args.device, args.sensor) if args.version is None else args.version
    chain = reg.lineage(args.device, args.sensor, version)
    rows: list[list[object]] = [_lineage_cells(m) for m in chain]
    root = chain[-1].model.parent
    if root > 0:
        rows.append([f"v{root}", None, "online model (not registered)", None, None, None])
    headers = ["VERSION", "PARENT", "TRIGGER", "TRAINED ON", "TESTED ON", "CREATED"]
    emit(args, [msgspec.to_builtins(m) for m in chain], table(headers, rows))
    return 0


def _lineage_cells(m: Manifest) -> list[object]:
    v = m.model
    return [
        f"v{v.version}",
        f"v{v.parent}",
        _trigger(m),
        _data(v.trained_on),
        _data(v.test_data),
        _when(v.created_at),
    ]


def cmd_diff(reg: ModelRegistry, args: argparse.Namespace) -> int:
    a, b = (VersionRef(args.device, args.sensor, v) for v in (args.a, args.b))
    changes = reg.diff(a, b)
    text = table(["FIELD", f"v{a.version}", f"v{b.version}"], [list(c) for c in changes])
    emit(args, [c._asdict() for c in changes], text if changes else f"{a} and v{b.version} do not differ")
    return 0


def cmd_promote(reg: ModelRegistry, args: argparse.Namespace) -> int:
    event = reg.promote(args.device, args.sensor, args.version, reason=args.reason, actor=actor(args))
    pair = f"{args.device}/{args.sensor}"
    if event is None:
        emit(args, None, f"{pair}: v{args.version} already serves; nothing recorded")
    else:
        emit(args, msgspec.to_builtins(event), f"{pair}: promoted v{event.version} (was v{event.previous})")
    return 0


def cmd_rollback(reg: ModelRegistry, args: argparse.Namespace) -> int:
    event = reg.rollback(args.device, args.sensor, args.to, reason=args.reason, actor=actor(args))
    text = f"{args.device}/{args.sensor}: rolled back to v{event.version} (was v{event.previous})"
    emit(args, msgspec.to_builtins(event), text)
    return 0


def cmd_reproduce(reg: ModelRegistry, args: argparse.Namespace, settings: Settings) -> int:
    """Rebuild a version from Kafka (:mod:`monitor.govern.reproduce`): 0 identical, 1 it differs."""
    from monitor.govern import reproduce  # the Kafka client and the training code: only when needed

    ref = VersionRef(args.device, args.sensor, args.version)
    r = reproduce.reproduce(reg, ref, settings.kafka, args.timeout)
    v = reg.manifest(*ref).model
    doc = reproduce.summary(r, v)
    emit(args, doc, _reproduce_text(r, v, doc))
    return 0 if r.identical else 1


def _reproduce_text(r: Reproduction, v: ModelVersion, doc: dict[str, Any]) -> str:
    reg, new = doc["registered"], doc["rebuilt"]
    shadow = f", then {v.shadow_data.readings} shadow readings" if v.shadow_data is not None else ""
    lines = [
        f"{r.ref}: rebuilt from {_offsets(v.trained_on)}{shadow}, seed {v.seed}",
        f"registered  {reg['bytes']} bytes, sha256 {reg['sha256']}",
        f"rebuilt     {new['bytes']} bytes, sha256 {new['sha256']}",
    ]
    if r.identical:
        return "\n".join([*lines, "reproduced: the rebuilt artifact is byte-identical"])
    rows = [[c.field, c.a, c.b] for c in r.differences]
    lines += ["NOT reproduced: the rebuilt artifact differs", table(["FIELD", "REGISTERED", "REBUILT"], rows)]
    return "\n".join(lines)


ACTIONS: dict[str, Callable[[ModelRegistry, argparse.Namespace], int]] = {
    "list": cmd_list,
    "show": cmd_show,
    "lineage": cmd_lineage,
    "diff": cmd_diff,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "export": bundle_cli.cmd_export,
    "import": bundle_cli.cmd_import,
}


# --- text ------------------------------------------------------------------------------------------


def _show_text(
    ref: VersionRef,
    serving: int,
    why: AuditEvent | None,
    m: Manifest | None,
    history: list[AuditEvent],
    verdicts: Feedback,
) -> str:
    lines = [f"{ref}" + (" (serving)" if ref.version == serving else f" (not serving: v{serving} serves)")]
    lines.append(_field("why serving", _why(ref, serving, why)))
    if m is None:
        lines.append(
            _field("model", "the online model, learning since the pair's first reading (not registered)")
        )
    else:
        lines += _manifest_lines(m, _firing(history, m.model.trigger_alert_id))
    lines.append(_field("feedback", f"operators' verdicts on its alerts: {verdicts}"))
    lines.append("history:")
    lines += [f"  {_event_line(e)}" for e in history] or ["  (no events recorded)"]
    return "\n".join(lines)


def _why(ref: VersionRef, serving: int, why: AuditEvent | None) -> str:
    if why is None:
        return "v1 has served since the pair's first reading (no promotion or rollback recorded)"
    text = _event_line(why)
    return text if ref.version == serving else f"v{serving} serves since: {text}"


def _manifest_lines(m: Manifest, firing: AuditEvent | None) -> list[str]:
    v, a = m.model, m.artifact
    trigger = f"rule {v.trigger_rule}, alert {v.trigger_alert_id}" if v.trigger_rule else "-"
    if firing is not None:
        trigger += f"; signals at the firing: {_kv(firing.signals)}"
    return [
        _field("trigger", trigger),
        _field("parent", f"v{v.parent}" if v.parent else None),
        _field("trained on", _data(v.trained_on)),
        _field("tested on", _data(v.test_data)),
        _field("hyperparams", _kv(v.params)),
        _field("metrics", _kv(v.metrics)),
        _field("baseline", _kv({k: [round(x, 6) for x in xs] for k, xs in v.baseline.items()})),
        _field("code", f"{v.code_version}, config {v.config_hash}"),
        *_reproduction_lines(v),
        _field("created", f"{_when(v.created_at)} (event time), registered {_when(m.registered_at)}"),
        _field("artifact", f"{_artifact(a)}, {a.bytes} bytes, sha256 {a.sha256[:16]}..., signature verified"),
    ]


def _artifact(a: Artifact) -> str:
    """The artifact for people: ``model.json (telemon.model.adaptive-gaussian v1, CLASS)``, or
    ``model.pkl (pickle protocol 5, CLASS)``."""
    fmt = f"pickle protocol {a.pickle_protocol}" if a.pickle_protocol else str(a.fmt)
    return f"{a.file} ({fmt}, {a.python_class})"


def _reproduction_lines(v: ModelVersion) -> list[str]:
    """The lineage that rebuilds a candidate (none for versions registered before it was kept)."""
    if not v.source:
        return []
    source = f"{v.source}" + (f" ({v.source_note})" if v.source_note else "")
    if v.records_skipped:
        source += f"; {v.records_skipped} bad records skipped"
    search = v.search
    space = " ".join(f"{k}={vals}" for k, vals in search.get("space", {}).items())
    return [
        _field("rows from", source),
        _field("shadowed on", _data(v.shadow_data)),
        _field("search", f"{search.get('strategy')} (budget {search.get('budget')}) {space}; seed {v.seed}"),
        _field("settings", f"sha256 {v.settings_sha256[:16]}..., rules sha256 {v.rules_sha256[:16]}..."),
        _field("libraries", _kv(v.dependencies)),
    ]


def _firing(history: list[AuditEvent], alert_id: str) -> AuditEvent | None:
    return next((e for e in history if e.kind == "rule_fired" and alert_id and e.alert_id == alert_id), None)


def _event_line(e: AuditEvent) -> str:
    what = {
        "registered": f"registered v{e.version}",
        "promoted": f"promoted v{e.version} (was v{e.previous})",
        "rolled_back": f"rolled back to v{e.version} (was v{e.previous})",
        "rejected": f"rejected v{e.version} (v{e.previous} kept serving)",
        "rule_fired": f"rule {e.rule} fired (alert {e.alert_id})",
        "rule_resolved": f"rule {e.rule} resolved (alert {e.alert_id})",
        "action": f"action {e.action} by rule {e.rule} (alert {e.alert_id})",
        "verdict": f"verdict {e.verdict} on alert {e.alert_id} of rule {e.rule} (v{e.version})",
    }[e.kind]
    by = f" by {e.actor}" if e.actor else ""
    return f"{_when(e.wall_ts)}  {what}{by}" + (f": {e.reason}" if e.reason else "")


def _field(name: str, value: str | None) -> str:
    return f"{name:<13}{value or '-'}"


def _data(d: TrainingData | None) -> str | None:
    if d is None:
        return None
    start = _when(d.first_ts) if d.first_ts > 0 else "its first reading"
    return f"{_offsets(d)}, {start} .. {_when(d.last_ts)}"


def _offsets(d: TrainingData) -> str:
    """A negative first offset: the online model, which learned every reading of the pair."""
    first = d.first_offset if d.first_offset >= 0 else "start"
    return f"{d.topic}[{d.partition}] offsets {first}-{d.last_offset} ({d.readings} readings)"


def _trigger(m: Manifest) -> str:
    return f"{m.model.trigger_rule} ({m.model.trigger_alert_id})" if m.model.trigger_rule else "-"


def _kv(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _when(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _builtins(obj: object | None) -> Any:
    return None if obj is None else msgspec.to_builtins(obj)
