"""The operators' side of the deployment, checked here since no container engine runs: the
Prometheus rules (promtool check and promtool's unit tests of every alert), Prometheus's
configurations (promtool check config), the Grafana dashboard (its expressions name only metrics
the grid's API, Flower and the recording rules really expose) and deploy/compose.yml (against
the Compose Specification's JSON schema).

promtool comes from Debian's ``prometheus`` package (scripts/system-packages.sh test): without
it these tests fail, they do not skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.grid import ROOT, free_port, wait_for

DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
RULE_FILES = ("rules.yml", "thresholds.yml")
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "grid.json"
COMPOSE = DEPLOY / "compose.yml"
#: The seed's three alerts (ADR-0001, "Monitoring") and their default thresholds.
SEED_THRESHOLDS = {
    "NodesOnlineLow": ("koprogo_grid_threshold_nodes_online_min", 50),
    "TasksQueuedHigh": ("koprogo_grid_threshold_tasks_queued_max", 100),
    "ComputeHoursPerDayLow": ("koprogo_grid_threshold_compute_hours_per_day_min", 10),
}
#: What the issue asks alerts for, beside the seed's.
REQUIRED_ALERTS = {
    *SEED_THRESHOLDS,
    "LedgerStopped",
    "LedgerLagging",
    "RefusedRecordsSpike",
    "InvalidResultsSpike",
    "WorkersLost",
    "ApiErrors",
    "NoNodeForCapability",
}
#: Metrics Prometheus makes itself for every target.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, (
        "promtool is missing: install Debian's prometheus package (scripts/system-packages.sh test)"
    )
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _rules() -> list[dict]:
    return [
        rule for name in RULE_FILES for group in _yaml(PROMETHEUS / name)["groups"] for rule in group["rules"]
    ]


def _alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def _recorded() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule}


# --- reading PromQL's metric names --------------------------------------------------------------

_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (its syntax is promtool's to check)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\boffset\s+\d+[smhdwy]", " ", text)
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        if match.group(2) is None and match.group(1) not in _KEYWORDS:
            names.add(match.group(1))
    return names


def test_metric_names_are_read_from_promql_as_prometheus_would():
    assert metric_names(
        'histogram_quantile(0.95, sum by (task, le) (rate(flower_task_runtime_seconds_bucket{a="b(c)"}[5m])))'
    ) == {"flower_task_runtime_seconds_bucket"}
    assert metric_names(
        '(max(koprogo_mcp_nodes_total{state="online"} offset 10m) - koprogo_grid:nodes_online:max) >= '
        "scalar(koprogo_grid_threshold_nodes_lost_max)"
    ) == {"koprogo_mcp_nodes_total", "koprogo_grid:nodes_online:max", "koprogo_grid_threshold_nodes_lost_max"}
    assert metric_names("max by (queue) (x) > bool 1e3 and on (queue) y") == {"x", "y"}


# --- the rules --------------------------------------------------------------------------------


def test_rules_and_thresholds_pass_promtool_check():
    checked = promtool("check", "rules", *RULE_FILES)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_rule_passes_its_promtool_unit_tests_firing_and_not():
    tested = promtool("test", "rules", "rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout

    alerts = _alerts()
    assert REQUIRED_ALERTS <= set(alerts), REQUIRED_ALERTS - set(alerts)
    spec = _yaml(PROMETHEUS / "rules.test.yml")
    assert set(spec["rule_files"]) == set(RULE_FILES)
    fires, stays_quiet = set(), set()
    for case in spec["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else stays_quiet).add(check["alertname"])
    assert set(alerts) <= fires, f"alerts never seen firing in rules.test.yml: {set(alerts) - fires}"
    assert set(alerts) <= stays_quiet, (
        f"alerts never seen quiet in rules.test.yml: {set(alerts) - stays_quiet}"
    )


def test_the_seed_s_thresholds_are_series_of_their_own_file():
    recorded = {
        rule["record"]: rule["expr"] for rule in _yaml(PROMETHEUS / "thresholds.yml")["groups"][0]["rules"]
    }
    alerts = _alerts()
    for alert, (threshold, default) in SEED_THRESHOLDS.items():
        assert recorded[threshold] == f"vector({default})"
        assert threshold in metric_names(alerts[alert]["expr"])
    # Every threshold is used by an alert, and no alert spells a threshold of its own.
    used = set().union(*(metric_names(rule["expr"]) for rule in alerts.values()))
    assert set(recorded) <= used


def test_prometheus_configurations_pass_promtool_check_config(tmp_path):
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The compose stack's own configuration, beside the same rule files.
    compose = _yaml(COMPOSE)
    # The metrics token is a secret file in the container: a file of the test's stands in for it.
    content = compose["configs"]["prometheus-config"]["content"]
    assert "credentials_file: /run/secrets/metrics-token" in content
    assert compose["services"]["prometheus"]["secrets"] == ["metrics-token"]
    (tmp_path / "metrics-token").write_text("token")
    content = content.replace("/run/secrets/metrics-token", str(tmp_path / "metrics-token"))
    (tmp_path / "prometheus.yml").write_text(content)
    for name in RULE_FILES:
        assert compose["configs"][f"prometheus-{name.removesuffix('.yml')}"]["file"] == f"./prometheus/{name}"
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    checked = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    scraped = {
        job["job_name"]
        for job in yaml.safe_load(compose["configs"]["prometheus-config"]["content"])["scrape_configs"]
    }
    assert scraped == {job["job_name"] for job in _yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"]}


# --- the dashboard ------------------------------------------------------------------------------


def _sample_names(exposition: str) -> set[str]:
    """Every series name an exposition defines, families without samples yet included."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
    suffixes["summary"] = ("_count", "_sum", "_created")
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def exposed(grid) -> set[str]:
    """Metric names the grid's API and Flower expose, and the rules record."""
    requests.get(f"{grid.api_url}/healthz", timeout=10)  # a request counted
    api = requests.get(f"{grid.api_url}/metrics", timeout=30)
    assert api.status_code == 200
    port = free_port()
    flower = grid.flower(port)

    def flower_metrics() -> str | None:
        if not flower.alive():
            raise AssertionError(f"Flower exited:\n{flower.output()[-3000:]}")
        try:
            response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
        except requests.RequestException:
            return None
        return response.text if response.ok else None

    try:
        flower_text = wait_for(flower_metrics, 60, "Flower's /metrics")
    finally:
        flower.stop()
    names = _sample_names(api.text) | _sample_names(flower_text) | _recorded() | PROMETHEUS_OWN
    # The seed's names, exactly.
    assert {
        "koprogo_mcp_nodes_total",
        "koprogo_mcp_tasks_queued",
        "koprogo_mcp_tasks_completed",
        "koprogo_mcp_compute_hours",
        "koprogo_mcp_rewards_distributed",
    } <= names
    return names


def _panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def test_every_dashboard_and_rule_expression_is_valid_promql(tmp_path):
    exprs = [target["expr"] for panel in _panels() for target in panel["targets"]]
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"panel_{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", "panels.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_and_the_rules_read_only_metrics_that_exist(exposed):
    missing = {
        f"{panel['title']}: {name}"
        for panel in _panels()
        for target in panel["targets"]
        for name in metric_names(target["expr"])
        if name not in exposed
    }
    missing |= {
        f"{rule.get('alert') or rule.get('record')}: {name}"
        for rule in _rules()
        for name in metric_names(rule["expr"])
        if name not in exposed
    }
    assert not missing, sorted(missing)


def test_the_dashboard_has_the_operators_panels_each_saying_its_source():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    titles = {panel["title"] for panel in panels}
    for wanted in (
        "Nodes online by capability",
        "Queue depths",
        "Jobs per minute by kind and outcome",
        "Job latency p50 and p99 by kind",
        "Compute hours per day",
        "Euros distributed per month",
        "Refused records per minute by reason",
    ):
        assert wanted in titles
    datasource = _yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"][
        0
    ]
    provider = _yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "grid.yml")["providers"][0]
    compose = _yaml(COMPOSE)["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in compose
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"]["uid"] == datasource["uid"]
        assert panel["description"].startswith("Source: ")
        assert panel["targets"] and all(target["expr"].strip() for target in panel["targets"])


# --- the compose stack ------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification():
    schema = json.loads((DEPLOY / "schema" / "compose-spec.json").read_text())
    compose = _yaml(COMPOSE)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)

    services = compose["services"]
    for wanted in ("redis", "postgres", "api", "ledger", "flower", "prometheus", "grafana", "volunteer"):
        assert wanted in services
        assert "test" in services[wanted]["healthcheck"], wanted
    assert services["volunteer"]["build"]["dockerfile"] == "deploy/worker/Dockerfile"
    assert "-B" in services["ledger"]["command"]  # the settlement schedule runs with it
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]
    assert "aclfile /data/users.acl" in compose["configs"]["redis-config"]["content"]
    assert "appendonly yes" in compose["configs"]["redis-config"]["content"]
    # Named volumes: each one used is declared, each one declared is used.
    used = {
        volume.split(":", 1)[0]
        for service in services.values()
        for volume in service.get("volumes", [])
        if not volume.startswith((".", "/", "$"))
    }
    assert used == set(compose["volumes"])
    # What it builds from and mounts exists in the repository.
    for service in services.values():
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file()
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (DEPLOY / volume.split(":", 1)[0]).exists(), volume
    for config in compose["configs"].values():
        if "file" in config:
            assert (DEPLOY / config["file"]).is_file()
    # Every variable it needs is in the example environment file.
    variables = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE.read_text()))
    example = {
        line.split("=", 1)[0]
        for line in (DEPLOY / "compose.env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert variables <= example, variables - example
