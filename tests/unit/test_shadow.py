"""A shadow run's settings: its own group and output topics, production's inputs, no Alertmanager,
its own registry and state folder; anything that would write production's outputs is refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from monitor.cli.main import main
from monitor.errors import ConfigError
from monitor.govern.rules import load_rules
from monitor.pipeline import Pipeline
from monitor.serve import shadow
from monitor.serve.metrics import Metrics
from monitor.serve.partitions import Partitions
from monitor.serve.shadow import ShadowRun, shadow_settings
from monitor.settings import Settings, load_settings

RUN = ShadowRun(production_group="telemon", group="telemon.shadow")


def production(tmp_path: Path, **overrides: object) -> Settings:
    return load_settings(
        None,
        state_dir=str(tmp_path / "state"),
        alerts={"alertmanager_url": "http://user:pw@alertmanager:9093"},
        **overrides,
    )


def test_every_output_topic_gets_the_suffix_and_the_inputs_stay_production_s(tmp_path: Path) -> None:
    prod = production(tmp_path)
    s = shadow_settings(prod, RUN)
    for name in shadow.OUTPUT_TOPICS:
        assert getattr(s.kafka, name) == getattr(prod.kafka, name) + ".shadow"
    for name in shadow.INPUT_TOPICS:
        assert getattr(s.kafka, name) == getattr(prod.kafka, name)
    assert s.kafka.group_id == "telemon.shadow"
    assert set(shadow.ALL_TOPICS) == {n for n in type(prod.kafka).model_fields if n.endswith("_topic")}


def test_no_alertmanager_and_a_registry_and_state_folder_of_its_own(tmp_path: Path) -> None:
    prod = production(tmp_path, registry={"dir": str(tmp_path / "prod-registry")})
    s = shadow_settings(prod, RUN)
    assert s.alerts.alertmanager_url is None
    assert s.state_dir == tmp_path / "state" / "shadow" / "telemon.shadow"
    assert s.registry.dir is None  # <state_dir>/registry, the shadow's folder
    assert s.state.snapshot_dir is None
    assert (s.rules_file, s.model, s.drift) == (prod.rules_file, prod.model, prod.drift)  # the candidate's


def test_a_transactional_id_of_production_is_not_reused(tmp_path: Path) -> None:
    prod = production(tmp_path, processing={"guarantee": "exactly_once", "transactional_id": "telemon-a"})
    assert shadow_settings(prod, RUN).processing.transactional_id == "telemon-a.shadow"
    assert shadow_settings(production(tmp_path), RUN).processing.transactional_id is None  # default: by group


def test_credentials_survive_the_derivation(tmp_path: Path) -> None:
    prod = production(tmp_path, kafka={"sasl_password": "s3cret-pw", "extra": {"ssl.key.password": "k3y"}})
    s = shadow_settings(prod, RUN)
    assert s.kafka.sasl_password == SecretStr("s3cret-pw")
    assert s.kafka.extra["ssl.key.password"] == SecretStr("k3y")


def test_a_suffix_that_lands_on_a_production_topic_is_refused(tmp_path: Path) -> None:
    prod = production(tmp_path, kafka={"alerts_topic": "t.alerts", "audit_topic": "t.alerts-x"})
    clash = "kafka.alerts_topic: the shadow's t.alerts-x is production's kafka.audit_topic"
    with pytest.raises(ConfigError, match=re.escape(clash)):
        shadow_settings(prod, ShadowRun("telemon", "telemon.shadow", suffix="-x"))


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (
            ShadowRun("telemon", "telemon.shadow", suffix=""),
            "empty; the shadow's topics would be production's",
        ),
        (ShadowRun("telemon", "telemon.shadow", suffix="/x"), "--shadow-suffix '/x'"),
        (ShadowRun("telemon", "telemon"), "--shadow-group telemon: a production group"),
        (ShadowRun("telemon", "telemon.feedback"), "a production group"),
        (ShadowRun("telemon", "x", suffix="." + "a" * 239), "kafka.dead_letter_topic: .telemon.dlq.aaa"),
    ],
)
def test_names_that_would_touch_production_are_refused(tmp_path: Path, run: ShadowRun, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        shadow_settings(production(tmp_path), run)


def test_a_group_id_in_kafka_extra_is_refused(tmp_path: Path) -> None:
    prod = production(tmp_path, kafka={"allow_insecure_tls": True, "extra": {"group.id": "telemon"}})
    with pytest.raises(ConfigError, match=re.escape("kafka.extra sets group.id")):
        shadow_settings(prod, RUN)


def test_the_shadow_never_uses_production_s_registry_folder(tmp_path: Path) -> None:
    prod = production(tmp_path, registry={"dir": str(tmp_path / "state")})  # the whole state folder
    with pytest.raises(ConfigError, match=r"registry folder .* inside production's"):
        shadow_settings(prod, RUN)


def test_shadow_options_need_shadow_of(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--shadow-group", "g"]) == 2
    assert "--shadow-group needs --shadow-of GROUP" in capsys.readouterr().err
    assert main(["run", "--shadow-of", "telemon", "--from", "yesterday"]) == 2
    assert "--from 'yesterday': not a time" in capsys.readouterr().err


def test_run_help_explains_the_shadow_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for option in ("--shadow-of GROUP", "--shadow-group NAME", "--shadow-suffix SUFFIX", "--from TIME"):
        assert option in out


class _Committed:
    """A consumer whose group committed partition 1 of the readings topic at 7, nothing else."""

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, 7 if tp.partition == 1 else -1001) for tp in partitions
        ]


def test_a_partition_never_committed_starts_at_the_given_offset_and_a_committed_one_at_its_own(
    tmp_path: Path,
) -> None:
    settings = load_settings(None, state_dir=str(tmp_path), state={"changelog": False})
    catalog = settings.channels.catalog()
    pipeline = Pipeline(settings, load_rules(settings.rules_file, catalog.names))
    topic = settings.kafka.readings_topic
    start = {(topic, 0): 42, (topic, 1): 99}
    parts = Partitions(settings, pipeline, Metrics(CollectorRegistry()), b"k" * 32, None, start)
    assigned = [TopicPartition(topic, p) for p in range(3)]
    parts.assign(_Committed(), assigned, lambda _state: None)  # type: ignore[arg-type]
    assert [tp.offset for tp in assigned] == [42, 7, OFFSET_BEGINNING]  # partition 2: auto_offset_reset
