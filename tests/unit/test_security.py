"""Security settings: the HTTPS endpoint, refused Kafka properties, and secrets that never leak.

Secrets must not reach ``repr``/``str``/JSON dumps of the settings, validation errors, log lines
or the probes' JSON; librdkafka still gets the real values. The package sources never call an
unsafe deserialiser.
"""

from __future__ import annotations

import ast
import json
import logging
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from confluent_kafka import KafkaError, KafkaException
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError

from monitor import errors
from monitor.errors import ConfigError
from monitor.govern.rules import load_rules
from monitor.ingest import kafka
from monitor.ingest.kafka import FORBIDDEN_KEYS, client_config, consumer_config, redact
from monitor.pipeline import Pipeline
from monitor.serve.health import Health, HttpEndpoint, make_app, server_tls_context
from monitor.serve.metrics import Metrics
from monitor.serve.service import Service
from monitor.settings import KafkaSettings, MetricsSettings, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-Qv7!hunter2"
# One distinct value per credential property, so a leak names the property that leaked.
EXTRA_SECRETS = {key: f"{key.replace('.', '-')}-S3cr3t" for key in sorted(KafkaSettings.SECRET_KEYS)}


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _assert_hidden(text: str, secrets: list[str]) -> None:
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"secrets in the text: {leaked}"


# --- the HTTPS endpoint ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "endpoint.pem", tmp_path / "endpoint.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return cert_file, key_file


@pytest.fixture
def https(tls_files: tuple[Path, Path]) -> Iterator[HttpEndpoint]:
    m = MetricsSettings(port=0, tls_cert_file=tls_files[0], tls_key_file=tls_files[1])
    assert m.tls_files is not None
    registry = CollectorRegistry()
    Metrics(registry)
    endpoint = HttpEndpoint(m.host, m.port, make_app(registry, Health(60)), server_tls_context(*m.tls_files))
    yield endpoint
    endpoint.close()


def _client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def _https_get(endpoint: HttpEndpoint, ca: trustme.CA, path: str) -> tuple[int, str]:
    url = f"https://127.0.0.1:{endpoint.port}{path}"
    with urllib.request.urlopen(url, timeout=5, context=_client_context(ca)) as resp:
        return resp.status, resp.read().decode()


def test_endpoint_serves_https_with_the_configured_certificate(https: HttpEndpoint, ca: trustme.CA) -> None:
    assert https.scheme == "https"
    status, body = _https_get(https, ca, "/healthz")
    assert (status, json.loads(body)["status"]) == (200, "ok")
    status, body = _https_get(https, ca, "/metrics")
    assert status == 200
    assert "telemon_build_info" in body


def test_https_negotiates_tls_1_2_or_newer(
    https: HttpEndpoint, ca: trustme.CA, tls_files: tuple[Path, Path]
) -> None:
    assert server_tls_context(*tls_files).minimum_version == ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", https.port), timeout=5) as raw,
        _client_context(ca).wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_https_client_must_trust_the_certificate(https: HttpEndpoint) -> None:
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"https://127.0.0.1:{https.port}/healthz", timeout=5)


def test_plain_http_and_silent_clients_do_not_block_the_https_endpoint(
    https: HttpEndpoint, ca: trustme.CA
) -> None:
    silent = socket.create_connection(("127.0.0.1", https.port), timeout=5)  # never says hello
    try:
        with socket.create_connection(("127.0.0.1", https.port), timeout=5) as plain:
            plain.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert not _reply(plain).startswith(b"HTTP/")  # a failed handshake, not an answer
        assert _https_get(https, ca, "/healthz")[0] == 200
    finally:
        silent.close()


def _reply(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1024)
    except ConnectionResetError:
        return b""


def test_metrics_settings_default_to_plain_http_on_loopback() -> None:
    m = MetricsSettings()
    assert (m.host, m.tls_files) == ("127.0.0.1", None)


@pytest.mark.parametrize("given", ["tls_cert_file", "tls_key_file"])
def test_tls_files_go_together(tls_files: tuple[Path, Path], given: str) -> None:
    with pytest.raises(ValidationError, match="give both or neither"):
        MetricsSettings(**{given: tls_files[0]})


def test_missing_tls_file_is_named(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    missing = tmp_path / "absent.key"
    with pytest.raises(ConfigError, match=r"tls_key_file: cannot read .*absent\.key: No such file"):
        load_settings(
            _yaml(tmp_path, f"metrics:\n  tls_cert_file: {tls_files[0]}\n  tls_key_file: {missing}\n")
        )


def test_unreadable_tls_file_is_named(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"tls_cert_file: cannot read .*: not a regular file \(a dir"):
        MetricsSettings(tls_cert_file=tmp_path, tls_key_file=tls_files[1])


def test_unusable_key_is_refused_without_showing_key_material(
    ca: trustme.CA, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    other = ca.issue_cert("elsewhere.example")
    wrong_key = tmp_path / "wrong.key"
    other.private_key_pem.write_to_path(str(wrong_key))
    with pytest.raises(ValueError, match=r"cannot use .*endpoint\.pem with .*wrong\.key") as exc:
        server_tls_context(tls_files[0], wrong_key)
    key_lines = [line for line in other.private_key_pem.bytes().decode().splitlines() if "-----" not in line]
    _assert_hidden(str(exc.value), key_lines)


def test_encrypted_key_is_refused_instead_of_prompting(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(tls_files[1].read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(ValueError, match=r"encrypted\.key is encrypted"):
        server_tls_context(tls_files[0], encrypted)


# --- refused Kafka properties ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "key"),
    [
        (" Plugin.Library.Paths", "plugin.library.paths"),
        ("SASL.KERBEROS.KINIT.CMD ", "sasl.kerberos.kinit.cmd"),
        ("ssl.Engine.Location", "ssl.engine.location"),
        ("ssl.providers", "ssl.providers"),
    ],
)
def test_code_loading_keys_are_refused_in_any_spelling(spelling: str, key: str) -> None:
    assert key in FORBIDDEN_KEYS
    with pytest.raises(ValidationError, match=key.replace(".", r"\.") + ".*load or run code"):
        KafkaSettings(extra={spelling: "/tmp/evil.so"})


def test_extra_names_are_canonical_and_unique() -> None:
    s = KafkaSettings(extra={" Client.ID ": "telemon-1"})
    assert client_config(s)["client.id"] == "telemon-1"
    with pytest.raises(ValidationError, match=r"'client\.id' more than once"):
        KafkaSettings(extra={"client.id": "a", "CLIENT.ID": "b"})


@pytest.mark.parametrize(
    "value", ["kafka/host@REALM; curl evil | sh", "$(id)", "a`id`", 'x" -k y', "with space"]
)
@pytest.mark.parametrize("key", sorted(KafkaSettings.SHELL_VALUE_KEYS))
def test_kerberos_values_cannot_inject_shell_commands(key: str, value: str) -> None:
    with pytest.raises(ValidationError, match="kinit shell command"):
        KafkaSettings(extra={key: value})


def test_plain_kerberos_values_pass() -> None:
    extra = {"sasl.kerberos.principal": "telemon/host-1@EXAMPLE.COM", "sasl.kerberos.keytab": "/etc/k.keytab"}
    assert KafkaSettings(extra=extra).extra == extra


INSECURE = [
    ("enable.ssl.certificate.verification", False),
    ("enable.ssl.certificate.verification", "false"),
    ("enable.ssl.certificate.verification", " FALSE "),
    ("enable.ssl.certificate.verification", 0),
    ("enable.ssl.certificate.verification", "f"),
    ("ssl.endpoint.identification.algorithm", "none"),
    ("ssl.endpoint.identification.algorithm", " NONE"),
    ("SSL.Endpoint.Identification.Algorithm", "none"),
]


@pytest.mark.parametrize(("key", "value"), INSECURE)
def test_disabling_certificate_checks_is_refused_by_default(key: str, value: str | int | bool) -> None:
    with pytest.raises(ValidationError, match=r"switch off checking.*allow_insecure_tls: true"):
        KafkaSettings(security_protocol="SSL", extra={key: value})


@pytest.mark.parametrize(("key", "value"), INSECURE)
def test_disabling_certificate_checks_needs_the_explicit_opt_in(
    key: str, value: str | int | bool, caplog: pytest.LogCaptureFixture
) -> None:
    s = KafkaSettings(security_protocol="SSL", allow_insecure_tls=True, extra={key: value})
    with caplog.at_level(logging.WARNING, logger="monitor.ingest.kafka"):
        conf = client_config(s)
    assert conf[key.strip().lower()] == value
    assert "broker certificate checks are off" in caplog.text


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("enable.ssl.certificate.verification", True),
        ("enable.ssl.certificate.verification", "true"),
        ("ssl.endpoint.identification.algorithm", "https"),
    ],
)
def test_keeping_certificate_checks_needs_no_opt_in(key: str, value: str | bool) -> None:
    assert KafkaSettings(extra={key: value}).insecure_tls_keys() == []


def test_insecure_tls_refusal_from_a_config_file(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "kafka:\n  extra:\n    enable.ssl.certificate.verification: false\n")
    with pytest.raises(ConfigError, match="allow_insecure_tls"):
        load_settings(path)
    text = "kafka:\n  allow_insecure_tls: true\n  extra:\n    enable.ssl.certificate.verification: false\n"
    assert load_settings(_yaml(tmp_path, text)).kafka.allow_insecure_tls


# --- secrets --------------------------------------------------------------------------------------


def _secret_settings(**kafka_extra: Any) -> Settings:
    extra: dict[str, Any] = dict(EXTRA_SECRETS) | kafka_extra
    return Settings(
        kafka=KafkaSettings(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="telemon",
            sasl_password=SecretStr(PASSWORD),
            extra=extra,
        )
    )


ALL_SECRETS = [PASSWORD, *EXTRA_SECRETS.values()]


def test_credential_properties_are_held_as_secrets() -> None:
    s = _secret_settings(**{"sasl.oauthbearer.new.secret": "hinted-S3cr3t", "client.id": "telemon-1"})
    for key in [*EXTRA_SECRETS, "sasl.oauthbearer.new.secret"]:
        assert isinstance(s.kafka.extra[key], SecretStr), key
    assert s.kafka.extra["client.id"] == "telemon-1"


def test_secrets_never_show_in_repr_str_or_dumps() -> None:
    s = _secret_settings()
    texts = [repr(s), str(s), repr(s.kafka), str(s.kafka), s.model_dump_json(), s.kafka.model_dump_json()]
    texts.append(str(s.model_dump()))
    for text in texts:
        _assert_hidden(text, ALL_SECRETS)
    assert "**********" in s.kafka.model_dump_json()


def test_client_config_passes_the_real_values() -> None:
    spelled = {key.upper(): value for key, value in EXTRA_SECRETS.items()}  # any spelling
    conf = client_config(KafkaSettings(security_protocol="SASL_SSL", extra=spelled))
    for key, value in EXTRA_SECRETS.items():
        assert conf[key] == value


def test_secret_extra_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TELEMON_KAFKA__EXTRA", json.dumps({"ssl.key.password": "env-S3cr3t"}))
    s = load_settings(_yaml(tmp_path, "kafka:\n  extra:\n    ssl.key.location: /etc/telemon/client.key\n"))
    assert client_config(s.kafka)["ssl.key.password"] == "env-S3cr3t"
    assert client_config(s.kafka)["ssl.key.location"] == "/etc/telemon/client.key"
    _assert_hidden(repr(s), ["env-S3cr3t"])


@pytest.mark.parametrize(
    "kafka_section",
    [
        {"sasl_password": PASSWORD, "partitions": 0},  # a field error next to the secret
        {"sasl_password": [PASSWORD]},  # the secret itself is the bad value
        {"sasl_password": PASSWORD, "sasl_pasword": PASSWORD},  # a misspelt key holding it
        {"extra": EXTRA_SECRETS | {"plugin.library.paths": "x.so"}},  # refused next to secrets
        {"extra": EXTRA_SECRETS | {"ssl.endpoint.identification.algorithm": "none"}},
        {"extra": EXTRA_SECRETS | {"socket.timeout.ms": [1]}},
    ],
)
def test_validation_errors_do_not_echo_secrets(kafka_section: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(kafka=kafka_section)
    _assert_hidden(str(exc.value), ALL_SECRETS)
    _assert_hidden(repr(exc.value), ALL_SECRETS)
    with pytest.raises(ValidationError) as direct:
        KafkaSettings(**kafka_section)
    _assert_hidden(str(direct.value), ALL_SECRETS)


def test_validation_errors_from_the_environment_do_not_echo_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMON_KAFKA__SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("TELEMON_KAFKA__EXTRA", json.dumps({"sasl.oauthbearer.config": PASSWORD, "x": [1]}))
    with pytest.raises(ConfigError) as exc:
        load_settings()
    _assert_hidden(str(exc.value), [PASSWORD])


def test_redact_removes_secrets_and_their_parts() -> None:
    config = "principal=admin extension_token=tok-S3cr3t"
    text = "Unrecognized sasl.oauthbearer.config beginning at: extension_token=tok-S3cr3t"
    assert redact(text, [config]) == "Unrecognized sasl.oauthbearer.config beginning at: [redacted]"
    assert redact(f"auth with {PASSWORD} failed", [PASSWORD]) == "auth with [redacted] failed"
    assert redact("a b c", ["b"]) == "a [redacted] c"


def test_error_callbacks_get_redacted_errors_with_the_same_code() -> None:
    seen: list[KafkaError] = []
    conf = consumer_config(KafkaSettings(sasl_password=SecretStr(PASSWORD)), error_cb=seen.append)
    conf["error_cb"](KafkaError(KafkaError._AUTHENTICATION, f"bad {PASSWORD}", fatal=True))
    assert [(e.code(), e.str(), e.fatal()) for e in seen] == [
        (KafkaError._AUTHENTICATION, "bad [redacted]", True)
    ]


def _service(tmp_path: Path, k: KafkaSettings) -> Service:
    settings = Settings(kafka=k, rules_file=ROOT / "configs" / "rules.yaml", state_dir=tmp_path / "state")
    pipeline = Pipeline(settings, load_rules(settings.rules_file))
    return Service(settings, pipeline, Metrics(CollectorRegistry()))


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "secure",
    [
        {"sasl_mechanism": "PLAIN", "sasl_username": "telemon", "sasl_password": SecretStr(PASSWORD)},
        {  # librdkafka's OAUTHBEARER parser quotes the rest of a config it rejects
            "sasl_mechanism": "OAUTHBEARER",
            "sasl_password": SecretStr(PASSWORD),
            "extra": {
                "enable.sasl.oauthbearer.unsecure.jwt": True,
                "sasl.oauthbearer.config": f"principal=telemon {PASSWORD}",  # not name=value
            },
        },
    ],
    ids=["plain", "oauthbearer"],
)
def test_kafka_errors_logged_by_the_service_hide_secrets(
    tmp_path: Path,
    secure: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    k = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{_unused_port()}", security_protocol="SASL_PLAINTEXT", **secure
    )
    service = _service(tmp_path, k)
    stop = threading.Event()
    caplog.set_level(logging.DEBUG, logger="monitor")
    runner = threading.Thread(target=service.run, args=(stop,))
    runner.start()
    stop.wait(1.0)
    stop.set()
    runner.join(20)
    assert not runner.is_alive()
    assert "kafka: " in caplog.text  # the client's errors were logged
    readiness = json.dumps(service.health.readiness()[1])
    for text in (caplog.text, readiness, *capfd.readouterr()):
        _assert_hidden(text, [PASSWORD])
    if k.sasl_mechanism == "OAUTHBEARER":
        assert "beginning at: [redacted]" in caplog.text


def test_kafka_unavailable_messages_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    class Admin:
        def __init__(self, conf: dict[str, Any]) -> None:
            self.conf = conf

        def list_topics(self, timeout: float) -> None:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, f"echo {self.conf['sasl.password']}"))

    monkeypatch.setattr(kafka, "AdminClient", Admin)
    with pytest.raises(errors.KafkaUnavailable) as exc:
        kafka.ensure_topics(KafkaSettings(sasl_password=SecretStr(PASSWORD)), ["t"])
    assert "echo [redacted]" in str(exc.value)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


# --- no unsafe deserialisation in the package -----------------------------------------------------

UNSAFE = {
    *(f"yaml.{name}" for name in ("load", "load_all", "unsafe_load", "unsafe_load_all", "full_load")),
    *(f"yaml.{name}" for name in ("full_load_all", "Loader", "UnsafeLoader", "FullLoader", "CLoader")),
    *(f"pickle.{name}" for name in ("load", "loads", "Unpickler")),
    *(f"_pickle.{name}" for name in ("load", "loads", "Unpickler")),
    "marshal.load",
    "marshal.loads",
    "shelve.open",
}
# The one module allowed to unpickle: it restricts what may be loaded.
ALLOWED = {ROOT / "monitor" / "common" / "safepickle.py"}


def unsafe_uses(source: str) -> list[str]:
    """Dotted names in :data:`UNSAFE` that ``source`` refers to, through any import alias."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name: a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            aliases |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
    found = []
    for node in ast.walk(tree):
        name = _dotted(node)
        if name is not None:
            head, _, rest = name.partition(".")
            resolved = aliases.get(head, head) + (f".{rest}" if rest else "")
            if resolved in UNSAFE:
                found.append(resolved)
    return found


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def test_the_scanner_finds_unsafe_loaders() -> None:
    assert unsafe_uses("import yaml\nyaml.load(text)\n") == ["yaml.load"]
    assert unsafe_uses("from pickle import loads as l\nl(b)\n") == ["pickle.loads"]
    found = unsafe_uses("import yaml as y\ny.load(t, Loader=y.UnsafeLoader)\n")
    assert sorted(found) == ["yaml.UnsafeLoader", "yaml.load"]
    assert unsafe_uses("import yaml, pickle\nyaml.safe_load(t)\npickle.dumps(x)\n") == []


def test_package_sources_use_only_safe_loaders() -> None:
    offenders = {}
    for path in sorted([*(ROOT / "monitor").rglob("*.py"), *(ROOT / "producers").rglob("*.py")]):
        if path not in ALLOWED:
            found = unsafe_uses(path.read_text(encoding="utf-8"))
            if found:
                offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}
