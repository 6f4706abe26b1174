"""Tests for monitor.settings and monitor.ingest.kafka.client_config: defaults, file, environment, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from monitor.common import packaged
from monitor.errors import ConfigError
from monitor.ingest.kafka import FORBIDDEN_KEYS, LIBRDKAFKA_LOG, client_config
from monitor.settings import KafkaSettings, Settings, load_settings

MONITOR_YAML = Path(__file__).resolve().parents[2] / "configs" / "monitor.yaml"
PASSWORD = "hunter2-Zq8!"


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load() -> None:
    s = load_settings()
    assert s == Settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka.security_protocol == "PLAINTEXT"
    assert s.kafka.sasl_password is None
    assert s.model.anomaly_threshold == 0.9999
    assert s.drift.ks_alpha == 1e-6
    assert s.rules_file == packaged.config("rules.yaml")  # works from any folder
    assert s.rules_file.is_file()


def test_shipped_yaml_loads_and_matches_the_defaults() -> None:
    s = load_settings(MONITOR_YAML)
    assert s.kafka.group_id == "telemon"
    assert s.consume.max_message_bytes == 4096
    assert s == Settings()  # the documented file spells out the defaults


def test_yaml_file_values_are_used(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "kafka:\n  group_id: g1\ndrift:\n  check_every: 7\nlog_level: DEBUG\n")
    s = load_settings(path)
    assert (s.kafka.group_id, s.drift.check_every, s.log_level) == ("g1", 7, "DEBUG")
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"  # untouched keys keep their defaults


def test_keyword_overrides_merge_into_the_file(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "drift:\n  check_every: 7\n  window_size: 64\n")
    s = load_settings(path, drift={"check_every": 9})
    assert (s.drift.check_every, s.drift.window_size) == (9, 64)


def test_env_override_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _yaml(tmp_path, "kafka:\n  bootstrap_servers: file-host:9092\n  group_id: from-file\n")
    monkeypatch.setenv("TELEMON_KAFKA__BOOTSTRAP_SERVERS", "env-host:9093")
    s = load_settings(path)
    assert s.kafka.bootstrap_servers == "env-host:9093"
    assert s.kafka.group_id == "from-file"  # the rest of the file's section survives


def test_env_override_wins_over_keyword_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMON_DRIFT__CHECK_EVERY", "11")
    assert load_settings(None, drift={"check_every": 5}).drift.check_every == 11


def test_env_values_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMON_DRIFT__CHECK_EVERY", "0")
    with pytest.raises(
        ConfigError, match=r"^environment variable TELEMON_DRIFT__CHECK_EVERY: drift.check_every: "
    ):
        load_settings()


def test_sources_in_order_env_dotenv_secrets_overrides_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = ("group_id", "readings_topic", "alerts_topic", "truth_topic", "models_topic")
    path = _yaml(tmp_path, "kafka:\n" + "".join(f"  {k}: file\n" for k in keys))
    env_file = tmp_path / "telemon.env"
    env_file.write_text("".join(f"TELEMON_KAFKA__{k.upper()}=dotenv\n" for k in keys[:2]), encoding="utf-8")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for k in keys[:3]:
        (secrets / f"TELEMON_KAFKA__{k.upper()}").write_text("secret", encoding="utf-8")
    monkeypatch.setenv("TELEMON_KAFKA__GROUP_ID", "env")
    kafka = load_settings(
        path,
        env_file=env_file,
        secrets_dir=secrets,
        kafka=dict.fromkeys(keys[:4], "override"),
    ).kafka
    assert [getattr(kafka, k) for k in keys] == ["env", "dotenv", "secret", "override", "file"]


def test_bad_values_from_an_env_file_or_a_secret_file_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "telemon.env"
    env_file.write_text("TELEMON_DRIFT__CHECK_EVERY=zero\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=f"^env file {env_file}: TELEMON_DRIFT__CHECK_EVERY: drift.check_every: "
    ):
        load_settings(env_file=env_file)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "TELEMON_CONSUME__BATCH_SIZE").write_text("many", encoding="utf-8")
    secret = secrets.resolve() / "TELEMON_CONSUME__BATCH_SIZE"
    with pytest.raises(ConfigError, match=f"^secret file {secret}: consume.batch_size: ") as exc:
        load_settings(secrets_dir=secrets)
    assert "many" not in str(exc.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(secrets_dir=tmp_path / "missing")


def test_a_variable_that_is_not_the_json_of_its_mapping_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TELEMON_KAFKA__EXTRA", "{not json")
    with pytest.raises(ConfigError, match="kafka"):
        load_settings()


def test_settings_built_from_an_env_file_are_frozen(tmp_path: Path) -> None:
    env_file = tmp_path / "telemon.env"
    env_file.write_text("TELEMON_LOG_LEVEL=DEBUG\n", encoding="utf-8")
    s = load_settings(env_file=env_file)
    assert s.log_level == "DEBUG"
    with pytest.raises(ValidationError):
        s.log_level = "INFO"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("kafka:\n  bootstrap_server: typo:9092\n", "kafka.bootstrap_server"),
        ("drift:\n  psi_bin: 5\n", "drift.psi_bin"),
        ("logging: DEBUG\n", "logging"),
    ],
)
def test_unknown_key_is_rejected_by_name(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(_yaml(tmp_path, text))
    assert f": {where}: unknown key" in str(exc.value)


def test_non_mapping_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="top level must be a mapping"):
        load_settings(_yaml(tmp_path, "- a\n- b\n"))


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(_yaml(tmp_path, "# nothing\n")) == Settings()


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.yaml"):
        load_settings(tmp_path / "absent.yaml")


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.log_level = "DEBUG"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        s.kafka.group_id = "other"  # type: ignore[misc]


# --- client_config --------------------------------------------------------------------------------


def _sasl(**extra: str | int | float | bool) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers="broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="telemon",
        sasl_password=SecretStr(PASSWORD),
        ssl_ca_location="/etc/ssl/ca.pem",
        extra=extra,
    )


def test_client_config_plaintext() -> None:
    assert client_config(KafkaSettings()) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
        "logger": LIBRDKAFKA_LOG,  # librdkafka's lines through Python logging, rate-limited
    }


def test_client_config_passes_the_real_password() -> None:
    conf = client_config(_sasl())
    assert conf == {
        "bootstrap.servers": "broker:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "telemon",
        "sasl.password": PASSWORD,
        "ssl.ca.location": "/etc/ssl/ca.pem",
        "logger": LIBRDKAFKA_LOG,
    }
    assert all("*" not in str(v) and "SecretStr" not in str(v) for v in conf.values())


def test_client_config_passes_extra_properties() -> None:
    conf = client_config(_sasl(**{"client.id": "telemon-1", "socket.keepalive.enable": True}))
    assert conf["client.id"] == "telemon-1"
    assert conf["socket.keepalive.enable"] is True


@pytest.mark.parametrize("key", sorted(FORBIDDEN_KEYS))
def test_client_config_refuses_code_loading_keys(key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        client_config(KafkaSettings(extra={key: "/tmp/x"}))


def test_forbidden_keys_cover_the_known_code_loading_properties() -> None:
    assert {"sasl.kerberos.kinit.cmd", "plugin.library.paths", "ssl.engine.location"} <= FORBIDDEN_KEYS


def test_password_from_env_is_used_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMON_KAFKA__SASL_PASSWORD", PASSWORD)
    s = load_settings(None, kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"})
    assert client_config(s.kafka)["sasl.password"] == PASSWORD
    for text in (str(s), repr(s), str(s.kafka), s.model_dump_json()):
        assert PASSWORD not in text
    assert "**********" in str(s)


def test_an_env_file_keeps_only_the_variables_of_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env_file = tmp_path / "telemon.env"
    env_file.write_text(
        "COMPOSE_PROJECT_NAME=x\nTELEMON_KAFKA_GROUP_ID=typo\nTELEMON_KAFKA__GROUP_ID=g2\n", encoding="utf-8"
    )
    assert load_settings(env_file=env_file).kafka.group_id == "g2"
    assert "TELEMON_KAFKA_GROUP_ID names no setting (did you mean TELEMON_KAFKA__GROUP_ID?)" in caplog.text
    assert "COMPOSE_PROJECT_NAME" not in caplog.text
