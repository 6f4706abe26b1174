"""``telemon config show`` and ``telemon config check``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor.cli.config import Source, check_file, value_sources
from monitor.cli.main import main
from monitor.settings import build_settings, load_settings

CONFIG = """\
kafka:
  group_id: g1
  sasl_password: file-secret
  extra:
    linger.ms: 5
log_level: WARNING
"""


def _config(tmp_path: Path, text: str = CONFIG, name: str = "monitor.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_value_has_its_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(tmp_path)
    monkeypatch.setenv("TELEMON_KAFKA__BOOTSTRAP_SERVERS", "k:9092")
    monkeypatch.setenv("TELEMON_DRIFT__CHECK_EVERY", "7")
    sources = value_sources(*build_settings(path))
    assert sources[("kafka", "group_id")] == Source("file", f"{path}:2:3")
    assert sources[("kafka", "extra", "linger.ms")] == Source("file", f"{path}:5:5")
    kafka = Source("environment", "TELEMON_KAFKA__BOOTSTRAP_SERVERS")
    assert sources[("kafka", "bootstrap_servers")] == kafka
    assert sources[("drift", "check_every")] == Source("environment", "TELEMON_DRIFT__CHECK_EVERY")
    assert sources[("consume", "batch_size")] == Source("default")


def test_a_mapping_from_the_environment_is_merged_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(tmp_path)
    monkeypatch.setenv("TELEMON_KAFKA__EXTRA", '{"client.id": "c1"}')
    sources = value_sources(*build_settings(path))
    assert sources[("kafka", "extra", "client.id")] == Source("environment", "TELEMON_KAFKA__EXTRA")
    assert sources[("kafka", "extra", "linger.ms")] == Source("file", f"{path}:5:5")
    assert value_sources(*build_settings(path), flag=True)[("log_level",)] == Source(
        "command line", "--log-level"
    )


def test_show_is_yaml_of_the_effective_settings_with_secrets_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(tmp_path)
    monkeypatch.setenv("TELEMON_REGISTRY__SIGNING_KEY", "env-secret")
    code, out, _ = _run(capsys, "config", "show", "--config", str(path))
    assert code == 0
    assert "file-secret" not in out and "env-secret" not in out
    assert yaml.safe_load(out) == load_settings(path).model_dump(mode="json")
    assert f"  group_id: g1  # file {path}:2:3\n" in out
    assert "  signing_key: '**********'  # environment TELEMON_REGISTRY__SIGNING_KEY\n" in out
    assert "  batch_size: 5000  # default\n" in out
    assert "log_level: WARNING  # file" in out


def test_show_json_and_the_log_level_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path)
    code, out, _ = _run(capsys, "--log-level", "error", "config", "show", "--json", "--config", str(path))
    doc = json.loads(out)
    assert code == 0 and "file-secret" not in out
    assert doc["settings"]["kafka"]["sasl_password"] == "**********"
    assert doc["settings"]["log_level"] == "ERROR"
    assert doc["sources"]["log_level"] == {"kind": "command line", "at": "--log-level"}
    assert doc["sources"]["kafka.group_id"] == {"kind": "file", "at": f"{path}:2:3"}
    assert doc["sources"]["state_dir"] == {"kind": "default", "at": ""}


def test_show_names_the_env_file_and_the_secret_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(tmp_path)
    env_file = tmp_path / "telemon.env"
    env_file.write_text(
        "TELEMON_KAFKA__GROUP_ID=from-env-file\nTELEMON_DRIFT__CHECK_EVERY=9\n", encoding="utf-8"
    )
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "TELEMON_KAFKA__SASL_PASSWORD").write_text("s3cret", encoding="utf-8")
    monkeypatch.setenv("TELEMON_DRIFT__CHECK_EVERY", "7")
    argv = ["config", "show", "--json", "--config", str(path), "--env-file", str(env_file)]
    code, out, _ = _run(capsys, *argv, "--secrets-dir", str(secrets))
    doc = json.loads(out)
    assert code == 0 and "s3cret" not in out
    assert doc["settings"]["kafka"]["group_id"] == "from-env-file"
    assert doc["sources"]["kafka.group_id"] == {
        "kind": "env file",
        "at": f"{env_file}: TELEMON_KAFKA__GROUP_ID",
    }
    assert doc["settings"]["drift"]["check_every"] == 7  # the environment over the .env file
    assert doc["sources"]["drift.check_every"]["kind"] == "environment"
    assert doc["sources"]["kafka.sasl_password"] == {
        "kind": "secret file",
        "at": str(secrets.resolve() / "TELEMON_KAFKA__SASL_PASSWORD"),
    }


def test_show_without_a_config_is_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "config", "show")
    assert code == 0 and "# file" not in out and "group_id: telemon  # default" in out


def test_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path)
    assert _run(capsys, "config", "check", str(path)) == (0, f"{path}: ok\n", "")


def test_check_prints_every_problem_on_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _config(tmp_path, "kafka:\n  batch: 3\nconsume:\n  batch_size: x\n", "bad.yaml")
    good = _config(tmp_path)
    code, out, err = _run(capsys, "config", "check", str(bad), str(good))
    assert (code, out) == (2, f"{good}: ok\n")
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{bad}:2:3: kafka.batch: unknown key")
    assert lines[1].startswith(f"{bad}:4:3: consume.batch_size: Input should be a valid integer")


def test_check_reads_the_files_the_config_names(tmp_path: Path) -> None:
    path = _config(tmp_path, "rules_file: missing-rules.yaml\n")
    assert check_file(path) == [f"{path}: {tmp_path / 'missing-rules.yaml'}: No such file or directory"]
    rules = _config(tmp_path, "rules: [{name: x}]\n", "rules.yaml")
    problems = check_file(_config(tmp_path, f"rules_file: {rules.name}\n"))
    assert problems and all(line.startswith(str(tmp_path)) for line in problems)


def test_check_a_missing_or_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "config", "check", str(tmp_path / "none.yaml"))
    assert code == 2 and err == f"config file not found: {tmp_path / 'none.yaml'}\n"
    code, _, err = _run(capsys, "config", "check", str(_config(tmp_path, "a: [\n", "broken.yaml")))
    assert code == 2 and "invalid YAML" in err and len(err.splitlines()) == 1
    assert check_file(tmp_path) == [f"cannot read {tmp_path}: {tmp_path}: not a regular file (a directory)"]


def test_a_reader_gone_away_is_no_error() -> None:
    """`telemon config show | head -1`: the closed pipe ends the command quietly (141, as a shell
    tool killed by SIGPIPE), without a traceback."""
    telemon = Path(sys.executable).parent / "telemon"
    argv = [telemon, "config", "show", "--json"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read()
        assert (proc.wait(timeout=60), err) == (141, b"")
