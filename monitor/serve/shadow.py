"""Pre-production runs: a candidate telemon (another version, config or rules file) beside
production, on production's live readings, writing nothing production reads.

A shadow run is a consumer group of its own (``<production group><suffix>`` unless named) on
production's readings topic. Every topic the service writes, or writes and reads back, is the
production name with the suffix (``telemon.alerts`` -> ``telemon.alerts.shadow``): dead letters,
alerts, model versions, audit events, the state changelog, a shared registry's artifacts and the
fleet partials. It reads production's readings and feedback topics, as production does (operators'
verdicts join the shadow's alerts by ``alert_id``: an episode both runs raise has one id). It posts
nothing to Alertmanager, keeps its registry, snapshots and generated key in a folder of its own
(``<state_dir>/shadow/<group>``), and under ``exactly_once`` uses a transactional id of its own.

:func:`shadow_settings` derives the shadow's settings from the candidate's and
:func:`check_isolated` refuses any that would write a production topic, join a production group or
use production's registry. :func:`start_offsets` is the only I/O: where the shadow group starts
on partitions it has never committed (production's committed offsets, or those of a Kafka time).

>>> shadow_topic("telemon.alerts", ".shadow")
'telemon.alerts.shadow'
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from confluent_kafka import OFFSET_END, Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import ValidationError

from monitor.errors import ConfigError, InvalidInput, KafkaUnavailable
from monitor.govern.alerts import rfc3339
from monitor.ingest import kafka
from monitor.settings import TOPIC_NAME, KafkaSettings, Settings

log = logging.getLogger(__name__)

DEFAULT_SUFFIX: Final = ".shadow"
#: The topics the service writes (or writes and reads back): a shadow run has its own.
OUTPUT_TOPICS: Final = (
    "dead_letter_topic",
    "alerts_topic",
    "models_topic",
    "audit_topic",
    "state_topic",
    "artifacts_topic",
    "fleet_topic",
)
#: The topics a shadow run reads as production does.
INPUT_TOPICS: Final = ("readings_topic", "feedback_topic")
#: Every topic name of the settings (the simulator's truth topic: the service never uses it).
ALL_TOPICS: Final = (*INPUT_TOPICS, *OUTPUT_TOPICS, "truth_topic")
#: The groups a service of group ``g`` has besides ``g`` (its feedback worker's).
GROUP_SUFFIXES: Final = ("", ".feedback", ".feedback-reader", ".report")

Key = tuple[str, int]


@dataclass(frozen=True)
class ShadowRun:
    """What a shadow run is: of which production group, as which group, with which topic suffix,
    starting (on partitions it never committed) at production's committed offsets or, with
    ``since_ms``, at the first reading of that Kafka time."""

    production_group: str
    group: str
    suffix: str = DEFAULT_SUFFIX
    since_ms: int | None = None


def shadow_topic(name: str, suffix: str) -> str:
    return f"{name}{suffix}"


def shadow_state_dir(settings: Settings, group: str) -> Path:
    """The shadow's own folder: registry, snapshot cache and generated key."""
    return settings.state_dir / "shadow" / group


def shadow_settings(settings: Settings, run: ShadowRun) -> Settings:
    """The candidate's ``settings`` turned into a shadow run's; raises :class:`ConfigError` if the
    result could write anything production reads (:func:`check_isolated`)."""
    _check_names(run)
    k = settings.kafka
    renamed = {name: shadow_topic(getattr(k, name), run.suffix) for name in OUTPUT_TOPICS}
    try:
        kafka_section = KafkaSettings.model_validate(k.model_dump() | renamed | {"group_id": run.group})
    except ValidationError as exc:
        lines = [
            f"kafka.{'.'.join(map(str, e['loc']))}: {e.get('ctx', {}).get('error', e['msg'])}"
            for e in exc.errors(include_url=False)
        ]
        raise ConfigError("shadow run refused:\n" + "\n".join(lines)) from None
    p = settings.processing
    own_id = None if p.transactional_id is None else p.transactional_id + run.suffix
    shadow = settings.model_copy(
        update={
            "kafka": kafka_section,
            "alerts": settings.alerts.model_copy(update={"alertmanager_url": None}),
            "processing": p.model_copy(update={"transactional_id": own_id}),
            "registry": settings.registry.model_copy(update={"dir": None}),
            "state": settings.state.model_copy(update={"snapshot_dir": None}),
            "state_dir": shadow_state_dir(settings, run.group),
        }
    )
    check_isolated(settings, shadow, run)
    return shadow


def _check_names(run: ShadowRun) -> None:
    problems = []
    if not run.suffix:
        problems.append("--shadow-suffix: empty; the shadow's topics would be production's")
    elif not TOPIC_NAME.fullmatch(run.suffix):
        problems.append(f"--shadow-suffix {run.suffix[:64]!r}: use letters, digits, '.', '_' or '-'")
    for what, name in (("--shadow-of", run.production_group), ("--shadow-group", run.group)):
        if not TOPIC_NAME.fullmatch(name) or name in (".", ".."):
            problems.append(f"{what} {name[:64]!r}: use 1 to 249 letters, digits, '.', '_' or '-'")
    if problems:
        raise ConfigError("\n".join(problems))


def check_isolated(production: Settings, shadow: Settings, run: ShadowRun) -> None:
    """Raise :class:`ConfigError` (every problem, one line each) unless the shadow writes no
    production topic, joins no production group, reads production's readings, posts nothing to
    Alertmanager and keeps its registry and snapshots apart from production's."""
    p, s = production.kafka, shadow.kafka
    taken = {getattr(p, name): name for name in ALL_TOPICS}
    problems = [
        f"kafka.{name}: the shadow's {getattr(s, name)} is production's kafka.{taken[getattr(s, name)]}"
        for name in OUTPUT_TOPICS
        if getattr(s, name) in taken
    ]
    groups = {run.production_group + x for x in GROUP_SUFFIXES} | {p.group_id + x for x in GROUP_SUFFIXES}
    if any(s.group_id + x in groups for x in GROUP_SUFFIXES):
        problems.append(f"--shadow-group {s.group_id}: a production group (or one of its workers')")
    if "group.id" in s.extra:
        problems.append("kafka.extra sets group.id: a shadow run joins only its own group")
    if s.readings_topic != p.readings_topic:
        problems.append(f"kafka.readings_topic: the shadow reads {s.readings_topic}, not production's")
    if shadow.alerts.alertmanager_url is not None:
        problems.append("alerts.alertmanager_url: a shadow run posts nothing to Alertmanager")
    problems += _folder_problems(production, shadow)
    if problems:
        raise ConfigError("shadow run refused:\n" + "\n".join(problems))


def _folder_problems(production: Settings, shadow: Settings) -> list[str]:
    """The shadow's registry and snapshot folders must be neither production's nor inside them."""
    theirs = [_registry(production), _snapshots(production)]
    mine = {"registry": _registry(shadow), "snapshots": _snapshots(shadow)}
    return [
        f"{what} folder {folder}: inside production's {other}"
        for what, folder in mine.items()
        for other in theirs
        if folder == other or other in folder.parents
    ]


def _registry(settings: Settings) -> Path:
    r = settings.registry.dir or settings.state_dir / "registry"
    return r.resolve()


def _snapshots(settings: Settings) -> Path:
    return (
        settings.state.snapshot_dir or settings.state_dir / "snapshots"
    ).resolve() / settings.kafka.group_id


# --- where the shadow starts (Kafka) -------------------------------------------------------------


def start_offsets(shadow: KafkaSettings, run: ShadowRun) -> dict[Key, int]:
    """The offset each partition of the readings topic starts at, for a shadow group that has not
    committed it: production's committed offset (a partition production has not committed: absent,
    so it starts as production would, at ``kafka.auto_offset_reset``), or with ``run.since_ms`` the
    first reading at or after that Kafka time (none: the partition's end). Raises
    :class:`InvalidInput` for an unknown production group or a missing readings topic."""
    admin = AdminClient(kafka.client_config(shadow))
    topic = shadow.readings_topic
    meta = kafka.list_topics(admin, shadow).topics.get(topic)
    if meta is None or meta.error is not None:
        raise InvalidInput(
            f"topic {topic} does not exist at {shadow.bootstrap_servers}: a shadow run reads production's "
            "readings topic (kafka.readings_topic)"
        )
    _check_group(admin, shadow, run.production_group)
    committed = _committed(admin, run.production_group)
    elsewhere = sorted({t for t, _ in committed if t != topic})
    if elsewhere and not any(t == topic for t, _ in committed):
        raise InvalidInput(
            f"--shadow-of {run.production_group}: that group reads {', '.join(elsewhere)}, not {topic}: "
            "give the shadow production's kafka.readings_topic (its config, or TELEMON_KAFKA__READINGS_TOPIC)"
        )
    if run.since_ms is not None:
        return _offsets_at(shadow, topic, sorted(meta.partitions), run.since_ms)
    return {k: v for k, v in committed.items() if k[0] == topic}


def _check_group(admin: AdminClient, k: KafkaSettings, group: str) -> None:
    try:
        listed = admin.list_consumer_groups(request_timeout=kafka.CONNECT_TIMEOUT_S).result()
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot list the consumer groups at {k.bootstrap_servers}: {exc}") from None
    known = sorted(g.group_id for g in listed.valid)
    if group not in known:
        shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "") if known else "none"
        raise InvalidInput(
            f"--shadow-of {group}: no consumer group {group} at {k.bootstrap_servers} (groups there: "
            f"{shown}); name production's kafka.group_id, with production running"
        )


def _committed(admin: AdminClient, group: str) -> dict[Key, int]:
    """The group's committed offsets (read without joining it)."""
    request = [ConsumerGroupTopicPartitions(group)]
    try:
        result = admin.list_consumer_group_offsets(request, request_timeout=kafka.CONNECT_TIMEOUT_S)
        found = result[group].result()
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot read the committed offsets of group {group}: {exc}") from None
    return {(tp.topic, tp.partition): tp.offset for tp in found.topic_partitions or [] if tp.offset >= 0}


def _offsets_at(k: KafkaSettings, topic: str, partitions: list[int], since_ms: int) -> dict[Key, int]:
    consumer = Consumer(kafka.consumer_config(k, **{"group.id": f"{k.group_id}.start"}))
    try:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in partitions], timeout=kafka.CONNECT_TIMEOUT_S
        )
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot look up the offsets of {topic} by time: {exc}") from None
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else OFFSET_END for tp in found}


def describe(run: ShadowRun, shadow: Settings, start: Mapping[Key, int]) -> str:
    """One log line: what the shadow reads, where it writes, where it starts."""
    k = shadow.kafka
    where = (
        f"the first readings at Kafka time {rfc3339(run.since_ms)}"
        if run.since_ms is not None
        else f"group {run.production_group}'s committed offsets"
    )
    offsets = ", ".join(f"{p}:{o}" for (_, p), o in sorted(start.items()))
    offsets = f"partition:offset {offsets}" if offsets else "none yet: as production, kafka.auto_offset_reset"
    return (
        f"shadow run of group {run.production_group} as group {k.group_id}: reading {k.readings_topic} and "
        f"{k.feedback_topic}, writing only *{run.suffix} topics ({k.alerts_topic}, {k.audit_topic}, ...), "
        f"no Alertmanager, state in {shadow.state_dir}; partitions the group never committed start at "
        f"{where} ({offsets})"
    )
