"""The one frozen, validated settings object, from a YAML file and ``TELEMON_*`` variables.

:func:`load_settings` merges pydantic-settings sources, highest precedence first
(:data:`PRECEDENCE`): the environment (``TELEMON_KAFKA__BOOTSTRAP_SERVERS``, nested keys joined by
``__``, a mapping as JSON), an optional ``.env`` file of the same variables, an optional secrets
folder (a file per value, named as its variable), keyword overrides, the YAML file
(:class:`ConfigFileSource`, read with :mod:`monitor.common.yamlfile`), the defaults below;
mappings merge key by key. Every problem is reported with its source (``FILE:LINE:COLUMN``, the
variable, the file), and :func:`build_settings` tells where each value comes from
(``telemon config show``). Built once at start-up and passed down; nothing else reads the
environment."""

from __future__ import annotations

import difflib
import functools
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, NamedTuple, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from monitor import errors, schema
from monitor.common import files, packaged, riverpath, yamlfile
from monitor.errors import ConfigError

log = logging.getLogger(__name__)


#: Kafka's legal topic names (also required of the group id: both name snapshot folders).
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    """How to reach Kafka. Credentials never show in ``repr``/``str``, dumps or validation errors.

    ``extra`` passes further librdkafka properties through, after checks: names are trimmed and
    lower-cased (librdkafka's own spelling); properties that load or run code are refused; the
    values of credential properties are held as :class:`SecretStr`; switching off the checks of
    the broker's certificate needs ``allow_insecure_tls``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    #: Properties that load a shared library or run a shell command.
    CODE_LOADING_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"sasl.kerberos.kinit.cmd", "plugin.library.paths", "ssl.engine.location", "ssl.providers"}
    )
    #: Properties with a setting of their own: overriding them from ``extra`` would go unnoticed
    #: (``security.protocol: SASL_PLAINTEXT`` under ``security_protocol: SASL_SSL`` sends the
    #: password in clear), so only ``allow_insecure_tls`` lets ``extra`` set them.
    OVERRIDE_KEYS: ClassVar[dict[str, str]] = {
        "bootstrap.servers": "bootstrap_servers",
        "metadata.broker.list": "bootstrap_servers",
        "security.protocol": "security_protocol",
        "sasl.mechanism": "sasl_mechanism",
        "sasl.mechanisms": "sasl_mechanism",
        "ssl.ca.location": "ssl_ca_location",
        "group.id": "group_id",
    }
    #: Properties telemon's delivery guarantees depend on: never taken from ``extra``.
    GUARANTEE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "enable.auto.commit",
            "enable.auto.offset.store",
            "enable.idempotence",
            "acks",
            "request.required.acks",
            "transactional.id",
            "isolation.level",
        }
    )
    #: Substituted into the default ``sasl.kerberos.kinit.cmd`` shell command.
    SHELL_VALUE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"sasl.kerberos.principal", "sasl.kerberos.keytab"}
    )
    SHELL_SAFE: ClassVar[re.Pattern[str]] = re.compile(r"[\w.@/+=:,~-]+")
    #: Credentials (librdkafka's sensitive properties); names containing a hint count too.
    SECRET_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "sasl.password",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.client.credentials.client.secret",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "sasl.oauthbearer.assertion.private.key.pem",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl.keystore.password",
        }
    )
    SECRET_HINTS: ClassVar[tuple[str, ...]] = ("password", "secret", "passphrase", "key.pem")
    #: The values that keep the broker's certificate and host name checked.
    VERIFYING_VALUES: ClassVar[dict[str, tuple[str, ...]]] = {
        "enable.ssl.certificate.verification": ("true", "t", "1"),
        "ssl.endpoint.identification.algorithm": ("https",),
    }

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="the Kafka brokers, host:port[,host:port...]"
    )
    group_id: str = Field(
        "telemon", description="consumer group of the monitor's replicas (also names their snapshot folders)"
    )
    readings_topic: str = Field(
        "telemon.readings", description="the readings, in the wire format, keyed by device id"
    )
    dead_letter_topic: str = Field(
        "telemon.dlq", description="quarantined messages, as received, with the reason in headers"
    )
    alerts_topic: str = Field("telemon.alerts", description="the rules' alerts (pending, firing, resolved)")
    truth_topic: str = Field(
        "telemon.truth", description="ground truth of simulated events (telemon simulate), for evaluation"
    )
    models_topic: str = Field("telemon.models", description="model versions as they are trained and promoted")
    audit_topic: str = Field("telemon.audit", description="the model registry's audit trail")
    feedback_topic: str = Field(
        "telemon.feedback", description="operators' verdicts on alerts (telemon feedback)"
    )
    state_topic: str = Field(
        "telemon.state", description="the compacted changelog of partition state (state.changelog)"
    )
    artifacts_topic: str = Field(
        "telemon.artifacts", description="signed model versions of a shared registry (compacted)"
    )
    fleet_topic: str = Field(
        "telemon.fleet", description="the replicas' partial fleet and cohort aggregates (fleet.span)"
    )
    partitions: int = Field(4, ge=1, description="partitions for topics telemon creates")
    session_timeout_ms: int = Field(
        6000, ge=1000, description="a replica silent this long leaves the group (its partitions move)"
    )
    max_poll_interval_ms: int = Field(
        300_000, ge=10_000, description="a replica that does not poll for this long leaves the group"
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a partition without a committed offset starts"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how to talk to the brokers: TLS (SSL), SASL authentication, both or neither"
    )
    sasl_mechanism: str | None = Field(None, description="SASL mechanism, e.g. PLAIN, SCRAM-SHA-512")
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(
        None,
        description="SASL password; set it from the environment (TELEMON_KAFKA__SASL_PASSWORD), not the file",
    )
    ssl_ca_location: str | None = Field(
        None, description="PEM file of the CA that signed the brokers' certificates (default: the system's)"
    )
    allow_insecure_tls: bool = Field(
        False,
        description="the insecure opt-in: accept extra properties that switch off checking the broker's "
        "certificate (enable.ssl.certificate.verification: false, ssl.endpoint.identification.algorithm: "
        "none) or override security_protocol, bootstrap_servers, sasl_mechanism, ssl_ca_location or "
        "group_id; test clusters only",
    )
    extra: dict[str, str | int | float | bool | SecretStr] = Field(
        default_factory=dict,
        description="further librdkafka properties, passed through (code-loading ones, callbacks and "
        "the delivery-guarantee ones refused, credentials kept secret)",
    )

    @field_validator(
        "group_id",
        "readings_topic",
        "dead_letter_topic",
        "alerts_topic",
        "truth_topic",
        "models_topic",
        "audit_topic",
        "feedback_topic",
        "state_topic",
        "artifacts_topic",
        "fleet_topic",
    )
    @classmethod
    def _path_safe_name(cls, name: str) -> str:
        """Kafka's own rule for topic names, applied to the group id too: both name folders of the
        snapshots, so neither may be ``..`` or hold a ``/``."""
        if not TOPIC_NAME.fullmatch(name) or name in (".", ".."):
            raise ValueError(
                f"{name[:64]!r}: use 1 to 249 letters, digits, '.', '_' or '-' (not '.' or '..')"
            )
        return name

    @classmethod
    def is_secret(cls, key: str) -> bool:
        """Whether the librdkafka property ``key`` (canonical spelling) holds a credential."""
        return key in cls.SECRET_KEYS or any(hint in key for hint in cls.SECRET_HINTS)

    def insecure_tls_keys(self) -> list[str]:
        """The ``extra`` properties that switch off checking the broker's certificate or name."""
        return sorted(
            key
            for key, verifying in self.VERIFYING_VALUES.items()
            if key in self.extra and str(self.extra[key]).strip().lower() not in verifying
        )

    @field_validator("extra", mode="before")
    @classmethod
    def _checked_extra(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw  # the type check reports it
        extra = cls._canonical_names(raw)
        refused = sorted(cls.CODE_LOADING_KEYS & set(extra))
        if refused:
            raise ValueError(f"kafka.extra may not set {refused}: these load or run code")
        callbacks = sorted(k for k in extra if isinstance(k, str) and (k.endswith("_cb") or k in _PY_KEYS))
        if callbacks:
            raise ValueError(f"kafka.extra may not set {callbacks}: callbacks are telemon's own")
        guarantees = sorted(cls.GUARANTEE_KEYS & set(extra))
        if guarantees:
            raise ValueError(
                f"kafka.extra may not set {guarantees}: telemon's delivery guarantees depend on them"
            )
        for key in sorted(cls.SHELL_VALUE_KEYS & set(extra)):
            if not cls.SHELL_SAFE.fullmatch(str(extra[key])):
                raise ValueError(
                    f"kafka.extra.{key} goes into the kinit shell command: use only letters, digits "
                    "and . _ @ / + = : , ~ -"
                )
        return {key: cls._secret_if_credential(key, value) for key, value in extra.items()}

    @staticmethod
    def _canonical_names(raw: dict[Any, Any]) -> dict[Any, Any]:
        """librdkafka names are lower case: ``" SASL.Password"`` means ``sasl.password``."""
        extra: dict[Any, Any] = {}
        for key, value in raw.items():
            name = key.strip().lower() if isinstance(key, str) else key
            if name in extra:
                raise ValueError(f"kafka.extra sets {name!r} more than once (names ignore case)")
            extra[name] = value
        return extra

    @classmethod
    def _secret_if_credential(cls, key: Any, value: Any) -> Any:
        if isinstance(key, str) and cls.is_secret(key) and isinstance(value, str | int | float):
            return SecretStr(str(value))
        return value

    def override_keys(self) -> list[str]:
        """The ``extra`` properties that override a setting of this section."""
        return sorted(set(self.OVERRIDE_KEYS) & set(self.extra))

    @model_validator(mode="after")
    def _certificates_checked(self) -> KafkaSettings:
        if self.allow_insecure_tls:
            return self
        weakened = self.insecure_tls_keys()
        if weakened:
            raise ValueError(
                f"kafka.extra {weakened} switch off checking the broker's certificate; set "
                "kafka.allow_insecure_tls: true to accept that (test clusters only)"
            )
        overrides = self.override_keys()
        if overrides:
            own = ", ".join(f"{k} -> kafka.{self.OVERRIDE_KEYS[k]}" for k in overrides)
            raise ValueError(
                f"kafka.extra may not override settings of their own ({own}): set those instead, or "
                "kafka.allow_insecure_tls: true to accept the override (test clusters only)"
            )
        return self


#: librdkafka properties that only the Python client understands (callables, a logger).
_PY_KEYS = frozenset({"on_delivery", "on_commit", "logger"})


class ConsumeSettings(_Section):
    """How the readings are consumed: batches, message checks, dead letters, delivery and shutdown."""

    batch_size: int = Field(5000, ge=1, le=100_000, description="a batch closes at this many messages")
    max_batch_age_ms: int = Field(
        100,
        ge=1,
        le=60_000,
        description="... or this long after the consumer began to fill it, whichever comes first: the "
        "most a reading waits for its batch (the broker's fetch wait is capped by it too)",
    )
    poll_timeout_s: float = Field(
        0.5, gt=0, description="how long a poll waits while delivery is degraded, or a lost broker is probed"
    )
    max_message_bytes: int = Field(4096, ge=256, description="larger readings are dead-lettered (oversize)")
    max_future_ms: int = Field(
        86_400_000,
        ge=0,
        description="readings whose ts is further ahead of the wall clock are rejected; Kafka timestamps "
        "further ahead are ignored (0: off)",
    )
    require_key: bool = Field(
        True,
        description="dead-letter messages without a key (missing_key); false: accept them, the device id "
        "taken from the payload",
    )
    dead_letter_max_bytes: int = Field(
        512 * 1024,
        ge=4096,
        le=16 << 20,
        description="largest key + value dead-lettered whole; a larger record is dead-lettered truncated "
        "to its first bytes (reason too_large, its size and SHA-256 in headers)",
    )
    delivery_timeout_s: float = Field(
        30.0, gt=0, description="longest wait for the broker to acknowledge a batch's outputs"
    )
    shutdown_timeout_s: float = Field(
        60.0,
        gt=0,
        description="after SIGTERM/SIGINT, the process exits within this many seconds, stuck or not",
    )


class ProcessingSettings(_Section):
    """The delivery guarantee of telemon's outputs (docs: operations/guarantees.md)."""

    guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="at_least_once: outputs are delivered, then offsets committed (a crash re-sends a "
        "batch's outputs; consumers dedupe by id); exactly_once: a batch's outputs, changelog records "
        "and offsets commit in one Kafka transaction (consumers read with isolation.level=read_committed)",
    )
    transactional_id: str | None = Field(
        None,
        description="exactly_once: this replica's transactional id, stable across its restarts and unique "
        "in the group (default: telemon-<group id>-<host name>)",
    )
    transaction_timeout_ms: int = Field(
        10_000,
        ge=1000,
        le=900_000,
        description="exactly_once: how long a transaction may stay open; a replica that died holds back "
        "read_committed consumers of its open transaction's partitions this long at most",
    )


class IntegritySettings(_Section):
    """The data-integrity checks of each (device, sensor) pair's stream: stuck-at, gaps, clock skew."""

    stuck_run: int = Field(20, ge=2, description="identical consecutive readings that mean stuck-at")
    gap_factor: float = Field(5.0, gt=1, description="gap = interval > factor x nominal period")
    max_clock_skew_ms: int = Field(300_000, ge=0, description="0 disables the clock-skew check")


Flagged = Literal["learn", "clip", "skip"]


class ModelSettings(_Section):
    """The pair models: one per (device, sensor), learning the level and noise of its stream online
    and scoring each reading."""

    warmup: int = Field(50, ge=5, description="readings learned before a model scores")
    fading: float = Field(0.05, gt=0, le=1, description="weight of a new reading in the level (memory ~1/x)")
    var_fading: float = Field(0.005, gt=0, le=1, description="weight of a new reading in the noise level")
    trend: float | None = Field(
        None,
        ge=0,
        le=1,
        description="weight of a forecast error in the level's trend, relative to fading, for every channel "
        "(0: no trend; a level alone lags a steady ramp by slope/fading); unset: each channel's own "
        "(built-in humidity, pressure, temperature 0.3, motion kinds 0, declared channels their trend)",
    )
    anomaly_threshold: float = Field(
        0.9999,
        gt=0.5,
        lt=1,
        description="a reading whose anomaly score (0.5: typical) exceeds this is anomalous",
    )
    rate_window_s: float = Field(
        300.0,
        gt=0,
        description="event time over which the level's speed is measured for a channel's max_rate (the "
        "`rate` signal): longer is steadier, shorter quicker",
    )
    learn_anomalies: bool = Field(False, description="also learn from readings over the threshold, fully")
    clip_anomalies: bool = Field(
        True,
        description="without learn_anomalies: a reading over the threshold moves the level as much as one "
        "on the threshold would, never the noise level (false: it is not learned at all)",
    )
    retrain_window: int = Field(
        32, ge=16, le=1024, description="latest readings kept per pair in a ring, to retrain on"
    )

    @property
    def flagged(self) -> Flagged:
        """What a pair model does with a reading over the threshold."""
        return "learn" if self.learn_anomalies else "clip" if self.clip_anomalies else "skip"


class NoveltySettings(_Section):
    """The novelty stage (:mod:`monitor.detect.novelty`): range, daily profile, likelihood, refractory."""

    enabled: bool = Field(False, description="score every reading's novelty; its level decides anomalies")
    threshold: float = Field(
        0.25, gt=0, le=1, description="level at or over which a reading is anomalous (0.5 up: new ground)"
    )
    warmup: int = Field(50, ge=1, description="readings of a pair before range and profile residuals count")
    range_tolerance: float = Field(
        0.005, ge=0, description="new ground must pass the range by more than this fraction of it"
    )
    residual_weight: float = Field(
        0.45, ge=0, le=0.98, description="level of residual new ground, x (0.5 + excess / range)"
    )
    residual_tolerance: float = Field(
        0.1, ge=0, description="residual new ground must pass the residuals' range by this fraction of it"
    )
    residual_warmup: int = Field(
        500, ge=1, description="readings of a pair before residual new ground counts"
    )
    fading: float = Field(0.05, gt=0, le=1, description="weight of a reading in its hour's profile mean")
    var_fading: float = Field(0.005, gt=0, le=1, description="weight of a reading in the residual variance")
    z_scale: float = Field(8.0, gt=0, description="residual (in standard deviations) that scores raw 1")
    average: int = Field(20, ge=1, le=500, description="readings in the recent mean raw score")
    learning: int = Field(
        300, ge=1, description="readings before the likelihood learns a baseline; it scores after twice this"
    )
    likelihood_memory: float = Field(
        3000, ge=1, description="readings of memory of the recent mean's mean and variance"
    )
    regime_fading: float = Field(
        0.0003, gt=0, le=1, description="weight of a residual in the regime detector's slow mean and variance"
    )
    regime_slack: float = Field(0.8, ge=0, description="CUSUM slack over the mean |z| of normal residuals")
    regime_threshold: float = Field(20.0, gt=0, description="CUSUM sum at which a regime change alarms")
    regime_level: float = Field(0.3, ge=0, le=1, description="level of a regime-change alarm")
    regime_warmup: int = Field(500, ge=1, description="readings before the regime detector runs")
    regime_relearn: int = Field(300, ge=1, description="readings it relearns the new regime after an alarm")
    flat_min: int = Field(
        100, ge=2, description="readings of one repeated value that may alarm as a flatline"
    )
    flat_warmup: int = Field(200, ge=1, description="readings of a pair before flatlines alarm")
    flat_level: float = Field(0.3, ge=0, le=1, description="level of a record flatline")
    refractory: int = Field(30, ge=0, description="readings after a level in which only a higher one reports")


class JointSettings(_Section):
    """The device tier (:mod:`monitor.detect.joint`): per device, one model over all its channels
    and axes together, scoring each frame (every channel reported once) by its Hotelling T^2."""

    enabled: bool = Field(
        True, description="keep a joint model per device (memory: see state.memory_budget_mb)"
    )
    warmup: int = Field(100, ge=2, description="frames learned before a device's joint model scores")
    fading: float = Field(
        0.005, gt=0, le=1, description="weight of a new frame in the mean and covariance (memory ~1/x frames)"
    )
    refresh: int = Field(16, ge=1, description="learned frames between refreshes of the inverse covariance")
    ridge: float = Field(
        1e-4, ge=0, description="added to every variance, relative to it (besides its resolution squared)"
    )
    relearn_after: int = Field(
        200, ge=0, description="consecutive flagged frames after which the model learns anew (0: never)"
    )


class RiverTierSettings(_Section):
    """A River tier (:mod:`monitor.detect.rivertier`): a River anomaly detector, named by its class
    path, scoring the readings of some sensors (of some devices), shared by them or one per device."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="the tier's name, in messages and logs")
    model: str = Field(
        description="dotted path of a River anomaly detector class (river.* only), e.g. "
        "river.anomaly.HalfSpaceTrees"
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="the class's constructor arguments (numbers, strings, lists, mappings)",
    )
    preprocessing: Literal["none", "standard", "minmax"] = Field(
        "none",
        description="scale the features first with River's preprocessing.StandardScaler or MinMaxScaler "
        "(learned online with the model; HalfSpaceTrees expects [0, 1])",
    )
    sensors: tuple[str, ...] = Field((), description="the sensors it scores (empty: every sensor)")
    cohort: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_]{0,63}(=[^=]+)?$",
        description="only (device, sensor) pairs with this label, of cohorts_file or of the channel: "
        "'label=value' (those pairs), or 'label' (every pair with the label; shared models then per value)",
    )
    share: Literal["fleet", "device"] = Field(
        "fleet",
        description="fleet: one model per sensor (and cohort value) for all its devices; device: one per "
        "device and sensor, in the per-device memory budget",
    )
    quantile: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="flag scores at or over this running quantile (River's anomaly.QuantileFilter)",
    )
    threshold: float | None = Field(
        None, description="flag scores at or over this value (River's anomaly.ThresholdFilter)"
    )
    protect: bool = Field(True, description="learn only from readings it does not flag")
    warmup: int = Field(250, ge=0, description="readings a model learns before its scores count")

    @field_validator("model")
    @classmethod
    def _river_class(cls, path: str) -> str:
        riverpath.resolve(path)
        return path

    @model_validator(mode="after")
    def _buildable(self) -> RiverTierSettings:
        if (self.quantile is None) == (self.threshold is None):
            raise ValueError(
                f"river tier {self.name}: give one of quantile and threshold (how a score becomes a flag)"
            )
        detector = riverpath.resolve(self.model)
        if riverpath.is_supervised(detector) and self.preprocessing != "none":
            raise ValueError(
                f"river tier {self.name}: {self.model} scores the reading's value itself: "
                "preprocessing must be none"
            )
        try:
            detector(**self.params)
        except Exception as exc:  # whatever River's constructor says is the answer to give
            raise ValueError(f"river tier {self.name}: {self.model}({_args(self.params)}): {exc}") from None
        return self

    @property
    def cohort_label(self) -> tuple[str, str | None] | None:
        """``(label, value)`` of the devices it covers (value None: any), or None for all devices."""
        if self.cohort is None:
            return None
        label, _, value = self.cohort.partition("=")
        return label, value or None


def _args(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())[:200]


class RiverSettings(_Section):
    """River tiers: River anomaly detectors scoring the stream beside the pair models (docs:
    "River tiers"). A (device, sensor) pair is scored by the first tier in the list that covers it."""

    tiers: tuple[RiverTierSettings, ...] = Field(
        (), description="the tiers, in order of precedence (empty: none)"
    )
    min_devices: int = Field(
        1000,
        ge=1,
        description="refuse to start when the tiers' models leave state.memory_budget_mb room for fewer "
        "devices",
    )

    @model_validator(mode="after")
    def _unique(self) -> RiverSettings:
        names = [t.name for t in self.tiers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"river.tiers: the name {', '.join(repeated)} is used more than once")
        return self


class InputDriftSettings(_Section):
    """Drift of the inputs themselves (:mod:`monitor.detect.inputs`): per (device, sensor) pair and
    axis, binned KS and PSI of the latest inputs against a frozen reference of the pair's first
    ones; each device's latest inputs against the fleet's (the ``peer_*`` signals); and each cohort's
    against the rest of the fleet's (``cohort_input_*``, :mod:`monitor.detect.cohortinputs`)."""

    enabled: bool = Field(True, description="watch the inputs (signals input_*, peer_* and cohort_input_*)")
    bins: int = Field(
        10, ge=2, le=50, description="bins per axis: quantiles of the reference inputs, frozen with it"
    )
    reference_size: int = Field(
        96, ge=16, le=4096, description="first inputs after warm-up (or a promotion): the pair's reference"
    )
    window_size: int = Field(
        96,
        ge=16,
        le=4096,
        description="the latest inputs of a pair compared with its reference and the fleet",
    )
    fleet_reference_size: int = Field(
        2000, ge=100, le=100_000, description="first inputs of a sensor across the fleet: the peer bins"
    )
    fleet_window_size: int = Field(
        2000,
        ge=100,
        le=100_000,
        description="the fleet's latest inputs of a sensor a device is compared with",
    )
    ks_alpha: float = Field(
        1e-6,
        gt=0,
        lt=1,
        description="an axis drifts when its KS p-value < ks_alpha and its PSI > psi_threshold",
    )
    psi_threshold: float = Field(0.5, gt=0, description="see ks_alpha")
    cohort_min_inputs: int = Field(
        100,
        ge=16,
        description="a cohort's inputs are compared with the rest of the fleet's (cohort_input_*) once each "
        "side holds this many of the fleet's latest fleet_window_size inputs",
    )

    @model_validator(mode="after")
    def _cohort_room(self) -> InputDriftSettings:
        if 2 * self.cohort_min_inputs > self.fleet_window_size:
            raise ValueError(
                f"inputs.cohort_min_inputs: {self.cohort_min_inputs} leaves no room for both sides of a "
                f"cohort comparison in fleet_window_size ({self.fleet_window_size}): at most half of it"
            )
        return self


class DriftSettings(_Section):
    """Drift of the anomaly scores: KS, PSI and ADWIN per pair, and over the fleet and cohorts of a
    sensor, and how often each is evaluated (with the rules)."""

    reference_size: int = Field(
        96, ge=32, le=4096, description="first scores of a pair after warm-up (or a promotion): its reference"
    )
    window_size: int = Field(
        96, ge=32, le=4096, description="the latest scores of a pair compared with its reference"
    )
    check_every: int = Field(
        32, ge=1, description="a pair is evaluated (drift tests, device-scope rules) every this many readings"
    )
    psi_bins: int = Field(10, ge=2, le=50, description="PSI bins: quantiles of the reference scores")
    fleet_reference_size: int = Field(
        2000, ge=100, description="first scores of a sensor across the fleet (or a cohort): its reference"
    )
    fleet_window_size: int = Field(
        2000, ge=100, description="the latest scores of a sensor across the fleet compared with its reference"
    )
    fleet_check_every: int = Field(
        500, ge=1, description="the fleet and cohorts of a sensor are evaluated every this many scores"
    )
    urgent_streak: int = Field(
        3,
        ge=0,
        description="consecutive anomalous readings of a pair that bring its evaluation forward "
        "(0: never); the run's length is the anomaly_streak signal",
    )
    urgent_gap: bool = Field(
        True, description="a reading that ends a data gap brings its pair's evaluation forward"
    )
    ks_alpha: float = Field(1e-6, gt=0, lt=1, description="KS detects drift when p < ks_alpha")
    ks_autocorrelation: bool = Field(
        True,
        description="KS p-values count each window's effective sample size n(1-r)/(1+r), r its "
        "lag-1 autocorrelation (false: its length, as if its scores were independent)",
    )
    psi_threshold: float = Field(0.5, gt=0, description="PSI detects drift when psi > this")
    adwin_delta: float = Field(
        0.002, gt=0, lt=1, description="ADWIN's confidence parameter (smaller: fewer, surer detections)"
    )


class ChannelSettings(_Section):
    """A channel a deployment declares: its readings are wire-format messages whose ``sensor`` is
    the channel's name and whose ``values`` hold its axes. Every stage treats it like a built-in kind."""

    name: str = Field(pattern=f"^{schema.NAME_PATTERN.pattern}$", description="the readings' sensor field")
    unit: str = Field(pattern=f"^{schema.UNIT_PATTERN.pattern}$", description="the readings' unit field")
    low: float = Field(description="lowest value a working sensor can report (below: out_of_range)")
    high: float = Field(description="highest value a working sensor can report")
    resolution: float = Field(
        gt=0,
        description="smallest meaningful change: floors the noise a model learns (one quantisation step)",
    )
    axes: tuple[str, ...] = Field(
        ("value",),
        min_length=1,
        max_length=schema.MAX_AXES,
        description=f"the values' keys (1 to {schema.MAX_AXES}), scored together",
    )
    rate_hz: float = Field(1.0, gt=0, description="nominal sampling rate (the gap check's first estimate)")
    labels: tuple[tuple[str, str], ...] = Field(
        (),
        description="cohort labels of the channel, e.g. {vendor: bosch}: each (device, channel) pair is in "
        "the cohorts of its device's cohorts_file labels and of these (a label in both is refused)",
    )
    max_rate: float = Field(
        0.0,
        ge=0,
        description="fastest plausible change of the level, units per second: the `rate` signal is the "
        "level's change over this (0: unchecked)",
    )
    trend: float = Field(
        0.0,
        ge=0,
        le=1,
        description="weight of the pair models' trend, relative to model.fading (0: none; 0.3 for a "
        "quantity that ramps, as the built-in temperature); model.trend, when set, overrides it",
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, raw: Any) -> Any:
        """A mapping of label to value, kept as pairs sorted by label (the settings stay hashable)."""
        pairs = list(raw.items()) if isinstance(raw, Mapping) else raw
        if not isinstance(pairs, list | tuple) or any(
            not isinstance(p, list | tuple) or len(p) != 2 for p in pairs
        ):
            raise ValueError("a mapping of label to value, e.g. {vendor: bosch}")
        if len({p[0] for p in pairs}) < len(pairs):
            raise ValueError("a label is given twice")
        return tuple(sorted(_label(*pair) for pair in pairs))

    @field_validator("axes")
    @classmethod
    def _axes(cls, axes: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in axes if not schema.NAME_PATTERN.fullmatch(a)]
        if bad:
            raise ValueError(f"axis name {bad[0]!r} must match {schema.NAME_PATTERN.pattern}")
        if len(set(axes)) < len(axes):
            raise ValueError("axis names must be unique")
        return axes

    @model_validator(mode="after")
    def _range(self) -> ChannelSettings:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"channel {self.name}: low < high, both finite (got {self.low}, {self.high})")
        if self.resolution >= self.high - self.low:
            raise ValueError(f"channel {self.name}: resolution {self.resolution} spans the whole range")
        return self

    def spec(self) -> schema.SensorSpec:
        return schema.SensorSpec(
            self.name,
            self.axes,
            self.unit,
            self.low,
            self.high,
            self.rate_hz,
            self.resolution,
            max_rate=self.max_rate,
            trend=self.trend,
        )


#: A label's value: what a cohort key shows after ``label=`` (in alerts and metrics).
LABEL_VALUE: Final = re.compile(r"[^\x00-\x1f]{1,64}")


def _label(name: Any, value: Any) -> tuple[str, str]:
    """One validated channel label: a name a rule's ``cohort`` can give, a string value (quoted
    in YAML if it would read as a number, as in a cohorts file)."""
    if not isinstance(name, str) or not schema.NAME_PATTERN.fullmatch(name):
        raise ValueError(f"label {name!r} must match {schema.NAME_PATTERN.pattern} (as a rule's cohort)")
    if not isinstance(value, str):
        raise ValueError(f'label {name}: the value {value!r} is not a string (quote it: "{value}")')
    if not LABEL_VALUE.fullmatch(value):
        raise ValueError(f"label {name}: the value must be 1 to 64 characters, none a control character")
    return name, value


class AutoChannelDefaults(_Section):
    """What a channel registered automatically gets that its first reading cannot tell."""

    resolution: float = Field(
        0.01,
        gt=0,
        description="its quantisation step, the noise floor of its models (the built-in scalar kinds' 0.01)",
    )
    rate_hz: float = Field(1.0, gt=0, description="its nominal sampling rate")


#: The most channels ``channels.auto_register`` may leave room for: each takes per-device state
#: (as a declared channel of three axes) and metric series (one sensor label value) up front.
MAX_AUTO_CHANNELS = 64


class ChannelsSettings(_Section):
    """What is monitored: the six built-in kinds, the channels declared here, and with
    ``auto_register`` up to that many channels registered on their first reading. Readings of any
    other sensor are dead-lettered as ``unknown_sensor``."""

    builtin: bool = Field(
        True, description="monitor the six built-in kinds (accelerometer, ..., temperature)"
    )
    declare: tuple[ChannelSettings, ...] = Field(
        (), description="channels besides the built-in kinds; one with a built-in name replaces that kind"
    )
    auto_register: int = Field(
        0,
        ge=0,
        le=MAX_AUTO_CHANNELS,
        description="room for this many channels registered on their first valid reading (axes and unit "
        "from it, no range); 0: off, readings of undeclared sensors are dead-lettered",
    )
    auto_defaults: AutoChannelDefaults = AutoChannelDefaults()

    @model_validator(mode="after")
    def _names(self) -> ChannelsSettings:
        names = [c.name for c in self.declare]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"channels.declare: {', '.join(repeated)} declared more than once")
        if not self.builtin and not self.declare and not self.auto_register:
            raise ValueError(
                "channels: nothing to monitor (builtin is false, no channel is declared, auto_register is 0)"
            )
        return self

    def labels(self) -> dict[str, dict[str, str]]:
        """The declared channels' cohort labels by channel name (a channel without any: absent)."""
        return {c.name: dict(c.labels) for c in self.declare if c.labels}

    def catalog(self) -> schema.Catalog:
        """The sensors in index order: the built-in kinds (each replaced by a declared channel of
        its name), then the other declared channels in their order; ``auto_register`` spare
        indices for channels registered later."""
        return _catalog(self)


@functools.lru_cache(maxsize=8)
def _catalog(channels: ChannelsSettings) -> schema.Catalog:
    declared = {c.name: c.spec() for c in channels.declare}
    builtin = [declared.pop(s.name, s) for s in schema.BUILTIN] if channels.builtin else []
    return schema.Catalog([*builtin, *(s for s in declared.values())], channels.auto_register)


class StateSettings(_Section):
    """Where per-partition state lives, how often it is saved, and how much of it is kept."""

    changelog: bool = Field(
        True,
        description="checkpoint partition state to the compacted topic kafka.state_topic, so a partition "
        "moves to a replica on another machine with its state (false: the snapshot folder only, shared "
        "by the group's replicas)",
    )
    snapshot_dir: Path | None = Field(
        None,
        description="snapshot folder: a local cache verified against the changelog, or with changelog "
        "false the state itself, shared by a group's replicas (default: state_dir/snapshots)",
    )
    snapshot_interval_s: float = Field(
        10.0, ge=0, description="seconds between snapshots (also on revocation and shutdown; 0: every batch)"
    )
    evict_idle_s: float = Field(
        86_400.0, ge=0, description="forget devices silent this long in Kafka time (0: never)"
    )
    memory_budget_mb: float = Field(
        1024.0,
        gt=0,
        description="memory for device state; the device cap is this over the measured size of one device",
    )
    max_devices: int | None = Field(
        None, ge=1, description="a lower device cap than the memory budget's (null: the budget's)"
    )


class LogUniform(_Section):
    """A range sampled log-uniformly by the random search (``{low: 0.01, high: 0.2}``)."""

    low: float = Field(gt=0, le=1, description="smallest value")
    high: float = Field(gt=0, le=1, description="largest value")

    @model_validator(mode="after")
    def _ordered(self) -> LogUniform:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


RETRAIN_PARAMS = ("fading", "var_fading")
#: Most readings a retrain re-reads from the topic (8,192 x 12 axes: under a megabyte of rows).
MAX_HISTORY_READINGS = 8192


def _default_space() -> dict[str, list[float] | LogUniform]:
    """12 points: a level that follows changes over ~50 to ~5 readings, a noise level over ~200 to ~50."""
    return {"fading": [0.02, 0.05, 0.1, 0.2], "var_fading": [0.005, 0.01, 0.02]}


class RetrainSettings(_Section):
    """How a retrain searches, tests and shadows a candidate model before it may replace the incumbent."""

    strategy: Literal["grid", "random"] = Field(
        "grid", description="grid: every combination of the listed values; random: `budget` seeded samples"
    )
    space: dict[str, list[float] | LogUniform] = Field(
        default_factory=_default_space,
        description="model parameter -> list of values, or {low, high} (random search only, log-uniform)",
    )
    budget: int = Field(16, ge=1, le=1000, description="most hyperparameter trials per retrain")
    seed: int = Field(0, ge=0, description="seeds the search and the injected anomalies (with the pair)")
    holdout_fraction: float = Field(
        0.25, ge=0.1, le=0.5, description="newest part of the training window held out for testing"
    )
    anomalies: int = Field(8, ge=1, le=10_000, description="synthetic spikes added to the held-out slice")
    anomaly_min_sigma: float = Field(3.0, gt=0, description="smallest spike, in noise standard deviations")
    anomaly_max_sigma: float = Field(12.0, gt=0, description="largest spike, in noise standard deviations")
    metric: Literal["auc", "detection_rate"] = Field("auc", description="the held-out metric that decides")
    target_false_alarm_rate: float = Field(
        0.01, gt=0, lt=1, description="false-alarm rate at which detection_rate is measured"
    )
    shadow_readings: int = Field(
        96, ge=0, le=100_000, description="live readings scoring the candidate beside the incumbent (0: off)"
    )
    promotion_margin: float = Field(
        0.02, ge=0, lt=1, description="the candidate's metric must beat the incumbent's by more than this"
    )
    calibration_alpha: float = Field(
        0.01, gt=0, lt=0.5, description="significance of the shadow calibration checks (KS, alarm count)"
    )
    max_attempts: int = Field(
        5,
        ge=1,
        description="retrains per firing episode: a rejected candidate is retried while the rule fires",
    )
    history_readings: int = Field(
        512,
        ge=0,
        le=MAX_HISTORY_READINGS,
        description="readings of the pair a retrain re-reads from the readings topic to train and test on "
        "(0: the ring buffer's model.retrain_window only)",
    )
    history_timeout_s: float = Field(
        5.0,
        gt=0,
        le=8,
        description="longest re-read of the topic; past it the ring buffer is used (at most 8 s: a "
        "result the loop waits for must come well within kafka.max_poll_interval_ms, 10 s at the least)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RetrainSettings:
        if self.anomaly_min_sigma > self.anomaly_max_sigma:
            lo, hi = self.anomaly_min_sigma, self.anomaly_max_sigma
            raise ValueError(f"anomaly_min_sigma ({lo}) exceeds anomaly_max_sigma ({hi})")
        _check_space(self.space, self.strategy, self.budget)
        return self


def _check_space(space: dict[str, list[float] | LogUniform], strategy: str, budget: int) -> None:
    """A search space names known parameters with non-empty values in (0, 1]; a grid fits the budget."""
    if not space:
        raise ValueError("space is empty: name at least one of " + ", ".join(RETRAIN_PARAMS))
    unknown = sorted(set(space) - set(RETRAIN_PARAMS))
    if unknown:
        raise ValueError(f"space: unknown parameter(s) {unknown}; known: {list(RETRAIN_PARAMS)}")
    size = 1
    for name, values in space.items():
        if isinstance(values, LogUniform):
            if strategy == "grid":
                raise ValueError(f"space.{name}: a {{low, high}} range needs strategy random; list values")
            continue
        if not values or not all(0 < v <= 1 for v in values):
            raise ValueError(f"space.{name}: give a non-empty list of values in (0, 1], got {values}")
        size *= len(values)
    if strategy == "grid" and size > budget:
        raise ValueError(
            f"the grid has {size} points but budget is {budget}: raise the budget or use strategy random"
        )


class MetricsSettings(_Section):
    """The HTTP endpoint: ``/metrics``, and the probes ``/healthz`` and ``/readyz``.

    Loopback only unless ``host`` says otherwise; HTTPS (TLS 1.2 or newer) when both TLS files are
    given. The files are checked here so that a typo fails at start-up, not at the first scrape.
    """

    enabled: bool = Field(True, description="serve the HTTP endpoint")
    host: str = Field("127.0.0.1", description="listen address; 0.0.0.0 or :: exposes the endpoint")
    port: int = Field(9464, ge=0, le=65535, description="listen port (0: any free port)")
    liveness_timeout_s: float = Field(
        120.0, gt=0, description="/healthz fails once the consume loop has not turned for this long"
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain: serve HTTPS (with tls_key_file)"
    )
    tls_key_file: Path | None = Field(
        None, description="unencrypted PEM private key of tls_cert_file, readable by the service only"
    )

    @property
    def tls_files(self) -> tuple[Path, Path] | None:
        """``(certificate, key)`` when the endpoint serves HTTPS, else None."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return self.tls_cert_file, self.tls_key_file

    @model_validator(mode="after")
    def _tls_files_readable(self) -> MetricsSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "metrics.tls_cert_file and metrics.tls_key_file go together: give both or neither"
            )
        for name, path in (("tls_cert_file", self.tls_cert_file), ("tls_key_file", self.tls_key_file)):
            if path is not None:
                self._check_readable(name, path)
        return self

    @staticmethod
    def _check_readable(name: str, path: Path) -> None:
        """Reads the file (a regular one: a FIFO would block) without showing it: the message names
        the path, never the content."""
        try:
            files.read_bytes(path, files.MAX_CONFIG_BYTES)
        except errors.UnsafeFileError as exc:
            raise ValueError(f"metrics.{name}: cannot read {exc}") from None
        except OSError as exc:
            raise ValueError(f"metrics.{name}: cannot read {path}: {exc.strerror or exc}") from None


class RegistrySettings(_Section):
    """The model registry: signed model artifacts and the audit trail (see ``monitor.govern.registry``)."""

    dir: Path | None = Field(None, description="registry directory (default: state_dir/registry)")
    shared: bool = Field(
        False,
        description="Kafka is the registry's system of record (kafka.artifacts_topic, kafka.audit_topic): "
        "the directory is this process' copy, kept current; every replica and the registry command "
        "need the same signing key",
    )
    signing_key: SecretStr | None = Field(
        None, description="HMAC-SHA256 key, at least 32 bytes; set it from the environment"
    )
    signing_key_file: Path | None = Field(None, description="file holding the key (instead of signing_key)")
    generate_key: bool = Field(
        True,
        description="no key configured: generate one into <state_dir>/signing.key, reused by every start "
        "(false, for production: refuse to start)",
    )
    bundle_key_file: Path | None = Field(
        None,
        description="Ed25519 private key (PEM) that signs the bundles `telemon registry export` writes "
        "(`openssl genpkey -algorithm ed25519`)",
    )
    trusted_keys: list[Path] = Field(
        [],
        description="Ed25519 public keys (PEM files) of the deployments whose bundles `telemon registry "
        "import` accepts",
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> RegistrySettings:
        if self.signing_key is not None and self.signing_key_file is not None:
            raise ValueError("set signing_key or signing_key_file, not both")
        return self


class AlertsSettings(_Section):
    """Alert delivery besides the Kafka alerts topic: Alertmanager, and storm control. The URL may
    carry credentials, so it stays out of ``repr`` and validation errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    alertmanager_url: str | None = Field(
        None,
        pattern=r"^https?://",
        repr=False,
        description="Alertmanager base URL (http://host:9093); unset: alerts go to Kafka only. "
        "Basic-auth credentials may be given as user:password@host (set it from the environment)",
    )
    timeout_s: float = Field(
        5.0, gt=0, description="max time to get alerts accepted by Alertmanager, retries included"
    )
    resend_interval_s: float = Field(
        60.0, gt=0, description="firing alerts are re-posted this often; they expire after 4 intervals"
    )
    storm_max_alerts: int = Field(
        100, ge=1, description="new firing alerts per storm window beyond which alerts are suppressed"
    )
    storm_window_s: float = Field(60.0, gt=0, description="storm window, in event time")


class FeedbackSettings(_Section):
    """Operators' verdicts on alerts (``kafka.feedback_topic``) joined to the alerts, for the
    precision metrics and the registry's view of each version (see ``monitor.analyze``)."""

    enabled: bool = Field(
        True, description="read the alerts and feedback topics and keep the precision of the alerts"
    )
    max_alerts: int = Field(
        50_000,
        ge=1,
        le=10_000_000,
        description="alert episodes kept to join verdicts to (the oldest read go first; as many "
        "verdicts wait for their alert)",
    )
    lookback_hours: float = Field(
        168.0,
        ge=0,
        description="at start, read the alerts and verdicts of this many hours back (0: only new ones)",
    )


class BiasSettings(_Section):
    """Cohorts against the rest of the fleet, per window of event time (``monitor.analyze.bias``):
    alert rate and anomaly scores, with a test each (the ``bias_*`` signals of cohort rules, and
    the ``telemon_cohort_bias_*`` gauges)."""

    enabled: bool = Field(True, description="compare each cohort with the rest of the fleet")
    window_s: float = Field(3600.0, ge=60, description="tumbling window of event time a comparison covers")
    lateness_s: float = Field(
        600.0,
        ge=0,
        description="a window closes once the latest event time is this far past its end: partitions read "
        "unevenly still count in their windows (later readings are left out)",
    )
    alpha: float = Field(0.01, gt=0, lt=1, description="bias = 1 when a test's p-value is below this")
    min_alerts: int = Field(
        5, ge=1, description="alerts of a sensor in a window (cohort and rest) before the alert-rate test"
    )
    min_devices: int = Field(
        3, ge=2, description="devices on each side (cohort and rest) before the score test"
    )
    labels: list[str] | None = Field(
        None,
        description="labels whose cohorts are compared (default: every label of the cohorts file and "
        "the channels)",
    )
    max_cohorts: int = Field(
        100,
        ge=1,
        le=10_000,
        description="cohorts compared per sensor and window (label=value, in sorted order)",
    )


class FleetSpanSettings(_Section):
    """Fleet and cohort scope over every replica of the group (``monitor.detect.span``): each
    replica publishes the partial aggregates of its partitions to ``kafka.fleet_topic``, every
    replica merges them, and the replica that owns partition 0 of the readings topic alerts."""

    span: bool = Field(
        False,
        description="evaluate the fleet and cohort rules on the merged aggregates of every replica "
        "(off: on this replica's partitions, per fleet_check_every scores)",
    )
    window_s: float = Field(
        60.0, ge=1, description="tumbling window of event time: one fleet and cohort evaluation each"
    )
    lateness_s: float = Field(
        120.0,
        ge=0,
        description="a window closes once every partition heard from within this much event time of the "
        "latest has passed its end (a silent partition stops holding windows after this long)",
    )
    bins: int = Field(
        200, ge=10, le=4096, description="score histogram bins on [0, 1]: KS and PSI to within 1/bins"
    )


class Settings(BaseSettings):
    """Everything the monitor needs, validated once and frozen."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="TELEMON_",
        env_nested_delimiter="__",
        secrets_dir_missing="error",  # a secrets folder named but missing is a mistake
        hide_input_in_errors=True,  # an invalid value may sit next to a secret, or be one
    )

    kafka: KafkaSettings = KafkaSettings()
    channels: ChannelsSettings = ChannelsSettings()
    consume: ConsumeSettings = ConsumeSettings()
    processing: ProcessingSettings = ProcessingSettings()
    integrity: IntegritySettings = IntegritySettings()
    model: ModelSettings = ModelSettings()
    novelty: NoveltySettings = NoveltySettings()
    joint: JointSettings = JointSettings()
    river: RiverSettings = RiverSettings()
    drift: DriftSettings = DriftSettings()
    inputs: InputDriftSettings = InputDriftSettings()
    metrics: MetricsSettings = MetricsSettings()
    alerts: AlertsSettings = AlertsSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    retrain: RetrainSettings = RetrainSettings()
    state: StateSettings = StateSettings()
    registry: RegistrySettings = RegistrySettings()
    bias: BiasSettings = BiasSettings()
    fleet: FleetSpanSettings = FleetSpanSettings()
    rules_file: Path = Field(
        default_factory=lambda: packaged.config("rules.yaml"),
        description="governance rules (default: the packaged configs/rules.yaml)",
    )
    cohorts_file: Path | None = Field(
        None, description="YAML mapping device id -> labels (firmware, site, ...) for cohort-scope rules"
    )
    state_dir: Path = Field(
        Path(".telemon"), description="folder of the process' state: snapshots, registry, signing key"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="the log's level (--log-level wins over it)"
    )

    @model_validator(mode="after")
    def _river_sensors(self) -> Settings:
        catalog = self.channels.catalog()
        for i, tier in enumerate(self.river.tiers):
            unknown = [s for s in tier.sensors if s not in catalog.index]
            if unknown:
                raise ValueError(
                    f"river.tiers.{i}.sensors: {', '.join(unknown)} not monitored; known: "
                    + ", ".join(catalog.names)
                )
            if riverpath.is_supervised(riverpath.resolve(tier.model)):
                vector = [
                    s.name
                    for s in catalog.specs
                    if len(s.keys) > 1 and s.name in (tier.sensors or catalog.names)
                ]
                if catalog.spare and not tier.sensors:  # a tier without sensors covers every channel
                    raise ValueError(
                        f"river.tiers.{i}.sensors: {tier.model} scores one value, and channels registered "
                        "automatically may have several axes: name scalar sensors"
                    )
                if vector:
                    raise ValueError(
                        f"river.tiers.{i}.sensors: {tier.model} scores one value, and {', '.join(vector)} "
                        "have several axes: name scalar sensors only"
                    )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The sources, highest precedence first (:data:`PRECEDENCE`); the config file is one only
        when built by :func:`load_settings`."""
        build = _BUILD.get()
        layers: list[tuple[str, PydanticBaseSettingsSource]] = [
            ("environment", env_settings),
            ("env file", EnvFileSource(dotenv_settings)),
            ("secret file", NestedSecretsSettingsSource(file_secret_settings)),
            ("override", init_settings),
        ]
        if build is not None:
            if build.config is not None:
                layers.append(("file", build.config))
            build.layers = layers
        return tuple(source for _, source in layers)


#: The sources of the settings, highest first: the ``TELEMON_*`` environment, the ``.env`` file,
#: the secrets folder (a file per value, ``TELEMON_KAFKA__SASL_PASSWORD``), keyword overrides
#: (the command line's), the config file, the defaults.
PRECEDENCE: Final = ("environment", "env file", "secret file", "override", "file", "default")
#: Environment variables of the settings: ``TELEMON_<SECTION>__<KEY>`` or ``TELEMON_<KEY>``.
ENV_PREFIX = "TELEMON_"
#: Variables of that prefix that are not settings: the MQTT bridge's password, compose's partitions.
OTHER_VARIABLES = frozenset({"TELEMON_MQTT_PASSWORD", "TELEMON_PARTITIONS"})

Loc = tuple[str, ...]


class Source(NamedTuple):
    """Where a setting's value comes from: ``kind`` is one of :data:`PRECEDENCE` (or ``command
    line``); ``at`` is ``FILE:LINE:COLUMN``, the variable, the file or the option (empty for a
    default or an override)."""

    kind: str
    at: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.at}" if self.at else self.kind


class ConfigFileSource(PydanticBaseSettingsSource):
    """The YAML config file as a settings source, read with :mod:`monitor.common.yamlfile` (its
    refusals, and the position of every key for errors); relative paths are joined to its folder."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self.path = path
        self.doc = _read_config(path)
        self.data = _relative_paths(self.doc.data or {}, path.parent.resolve())

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.data


class EnvFileSource(PydanticBaseSettingsSource):
    """The ``.env`` file read as the environment is: its ``TELEMON_*`` variables that name settings
    (others, ``COMPOSE_PROJECT_NAME`` say, are not telemon's); one that names no setting is warned
    about, as in the environment."""

    def __init__(self, dotenv: PydanticBaseSettingsSource) -> None:
        super().__init__(dotenv.settings_cls)
        if not isinstance(dotenv, DotEnvSettingsSource):
            raise TypeError(f"an env file source, not {type(dotenv).__name__}")
        self.dotenv = dotenv
        files_ = dotenv.env_file if isinstance(dotenv.env_file, list | tuple) else [dotenv.env_file]
        self.where = ", ".join(str(f) for f in files_ if f is not None)
        self.data: dict[str, Any] | None = None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.dotenv.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        if self.data is None:
            self.data = EnvSettingsSource.__call__(self.dotenv)  # not the extras DotEnv adds
            names = {k.upper(): v for k, v in self.dotenv.env_vars.items() if v is not None}
            for problem in _unknown_variables(names, f"{self.where}: variable"):
                log.warning("%s", problem)
        return self.data


@dataclass
class _Build:
    """One :func:`load_settings`: its config file, and the sources pydantic-settings was given."""

    config: ConfigFileSource | None
    layers: list[tuple[str, PydanticBaseSettingsSource]] = field(default_factory=list)


_BUILD: ContextVar[_Build | None] = ContextVar("telemon_settings_build", default=None)


@dataclass(frozen=True)
class Origins:
    """Where each value of one :func:`build_settings` comes from: the sources, highest precedence
    first, each asked for its data when first needed."""

    sources: tuple[tuple[str, PydanticBaseSettingsSource], ...] = ()

    @functools.cached_property
    def layers(self) -> tuple[tuple[str, PydanticBaseSettingsSource, dict[str, Any]], ...]:
        """``(kind, source, its data)`` of every source."""
        return tuple((kind, source, source()) for kind, source in self.sources)

    @property
    def doc(self) -> yamlfile.YamlDocument | None:
        """The config file's document, if there is one."""
        return next((s.doc for _, s, _ in self.layers if isinstance(s, ConfigFileSource)), None)

    def of(self, loc: Loc) -> Source:
        """The source of the value at ``loc``: the highest that sets it (or a mapping holding it)
        whole; else the config file's key holding it; else the highest that has it."""
        sets = [layer for layer in self.layers if _sets(layer[2], loc)]
        holds = [layer for layer in self.layers if _holds(layer[2], loc)]
        files_ = [layer for layer in holds if layer[0] == "file"]
        kind, source, _ = next(iter(sets or files_ or holds), ("default", None, {}))
        return _named(kind, source, loc)

    def describe(self, loc: Loc, message: str) -> tuple[int, int, str]:
        """``(line, column, text)`` of a problem at ``loc``, the text naming its source."""
        where = self.of(loc)
        text = f"{'.'.join(loc) or 'settings'}: {message}"
        doc = self.doc
        if where.kind == "file" and doc is not None:
            return doc.position(loc, message)
        if where.kind == "environment":
            return 0, 0, f"environment variable {where.at}: {text}"
        if where.kind in ("env file", "secret file"):
            return 0, 0, f"{where.kind} {where.at}: {text}"
        return 0, 0, text


def _sets(data: Any, loc: Loc) -> bool:
    """Whether ``data`` holds a value at ``loc`` or above it that is not a mapping."""
    for i, key in enumerate(loc):
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
        if not isinstance(data, dict) and i < len(loc) - 1:
            return True
    return not isinstance(data, dict) or not data


def _holds(data: Any, loc: Loc) -> bool:
    """Whether ``data`` has the key ``loc`` (or a value above it)."""
    for key in loc:
        if not isinstance(data, dict):
            return True
        if key not in data:
            return False
        data = data[key]
    return True


def _named(kind: str, source: PydanticBaseSettingsSource | None, loc: Loc) -> Source:
    """The :class:`Source` of ``loc`` in ``source``: the variable, secret file or file position."""
    names = [_env_name(loc[:i]) for i in range(len(loc), 0, -1)]
    if isinstance(source, ConfigFileSource):
        line, column, _ = source.doc.position(loc, "")
        return Source(kind, f"{source.doc.source}:{line}:{column}")
    if isinstance(source, EnvFileSource):
        found = {k.upper() for k in source.dotenv.env_vars}
        return Source(kind, f"{source.where}: {next((n for n in names if n in found), names[-1])}")
    if isinstance(source, EnvSettingsSource) and kind == "environment":
        found_env = {k.upper(): k for k in os.environ}  # env_vars holds them lower-cased
        return Source(kind, next((found_env[n] for n in names if n in found_env), names[-1]))
    if isinstance(source, NestedSecretsSettingsSource):
        for folder in reversed(source.secrets_paths):
            for name in names:
                path = SecretsSettingsSource.find_case_path(folder, name, case_sensitive=False)
                if path is not None:
                    return Source(kind, str(path))
    return Source(kind)


def build_settings(
    path: Path | None = None,
    *,
    env_file: Path | None = None,
    secrets_dir: Path | None = None,
    **overrides: Any,
) -> tuple[Settings, Origins]:
    """:func:`load_settings`, with where each value comes from (:class:`Origins`)."""
    for problem in _unknown_variables(os.environ):
        log.warning("%s", problem)
    build = _Build(ConfigFileSource(Settings, path) if path is not None else None)
    token = _BUILD.set(build)
    try:
        settings = Settings(_env_file=env_file, _secrets_dir=secrets_dir, **overrides)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(exc, _origins(build)))) from None
    except SettingsError as exc:  # a variable or secret that is not the JSON its setting needs
        hint = " (a section or mapping in one variable is JSON)" if "error parsing" in str(exc) else ""
        raise ConfigError(f"{exc}{hint}") from None
    finally:
        _BUILD.reset(token)
    return settings, _origins(build)


def load_settings(
    path: Path | None = None,
    *,
    env_file: Path | None = None,
    secrets_dir: Path | None = None,
    **overrides: Any,
) -> Settings:
    """The settings from their sources (:data:`PRECEDENCE`): the ``TELEMON_*`` environment, the
    ``env_file`` (``.env`` syntax, the same variables), the ``secrets_dir`` (a file per value named
    as its variable, e.g. ``TELEMON_KAFKA__SASL_PASSWORD``), keyword ``overrides``, the YAML file at
    ``path``, the defaults; mappings are merged key by key.

    Relative paths in the file are relative to the file's folder. Raises
    :class:`FileNotFoundError` for a missing file and :class:`ConfigError` for anything wrong
    in any source, each problem at its file position, variable or secret file.
    """
    return build_settings(path, env_file=env_file, secrets_dir=secrets_dir, **overrides)[0]


def _origins(build: _Build) -> Origins:
    return Origins(tuple(build.layers))


def _read_config(path: Path) -> yamlfile.YamlDocument:
    try:
        doc = yamlfile.read(path).check_duplicates()
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except errors.YamlError as exc:
        raise ConfigError(str(exc)) from None
    if doc.data is not None and not isinstance(doc.data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return doc


def _path_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The dotted keys of every path setting (``rules_file``, ``state.snapshot_dir``, ...)."""
    for name, info in model.model_fields.items():
        kinds = set(get_args(info.annotation)) | {info.annotation}
        if Path in kinds:
            yield (*prefix, name)
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                yield from _path_fields(kind, (*prefix, name))


def _relative_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with each relative path setting joined to ``folder`` (the config file's)."""
    out = dict(data)
    for key in _path_fields(Settings):
        parent = out
        for part in key[:-1]:
            if not isinstance(parent.get(part), dict):
                break
            parent[part] = parent = dict(parent[part])
        else:
            value = parent.get(key[-1])
            if isinstance(value, list):  # a list of paths (registry.trusted_keys)
                parent[key[-1]] = [_joined(v, folder) for v in value]
            elif isinstance(value, str):
                parent[key[-1]] = _joined(value, folder)
    return out


def _joined(value: Any, folder: Path) -> Any:
    """A relative path joined to ``folder``; anything else as it is."""
    if isinstance(value, str) and value and not Path(value).is_absolute():
        return str(folder / value)
    return value


def _unknown_variables(env: Mapping[str, str], what: str = "environment variable") -> list[str]:
    """A ``TELEMON_*`` variable that names no setting is a typo (or a stale one): say which."""
    known = {f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields}
    return [
        f"{what} {var} names no setting{_meant(var.upper(), known)}: ignored"
        for var in sorted(env)
        if var.upper().startswith(ENV_PREFIX)
        and var.upper().split("__")[0] not in known
        and var.upper() not in OTHER_VARIABLES
    ]


def _meant(name: str, known: set[str]) -> str:
    """The variable probably meant: a section joined with one underscore instead of two
    (``TELEMON_KAFKA_BOOTSTRAP_SERVERS``), else the closest top-level one."""
    for section in Settings.model_fields:
        head = f"{ENV_PREFIX}{section}_".upper()
        if name.startswith(head) and not name.startswith(head + "_"):
            return f" (did you mean {head}_{name[len(head) :]}?)"
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _describe(exc: ValidationError, origins: Origins) -> list[str]:
    """One line per validation error, at the file position, variable or file it comes from."""
    return [line for _, _, line in sorted(origins.describe(loc, m) for loc, m in _problems(exc))]


#: The members of a union in an error location (``kafka.extra.x.bool``): not keys.
_UNION_MEMBER = re.compile(r"str|int|float|bool|.*\[.*")
#: A validator's message that names its key first: ``metrics.tls_key_file: cannot read ...``.
_NAMED = re.compile(r"([a-z_]+(?:\.[\w.-]+)*):? ")


def _problems(exc: ValidationError) -> Iterator[tuple[tuple[str, ...], str]]:
    """``(key path, message)`` per problem: a value no member of a union accepts is one problem,
    and a validator's message that names a key is placed at that key."""
    by_loc: dict[tuple[str, ...], list[str]] = {}
    for e in exc.errors(include_url=False):
        loc = tuple(str(p) for p in e["loc"])
        while loc and _UNION_MEMBER.fullmatch(loc[-1]) and len(loc) > 1:
            loc = loc[:-1]
        message = _message(e, loc)
        named = _NAMED.match(message) if e["type"] == "value_error" else None
        if named and tuple(named.group(1).split("."))[: len(loc)] == loc:
            loc, message = tuple(named.group(1).split(".")), message[named.end() :]
        by_loc.setdefault(loc, []).append(message)
    for loc, messages in by_loc.items():
        kinds = [m.removeprefix("Input should be a valid ") for m in messages]
        if len(messages) > 1 and all(m.startswith("Input should be a valid ") for m in messages):
            yield (
                loc,
                f"Input should be a valid {', '.join(sorted(set(kinds))[:-1])} or {sorted(set(kinds))[-1]}",
            )
        else:
            yield from ((loc, m) for m in dict.fromkeys(messages))


def _env_name(loc: Loc) -> str:
    return (ENV_PREFIX + "__".join(loc)).upper()


def _message(error: ErrorDetails, loc: tuple[str, ...]) -> str:
    if error["type"] == "extra_forbidden":
        known = _section_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key{hint}; known: {', '.join(sorted(known))}" if known else "unknown key"
    if error["type"] == "value_error":  # raised by a validator: the text without pydantic's prefix
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return error["msg"]


def _section_keys(loc: tuple[str, ...]) -> set[str]:
    """The keys the settings accept at ``loc`` (empty where free-form, e.g. ``kafka.extra``)."""
    model: Any = Settings
    for part in loc:
        info = (
            model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        )
        if info is None:
            return set()
        model = info.annotation
    return set(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else set()
