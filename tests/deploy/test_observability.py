"""Prometheus config and alert rules, Grafana provisioning and the dashboard JSON.

promtool (Debian package `prometheus`) checks the config, the rules, the dashboard's PromQL
and the alert unit tests in deploy/prometheus/alerts.test.yml; YAML-structure checks run too.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from deploy_support import DEPLOY_DIR, load_yaml, run_tool, tool

PROMETHEUS_DIR = DEPLOY_DIR / "prometheus"
GRAFANA_DIR = DEPLOY_DIR / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "tal.json"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
# Grafana's range variable: any valid duration stands in for it when parsing PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def alert_rules() -> list[dict]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


# ---- dashboard --------------------------------------------------------------------------------


def test_dashboard_json_matches_its_source() -> None:
    sys.path.insert(0, str(GRAFANA_DIR))
    try:
        import build_dashboard
    finally:
        sys.path.remove(str(GRAFANA_DIR))
    assert DASHBOARD.read_text() == build_dashboard.render(), (
        "run: python deploy/grafana/build_dashboard.py"
    )


def test_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
    for panel in panels():
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"])


def panel_exprs(title_words: str) -> str:
    """All queries of the panels whose title contains every word (case-insensitive)."""
    words = title_words.lower().split()
    hits = [p for p in panels() if all(w in p["title"].lower() for w in words)]
    assert hits, f"no panel titled like {title_words!r}"
    return " ".join(t["expr"] for p in hits for t in p["targets"])


@pytest.mark.parametrize(
    ("title", "must_contain"),
    [
        ("request rate", ["rate(tal_requests_total"]),
        (
            "latency route",
            [
                "histogram_quantile(0.5,",
                "histogram_quantile(0.95,",
                "histogram_quantile(0.99,",
                "tal_request_duration_seconds_bucket",
                "by (le, route)",
            ],
        ),
        (
            "latency family",
            [
                "tal_initialize_duration_seconds_bucket",
                "by (le, family)",
                "histogram_quantile(0.99,",
            ],
        ),
        ("cache hit ratio tier", ["tal_cache_requests_total", 'result="hit"', "by (tier)"]),
        ("errors status", ["tal_requests_total", "by (status"]),
        ("in-flight requests", ["tal_inflight_requests"]),
        ("in-flight bytes", ["tal_inflight_bytes"]),
        ("blob size", ["tal_blob_bytes_bucket"]),
        ("model version", ["tal_model_info"]),
        ("gpu memory", ["tal_gpu_memory_bytes"]),
    ],
)
def test_dashboard_has_panel(title: str, must_contain: list[str]) -> None:
    exprs = panel_exprs(title)
    for fragment in must_contain:
        assert fragment in exprs, f"{title}: {fragment!r} not in {exprs!r}"


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    [source] = load_yaml(GRAFANA_DIR / "provisioning/datasources/prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    variable = dashboard()["templating"]["list"][0]
    assert variable["type"] == "datasource" and variable["current"]["value"] == source["uid"]
    [provider] = load_yaml(GRAFANA_DIR / "provisioning/dashboards/tal.yml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# ---- Prometheus config and rules: structure ---------------------------------------------------


def test_prometheus_config_scrapes_the_api() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "tal-api"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["api:8000"]
    assert any(Path(pattern).name == "*.yml" for pattern in config["rule_files"])


def test_alert_rules_structure() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert rule["expr"].strip() and rule["labels"]["severity"]
        assert rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule["for"])
    exprs = " ".join(rule["expr"] for rule in rules)
    for needed in (
        "tal_request_duration_seconds_bucket",
        'status=~"5.."',
        "tal_model_ready",
        'tal_cache_errors_total{tier="redis"}',
    ):
        assert needed in exprs


# ---- promtool ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    return tool("promtool")


def test_promtool_checks_config(promtool: str, tmp_path: Path) -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    # Point rule_files at the repository's rules instead of the container path.
    config["rule_files"] = [str(ALERTS)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = run_tool([promtool, "check", "config", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_rules(promtool: str) -> None:
    result = run_tool([promtool, "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_alert_unit_tests(promtool: str, tmp_path: Path) -> None:
    # promtool resolves rule_files relative to the test file: run it on a copy beside the rules.
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    shutil.copy(PROMETHEUS_DIR / "alerts.test.yml", tmp_path / "alerts.test.yml")
    result = run_tool([promtool, "test", "rules", str(tmp_path / "alerts.test.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    """Each dashboard query as a recording rule, so promtool's PromQL parser checks it."""
    rules = []
    for number, expr in enumerate(dashboard_exprs()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_tool([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
