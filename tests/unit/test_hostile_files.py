"""Hostile files given to `telemon` (its real entry point, in process): alias bombs, oversized files,
FIFOs and devices at config paths, and mistakes in the monitor config. Each is refused at once with
an error naming the file (and line), exit code 2 (1 for `rules check`), never a traceback or a hang."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monitor.cli.main import main
from monitor.common import yamlfile

LEVELS = 9


def _bomb() -> str:
    """Nine levels of nine aliases: 72 aliases, 9**9 nodes once expanded."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, LEVELS):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _many_aliases() -> str:
    return "a: &a 1\nb: [" + ", ".join(["*a"] * (yamlfile.MAX_ALIASES + 1)) + "]\n"


HOSTILE_YAML = {
    "alias bomb": (_bomb(), "its aliases expand it by"),
    "too many aliases": (_many_aliases(), f"more than {yamlfile.MAX_ALIASES} aliases"),
    "recursive alias": ("a: &a [1, *a]\n", "a recursive alias"),
    "oversized": ("# " + "x" * (2 << 20) + "\n", "over the limit of 1,048,576"),
    "not UTF-8": ("a: \udcff\n", "not UTF-8 text"),
    "deep nesting": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
}


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    return path


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, needle: str) -> str:
    """``telemon ARGV`` exits with ``code`` and one clean message (a FIFO that blocked, or a bomb
    that expanded, would never get here: the suite's timeout fails the test)."""
    assert main(argv) == code
    err = capsys.readouterr().err
    assert needle in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
def test_rules_check_refuses_hostile_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    text, needle = HOSTILE_YAML[case]
    path = _write(tmp_path / "rules.yaml", text)
    err = _refused(capsys, ["rules", "check", str(path)], 1, needle)
    assert str(path) in err


@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
def test_run_refuses_a_hostile_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    text, needle = HOSTILE_YAML[case]
    path = _write(tmp_path / "monitor.yaml", text)
    _refused(capsys, ["run", "--config", str(path)], 2, needle)


@pytest.mark.parametrize("case", ["alias bomb", "oversized"])
def test_every_yaml_the_service_reads_is_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    text, needle = HOSTILE_YAML[case]
    bomb = _write(tmp_path / "bomb.yaml", text)
    csv = _write(tmp_path / "log.csv", "time,temp\n")
    for argv, code in [
        (["simulate", "--scenario", str(bomb)], 2),  # a scenario
        (["replay", str(csv), "--mapping", str(bomb)], 2),  # a replay mapping
        (["evaluate", "scenario", str(bomb)], 2),
    ]:
        _refused(capsys, argv, code, needle)
    rules = _write(tmp_path / "rules-in-config.yaml", f"rules_file: {bomb.name}\n")
    _refused(capsys, ["run", "--config", str(rules)], 2, needle)  # the rules a config names
    if case == "alias bomb":  # a cohorts file may be larger (a fleet's labels)
        cohorts = _write(tmp_path / "cohorts-in-config.yaml", f"cohorts_file: {bomb.name}\n")
        _refused(capsys, ["run", "--config", str(cohorts)], 2, needle)


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_a_config_path_that_is_not_a_regular_file_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = {"fifo": tmp_path / "fifo", "directory": tmp_path, "device": Path("/dev/zero")}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    _refused(capsys, ["run", "--config", str(path)], 2, "not a regular file")
    _refused(capsys, ["rules", "check", str(path)], 1, "not a regular file")


def test_a_signing_key_file_that_never_ends_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path / "monitor.yaml", "registry:\n  signing_key_file: /dev/zero\n")
    _refused(capsys, ["run", "--config", str(config)], 2, "not a regular file (a character device)")


# --- mistakes in the monitor config -------------------------------------------------------------


def test_a_yaml_syntax_error_names_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "monitor.yaml", "kafka:\n  group_id: [unclosed\nconsume: {}\n")
    _refused(capsys, ["run", "--config", str(path)], 2, f"{path}:3:8: invalid YAML")


def test_a_typo_names_file_line_column_and_the_key_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "monitor.yaml", "consume:\n  batch_size: 10\n  max_mesage_bytes: 100\n")
    err = _refused(
        capsys, ["run", "--config", str(path)], 2, f"{path}:3:3: consume.max_mesage_bytes: unknown key"
    )
    assert "did you mean 'max_message_bytes'?" in err


def test_a_bad_value_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TELEMON_CONSUME__BATCH_SIZE", "lots")
    _refused(capsys, ["run"], 2, "environment variable TELEMON_CONSUME__BATCH_SIZE: consume.batch_size: ")


def test_a_misspelt_environment_variable_is_named_with_the_one_meant(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from monitor.settings import load_settings

    monkeypatch.setenv("TELEMON_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    load_settings()
    assert (
        "TELEMON_KAFKA_BOOTSTRAP_SERVERS names no setting (did you mean TELEMON_KAFKA__BOOTSTRAP_SERVERS?)"
        in (caplog.text)
    )


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("security.protocol: SASL_PLAINTEXT", "security.protocol -> kafka.security_protocol"),
        ("bootstrap.servers: elsewhere:9092", "bootstrap.servers -> kafka.bootstrap_servers"),
        ("stats_cb: print", "callbacks are telemon's own"),
        ("oauth_cb: print", "callbacks are telemon's own"),
        ("enable.auto.commit: true", "delivery guarantees depend on them"),
    ],
)
def test_extra_kafka_properties_that_would_weaken_it_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, needle: str
) -> None:
    path = _write(
        tmp_path / "monitor.yaml",
        f"kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: PLAIN\n  extra:\n    {extra}\n",
    )
    _refused(capsys, ["run", "--config", str(path)], 2, needle)


def test_the_insecure_opt_in_accepts_an_override(tmp_path: Path) -> None:
    from monitor.ingest.kafka import client_config
    from monitor.settings import load_settings

    path = _write(
        tmp_path / "monitor.yaml",
        "kafka:\n  security_protocol: SASL_SSL\n  allow_insecure_tls: true\n"
        "  extra:\n    security.protocol: SASL_PLAINTEXT\n",
    )
    assert client_config(load_settings(path).kafka)["security.protocol"] == "SASL_PLAINTEXT"


def test_relative_paths_in_a_config_are_relative_to_its_folder(tmp_path: Path) -> None:
    from monitor.settings import load_settings

    (tmp_path / "conf").mkdir()
    path = _write(tmp_path / "conf" / "monitor.yaml", "rules_file: my-rules.yaml\nstate_dir: state\n")
    s = load_settings(path)
    assert s.rules_file == tmp_path.resolve() / "conf" / "my-rules.yaml"
    assert s.state_dir == tmp_path.resolve() / "conf" / "state"


@pytest.mark.parametrize("key", ["group_id", "readings_topic", "audit_topic"])
@pytest.mark.parametrize("name", ["..", "../../etc", "a/b", "", "x" * 250])
def test_names_that_become_folders_cannot_leave_the_state_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, name: str
) -> None:
    path = _write(tmp_path / "monitor.yaml", f"kafka:\n  {key}: '{name}'\n")
    _refused(capsys, ["run", "--config", str(path)], 2, f"kafka.{key}: ")


def test_an_unreachable_broker_is_named_after_the_connect_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    err = _refused(
        capsys, ["run", "--bootstrap", "127.0.0.1:1"], 1, "cannot reach Kafka at 127.0.0.1:1 within 5s"
    )
    assert len(err.splitlines()) == 1  # not hundreds of librdkafka lines


def test_librdkafka_lines_of_one_kind_pass_once_a_minute_with_a_count() -> None:
    import logging

    from monitor.ingest.kafka import _RateLimited

    limit, passed = _RateLimited(interval_s=60), []
    for port in range(10):
        record = logging.LogRecord(
            "librdkafka", logging.ERROR, "", 0, f"Connect to 127.0.0.1:{port} failed", (), None
        )
        if limit.filter(record):
            passed.append(record.msg)
    assert passed == ["Connect to 127.0.0.1:0 failed"]
    limit.interval_s = 0
    record = logging.LogRecord("librdkafka", logging.ERROR, "", 0, "Connect to 127.0.0.1:9 failed", (), None)
    assert limit.filter(record) and "(9 more like it in the last" in str(record.msg)
