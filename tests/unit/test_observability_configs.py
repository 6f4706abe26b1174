"""The shipped observability and deployment files: Prometheus config, rules and their tests,
Alertmanager, Grafana provisioning, the metrics catalog of the documentation, Dockerfile and compose.yaml.

Every PromQL expression (Prometheus rules, dashboard panels, Grafana alert rules) must parse
(``promtool``) and may only name metrics and labels a fresh :class:`Metrics` really exports.
The tools (promtool, amtool, docker-compose) are installed by `make test` (scripts/test-services); a
missing one fails its test.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from monitor.analyze.feedback import Verdict
from monitor.analyze.ledger import AlertRecord, Ledger
from monitor.govern.rules import load_rules
from monitor.pipeline import BatchResult
from monitor.schema import SENSOR_INDEX, SENSOR_NAMES
from monitor.serve.metrics import Metrics
from monitor.settings import KafkaSettings
from monitor.state.store import N_CHECKS
from tests.conftest import tool

N_SENSORS = len(SENSOR_NAMES)
ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
PROMETHEUS = CONFIGS / "prometheus"
GRAFANA = CONFIGS / "grafana"
SEVERITIES = {"info", "warning", "critical"}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
PROMETHEUS_DS = "telemon-prometheus"
#: The dashboard's datasource: its variable, so the JSON imports into any Grafana.
DASHBOARD_DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
GRAFANA_ALERTING = GRAFANA / "alerting" / "telemon.yaml"


def run(*cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------ what the service exports


def recorded_registry() -> CollectorRegistry:
    """A fresh registry after one batch and every other hook, as the service calls them."""
    registry = CollectorRegistry()
    rules = load_rules(CONFIGS / "rules.yaml")
    metrics = Metrics(registry, {r.name: r.severity for r in rules.rules}, cohorts=["firmware=1.2.0"])
    result = BatchResult()
    result.valid[SENSOR_INDEX["humidity"]] = 2
    result.scores = {SENSOR_INDEX["humidity"]: np.array([0.2, 0.99999])}
    result.event_ts = np.array([1_767_225_600_000, 1_767_225_601_000], np.int64)
    result.fleet_stats["humidity"] = (0.1, 0.2)
    result.cohort_inputs[("firmware=1.2.0", "humidity")] = (0.1, 0.2)
    bias = {"bias": 0.0, "bias_alert_ratio": 1.0, "bias_score_shift": 0.0}
    result.bias[("firmware=1.2.0", "humidity")] = {**bias, "bias_alert_pvalue": 0.5, "bias_score_pvalue": 0.5}
    metrics.record_batch(result, np.zeros((N_SENSORS, N_CHECKS), np.int64), 0.01)
    metrics.record_state(1, 1000, np.ones(N_SENSORS, np.int64))
    metrics.record_firing(dict.fromkeys((r.name for r in rules.rules), 0))
    metrics.record_consumer({("telemon.readings", 0): 0}, 1)
    metrics.record_restore("changelog", 0.01)
    judged = AlertRecord("00000000000000aa", "score_drift", "firing", "device", "dev-1", "humidity",
                         1_767_225_600_000, {}, ["alert"], 1, {"firmware": "1.2.0"})  # fmt: skip
    onset = judged.started_at - 60_000
    metrics.record_ledger(
        Ledger.from_records([judged], [Verdict(judged.alert_id, "true_positive", 1, onset=onset)])
    )
    metrics.record_feedback({"true_positive": 1}, {})
    return registry


@functools.cache
def exported() -> tuple[frozenset[str], frozenset[str]]:
    """Every sample name (``_total``, ``_bucket``, ``_sum``, ``_count`` included) and label name."""
    samples = [s for family in recorded_registry().collect() for s in family.samples]
    return frozenset(s.name for s in samples), frozenset(k for s in samples for k in s.labels)


def catalog_names() -> set[str]:
    """Metric names as queried: counters with ``_total``, histograms and gauges by their name."""
    return {f.name + "_total" if f.type == "counter" else f.name for f in recorded_registry().collect()}


# ------------------------------------------------------------------------ PromQL, statically

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool"}
_KEYWORDS |= {"offset", "inf", "nan"}
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables with something PromQL parses."""
    expr = re.sub(r"\$__(?:rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", "x", expr)


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers not followed by ``(`` once strings,
    label matchers, ranges and label lists are removed, minus the keywords."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = _LABEL_LISTS.sub(" ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", e):
        if not e[m.end() :].lstrip().startswith("(") and m.group().lower() not in _KEYWORDS:
            names.add(m.group())
    return names


def label_names(expr: str) -> set[str]:
    """Label names in matchers and in by/without/on/ignoring/group_* lists."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    names = {
        n for inner in re.findall(r"\{([^}]*)\}", e) for n in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", inner)
    }
    return names | {n.strip() for inner in _LABEL_LISTS.findall(e) for n in inner.split(",") if n.strip()}


def assert_uses_exported(expr: str) -> None:
    names, labels = exported()
    used = metric_names(expr)
    assert used, f"no metric in {expr!r}"
    assert used <= names | {"up"}, f"{sorted(used - names - {'up'})} not exported, in {expr!r}"
    unknown = label_names(expr) - labels - TARGET_LABELS
    assert not unknown, f"labels {sorted(unknown)} not exported, in {expr!r}"


def assert_promql_parses(exprs: list[str], tmp_path: Path) -> None:
    """promtool parses expressions inside rule files: wrap each one as a recording rule."""
    rules = [{"record": f"check_expr_{i}", "expr": grafana_to_promql(e)} for i, e in enumerate(exprs)]
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]}))
    check = run(tool("promtool"), "check", "rules", str(path))
    assert check.returncode == 0, check.stdout + check.stderr


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (sensor) (increase(telemon_drift_detections_total{detector="ks", scope="device"}[10m])) > 0'
        " and on() histogram_quantile(0.99, sum by (le) (rate(telemon_batch_duration_seconds_bucket[5m])))"
        ' > 1e-3 or up{job="telemon"} == 0'
    )
    assert metric_names(expr) == {
        "telemon_drift_detections_total",
        "telemon_batch_duration_seconds_bucket",
        "up",
    }
    assert label_names(expr) == {"sensor", "detector", "scope", "le", "job"}


def test_exported_names_include_every_suffix() -> None:
    names, labels = exported()
    for name in (
        "telemon_readings_total",
        "telemon_anomaly_score_bucket",
        "telemon_anomaly_score_sum",
        "telemon_anomaly_score_count",
        "telemon_event_lag_seconds_bucket",
        "telemon_batch_duration_seconds_count",
        "telemon_consumer_lag",
        "telemon_alerts_firing",
        "telemon_model_version_max",
    ):
        assert name in names
    assert "device_id" not in labels


# ------------------------------------------------------------------------ metrics catalog


def docs_section(page: str, title: str) -> str:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, f"docs/{page} has no section {title!r}"
    return match.group(1)


def test_documented_catalog_lists_exactly_the_exported_metrics() -> None:
    catalog = docs_section("operations/metrics.md", "The catalog")
    rows = [line for line in catalog.splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`(telemon_\w+)`", row.split("|")[1])}
    assert documented == catalog_names()


def test_documented_catalog_labels_match() -> None:
    families = {
        f.name + "_total" if f.type == "counter" else f.name: f for f in recorded_registry().collect()
    }
    for line in docs_section("operations/metrics.md", "The catalog").splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        labels = {c.strip() for c in cells[2].split(",") if c.strip()}
        for name in re.findall(r"`(telemon_\w+)`", cells[0]):
            sample_labels = {k for s in families[name].samples for k in s.labels} - {"le"}
            assert sample_labels == labels, name


def test_exposition_passes_promtool_check_metrics() -> None:
    check = run(tool("promtool"), "check", "metrics", stdin=generate_latest(recorded_registry()).decode())
    assert (check.returncode, check.stdout + check.stderr) == (0, "")


# ------------------------------------------------------------------------ Prometheus


def prometheus_rules() -> list[dict[str, Any]]:
    return [
        r
        for path in sorted((PROMETHEUS / "rules").glob("*.yml"))
        for g in load_yaml(path)["groups"]
        for r in g["rules"]
    ]


def test_promtool_check_config() -> None:
    check = run(tool("promtool"), "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout


def test_promtool_check_rules() -> None:
    check = run(tool("promtool"), "check", "rules", *map(str, sorted((PROMETHEUS / "rules").glob("*.yml"))))
    assert check.returncode == 0, check.stdout + check.stderr


def test_promtool_test_rules() -> None:
    tests = sorted((PROMETHEUS / "tests").glob("*.yml"))
    assert tests
    check = run(tool("promtool"), "test", "rules", *map(str, tests))
    assert check.returncode == 0, check.stdout + check.stderr


def test_config_loads_every_rule_file() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    assert config["rule_files"] == ["rules/*.yml"]
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    assert "telemon" in jobs


def test_every_alert_is_unit_tested_firing() -> None:
    alerts = {r["alert"] for r in prometheus_rules() if "alert" in r}
    tested = {
        t["alertname"]
        for path in (PROMETHEUS / "tests").glob("*.yml")
        for case in load_yaml(path)["tests"]
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    assert alerts == tested


def test_rules_cover_the_service_and_detection() -> None:
    alerts = {r["alert"] for r in prometheus_rules()}
    assert {"TelemonDown", "TelemonNoReadings", "TelemonHighQuarantineRatio"} <= alerts
    assert {"TelemonConsumerLagging", "TelemonSlowBatches"} <= alerts
    assert {
        "TelemonDeviceDrift",
        "TelemonFleetDrift",
        "TelemonRuleFiring",
        "TelemonAnomalyRateHigh",
    } <= alerts
    assert {
        "TelemonDegraded",
        "TelemonSnapshotWriteErrors",
        "TelemonSnapshotLoadErrors",
        "TelemonRetrainsRejected",
        "TelemonConsumerLagGrowing",
        "TelemonDeadLettersFailed",
    } <= alerts


def test_every_alert_is_unit_tested_quiet() -> None:
    """Each alert also has a case where it must not fire (exp_alerts empty)."""
    alerts = {r["alert"] for r in prometheus_rules() if "alert" in r}
    quiet = {
        t["alertname"]
        for path in (PROMETHEUS / "tests").glob("*.yml")
        for case in load_yaml(path)["tests"]
        for t in case.get("alert_rule_test", [])
        if not t.get("exp_alerts")
    }
    assert alerts <= quiet


def test_rules_use_exported_metrics_and_known_severities() -> None:
    for rule in prometheus_rules():
        assert_uses_exported(rule["expr"])
        assert rule.get("annotations", {}).get("summary"), rule["alert"]
        severity = rule.get("labels", {}).get("severity")
        # TelemonRuleFiring takes the severity of the telemon rule from its series.
        assert severity in SEVERITIES or "severity" in label_names(rule["expr"]), rule["alert"]


# ------------------------------------------------------------------------ Alertmanager


def test_amtool_check_config() -> None:
    check = run(tool("amtool"), "check-config", str(CONFIGS / "alertmanager" / "alertmanager.yml"))
    assert check.returncode == 0, check.stdout + check.stderr


def test_alertmanager_inhibitions_name_shipped_alerts() -> None:
    config = load_yaml(CONFIGS / "alertmanager" / "alertmanager.yml")
    alerts = {r["alert"] for r in prometheus_rules()}
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            pattern = re.fullmatch(r'alertname=~?"([^"]+)"', matcher)
            assert pattern, matcher
            assert set(pattern.group(1).split("|")) <= alerts, matcher


# ------------------------------------------------------------------------ Grafana


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GRAFANA / "dashboards" / "telemon.json").read_text(encoding="utf-8"))
    return data


def dashboard_targets() -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target


def grafana_alert_rules() -> list[dict[str, Any]]:
    provisioning = load_yaml(GRAFANA_ALERTING)
    assert provisioning["apiVersion"] == 1
    return [r for g in provisioning["groups"] for r in g["rules"]]


def grafana_alert_queries() -> Iterator[str]:
    for rule in grafana_alert_rules():
        for query in rule["data"]:
            if query["datasourceUid"] != "__expr__":
                yield query["model"]["expr"]


def test_datasources_provisioned() -> None:
    provisioning = load_yaml(GRAFANA / "provisioning" / "datasources" / "telemon.yaml")
    assert provisioning["apiVersion"] == 1
    by_uid = {d["uid"]: d for d in provisioning["datasources"]}
    prometheus = by_uid[PROMETHEUS_DS]
    assert (prometheus["type"], prometheus["access"], prometheus["url"]) == (
        "prometheus",
        "proxy",
        "http://prometheus:9090",
    )
    assert [d["uid"] for d in provisioning["datasources"] if d.get("isDefault")] == [PROMETHEUS_DS]
    for d in provisioning["datasources"]:
        assert {"name", "type", "uid", "url"} <= d.keys()


def test_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    provisioning = load_yaml(GRAFANA / "provisioning" / "dashboards" / "telemon.yaml")
    assert provisioning["apiVersion"] == 1
    (provider,) = provisioning["providers"]
    assert provider["type"] == "file"
    mounts = load_yaml(ROOT / "compose.yaml")["services"]["grafana"]["volumes"]
    assert f"./configs/grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_dashboard_structure() -> None:
    d = dashboard()
    assert {"uid", "title", "schemaVersion", "panels", "templating", "time"} <= d.keys()
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    assert rows == [
        "Fleet overview",
        "Per-sensor drift",
        "Alerts",
        "Model versions",
        "Service health",
        "Analysis",
    ]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for panel in d["panels"]:
        assert panel.get("title"), panel
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] not in ("row", "alertlist"):
            assert panel["datasource"] == DASHBOARD_DS, panel["title"]
            assert panel["targets"], panel["title"]


def test_dashboard_takes_its_datasource_as_a_variable() -> None:
    """No panel, query or variable names a datasource uid: every one is ``${DS_PROMETHEUS}``, a
    datasource variable (the provisioned Prometheus by default, any Prometheus on import)."""
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["DS_PROMETHEUS"]
    assert (ds["type"], ds["query"], ds["current"]["value"]) == ("datasource", "prometheus", PROMETHEUS_DS)
    assert PROMETHEUS_DS not in json.dumps({k: v for k, v in d.items() if k != "templating"})
    used = [p["datasource"] for p in d["panels"] if "datasource" in p]
    used += [t["datasource"] for _, t in dashboard_targets()]
    used += [v["datasource"] for v in variables.values() if "datasource" in v]
    assert used and all(u == DASHBOARD_DS for u in used)


def test_dashboard_queries_use_exported_metrics_and_parse(tmp_path: Path) -> None:
    exprs = []
    for title, target in dashboard_targets():
        assert target["datasource"] == DASHBOARD_DS, title
        assert target["refId"], title
        exprs.append(target["expr"])
        assert_uses_exported(grafana_to_promql(target["expr"]))
    (variable,) = [v for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    assert variable["datasource"] == DASHBOARD_DS
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"]).groups()  # type: ignore[union-attr]
    assert metric in exported()[0]
    assert label in exported()[1]
    assert_promql_parses(exprs, tmp_path)


def test_grafana_alert_rules_structure() -> None:
    rules = grafana_alert_rules()
    assert len({r["uid"] for r in rules}) == len(rules)
    for rule in rules:
        assert {"uid", "title", "condition", "data", "for", "noDataState", "execErrState"} <= rule.keys()
        assert len(rule["uid"]) <= 40
        ref_ids = [q["refId"] for q in rule["data"]]
        assert rule["condition"] in ref_ids, rule["uid"]
        for query in rule["data"]:
            assert query["model"]["refId"] == query["refId"]
            if query["datasourceUid"] == "__expr__":
                assert query["model"]["type"] in ("reduce", "threshold", "math", "classic_conditions")
                assert query["model"]["expression"] in ref_ids, rule["uid"]
            else:
                assert query["datasourceUid"] == PROMETHEUS_DS, rule["uid"]
                assert query["relativeTimeRange"]["from"] > 0, rule["uid"]
        assert rule["noDataState"] in ("OK", "NoData", "Alerting")
        assert rule["execErrState"] in ("OK", "Error", "Alerting")
        assert rule["labels"].get("severity", "warning") in SEVERITIES
        assert rule["annotations"]["summary"]


def test_every_operations_alert_has_a_grafana_mirror() -> None:
    """Each Prometheus alert of the telemon-operations group has a Grafana rule whose uid is its name
    in kebab case, with the same severity and `for`."""
    groups = load_yaml(PROMETHEUS / "rules" / "telemon.yml")["groups"]
    (group,) = [g for g in groups if g["name"] == "telemon-operations"]
    grafana = {r["uid"]: r for r in grafana_alert_rules()}
    for rule in group["rules"]:
        uid = re.sub(r"(?<!^)(?=[A-Z])", "-", rule["alert"]).lower()
        mirror = grafana[uid]
        assert mirror["labels"]["severity"] == rule["labels"]["severity"], uid
        assert mirror["for"] == rule.get("for", "0s"), uid
        assert metric_names(mirror["data"][0]["model"]["expr"]) == metric_names(rule["expr"]), uid


def test_compose_alerts_from_prometheus_only() -> None:
    """The Grafana rules duplicate the Prometheus ones: compose provisions Grafana without them."""
    assert not (GRAFANA / "provisioning" / "alerting").exists()
    mounts = [v for s in compose()["services"].values() for v in s.get("volumes", [])]
    assert not [m for m in mounts if "alerting" in m]
    assert "./configs/prometheus:/etc/prometheus:ro" in compose()["services"]["prometheus"]["volumes"]
    assert load_yaml(PROMETHEUS / "prometheus.yml")["rule_files"]


def test_grafana_alert_queries_use_exported_metrics_and_parse(tmp_path: Path) -> None:
    exprs = list(grafana_alert_queries())
    assert exprs
    for expr in exprs:
        assert_uses_exported(expr)
    assert_promql_parses(exprs, tmp_path)


# ------------------------------------------------------------------------ deployment


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(ROOT / "compose.yaml")
    return data


def test_docker_compose_config_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMON_REGISTRY__SIGNING_KEY", "k" * 64)
    check = run(tool("docker-compose"), "--file", "compose.yaml", "config", "--quiet")
    assert check.returncode == 0, check.stdout + check.stderr


def test_compose_needs_the_shared_signing_key() -> None:
    """Replicas must share one key: without it the stack does not start (no key per replica)."""
    check = run(tool("docker-compose"), "--file", "compose.yaml", "config", "--quiet")
    assert check.returncode != 0
    assert "TELEMON_REGISTRY__SIGNING_KEY" in check.stderr


def test_compose_replicas_share_the_registry_through_kafka() -> None:
    services = compose()["services"]
    for name in ("monitor", "simulator"):
        env = services[name]["environment"]
        assert env["TELEMON_KAFKA__GROUP_ID"] == "telemon", name
        assert env["TELEMON_REGISTRY__SHARED"] == "true", name
        assert env["TELEMON_REGISTRY__GENERATE_KEY"] == "false", name
        assert env["TELEMON_REGISTRY__SIGNING_KEY"].startswith("${TELEMON_REGISTRY__SIGNING_KEY:?"), name
    assert "volumes" not in services["monitor"]  # no folder shared between replicas


def test_compose_creates_every_topic_telemon_uses() -> None:
    script = compose()["services"]["kafka-init"]["command"][0]
    k = KafkaSettings()
    topics = [getattr(k, name) for name in type(k).model_fields if name.endswith("_topic")]
    for topic in topics:
        assert re.search(rf"(create |for topic in [^;]*)\b{re.escape(topic)}\b", script), topic
    assert re.search(r"create telemon\.artifacts --config cleanup\.policy=compact", script)
    assert re.search(r"create telemon\.audit --config retention\.ms=-1", script)
    assert re.search(r"create telemon\.state --config cleanup\.policy=compact", script)  # the changelog
    assert re.search(r"TOPIC_PARTITIONS=1 create telemon\.fleet\b", script)  # read in one order
    assert k.state_topic == "telemon.state" and k.fleet_topic == "telemon.fleet"


def test_compose_stack_is_complete_and_ordered() -> None:
    services = compose()["services"]
    assert set(services) == {
        "kafka",
        "kafka-init",
        "monitor",
        "simulator",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    for name in ("kafka", "monitor", "prometheus", "alertmanager", "grafana"):
        assert "test" in services[name]["healthcheck"], name
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["monitor"]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert services["simulator"]["depends_on"]["monitor"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert services["prometheus"]["depends_on"]["alertmanager"]["condition"] == "service_healthy"


def test_compose_mounts_the_shipped_configs() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
    mounts = {v for s in compose()["services"].values() for v in s.get("volumes", [])}
    assert "./configs/prometheus:/etc/prometheus:ro" in mounts
    assert "./configs/alertmanager:/etc/alertmanager:ro" in mounts
    assert "./configs/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    instructions = re.findall(r"^([A-Z]+)\s+(.*)$", text, re.M)
    assert instructions[0] == ("FROM", "python:3.11-slim")
    (user,) = [arg for op, arg in instructions if op == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    assert [arg for op, arg in instructions if op == "ENTRYPOINT"] == ['["telemon"]']
    installs = [arg for op, arg in instructions if op == "RUN" and "pip install" in arg]
    assert installs and not any("embedded" in arg for arg in installs)
    healthcheck = text[text.index("HEALTHCHECK") :]
    assert "/healthz" in healthcheck.split("ENTRYPOINT")[0]


def test_dockerignore_admits_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "*" in ignore  # an allowlist
    admitted = {line[1:] for line in ignore if line.startswith("!")}
    copied = {
        src
        for args in re.findall(r"^COPY\s+(.*)$", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.M)
        for src in args.split()[:-1]
        if not src.startswith("--")
    }
    assert copied <= admitted
    assert {".venv", ".git", "tests"}.isdisjoint(admitted)
