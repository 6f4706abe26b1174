"""The one frozen, validated settings object: a YAML file plus ``TELEMON_*`` environment overrides.

Precedence (highest first): environment (``TELEMON_KAFKA__BOOTSTRAP_SERVERS``, nested keys joined
by ``__``), keyword overrides, the YAML file, the defaults below. Built once at start-up and passed
down; nothing else reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "telemon"
    readings_topic: str = "telemon.readings"
    dead_letter_topic: str = "telemon.dlq"
    alerts_topic: str = "telemon.alerts"
    truth_topic: str = "telemon.truth"
    models_topic: str = "telemon.models"
    partitions: int = Field(4, ge=1, description="partitions for topics telemon creates")
    session_timeout_ms: int = Field(6000, ge=1000)
    max_poll_interval_ms: int = Field(300_000, ge=10_000)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    extra: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="further librdkafka properties, passed through"
    )


class ConsumeSettings(_Section):
    batch_size: int = Field(5000, ge=1, le=100_000)
    poll_timeout_s: float = Field(0.5, gt=0)
    max_message_bytes: int = Field(4096, ge=256)
    max_future_ms: int = Field(
        86_400_000, ge=0, description="readings further ahead of the wall clock are rejected (0: off)"
    )
    delivery_timeout_s: float = Field(30.0, gt=0)


class IntegritySettings(_Section):
    stuck_run: int = Field(20, ge=2, description="identical consecutive readings that mean stuck-at")
    gap_factor: float = Field(5.0, gt=1, description="gap = interval > factor x nominal period")
    max_clock_skew_ms: int = Field(300_000, ge=0, description="0 disables the clock-skew check")


class ModelSettings(_Section):
    warmup: int = Field(50, ge=5, description="readings learned before a model scores")
    fading: float = Field(0.05, gt=0, le=1, description="weight of a new reading in the level (memory ~1/x)")
    var_fading: float = Field(0.005, gt=0, le=1, description="weight of a new reading in the noise level")
    anomaly_threshold: float = Field(0.9999, gt=0.5, lt=1)
    learn_anomalies: bool = Field(False, description="also learn from readings over the threshold")
    retrain_window: int = Field(32, ge=16, le=1024)


class DriftSettings(_Section):
    reference_size: int = Field(96, ge=32, le=4096)
    window_size: int = Field(96, ge=32, le=4096)
    check_every: int = Field(32, ge=1)
    psi_bins: int = Field(10, ge=2, le=50)
    fleet_reference_size: int = Field(2000, ge=100)
    fleet_window_size: int = Field(2000, ge=100)
    fleet_check_every: int = Field(500, ge=1)
    ks_alpha: float = Field(1e-6, gt=0, lt=1, description="KS detects drift when p < ks_alpha")
    psi_threshold: float = Field(0.5, gt=0, description="PSI detects drift when psi > this")
    adwin_delta: float = Field(0.002, gt=0, lt=1)


class MetricsSettings(_Section):
    """The HTTP endpoint: ``/metrics``, and the probes ``/healthz`` and ``/readyz``."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    liveness_timeout_s: float = Field(
        120.0, gt=0, description="/healthz fails once the consume loop has not turned for this long"
    )


class Settings(BaseSettings):
    """Everything the monitor needs, validated once and frozen."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", env_prefix="TELEMON_", env_nested_delimiter="__"
    )

    kafka: KafkaSettings = KafkaSettings()
    consume: ConsumeSettings = ConsumeSettings()
    integrity: IntegritySettings = IntegritySettings()
    model: ModelSettings = ModelSettings()
    drift: DriftSettings = DriftSettings()
    metrics: MetricsSettings = MetricsSettings()
    rules_file: Path = Path("configs/rules.yaml")
    state_dir: Path = Path(".telemon")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file; the file's content arrives as init arguments.
        return (env_settings, init_settings)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from an optional YAML file, overrides, then the environment on top."""
    data: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: the top level must be a mapping of sections")
        data = loaded or {}
    return Settings(**_merge(data, overrides))


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
