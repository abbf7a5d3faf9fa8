"""Writes deploy/grafana/dashboards/tal.json, the TAL service dashboard.

The JSON is what Grafana provisions and what is reviewed in version control; this script is the
readable source of it. After editing, run ``python deploy/grafana/build_dashboard.py``
(tests/deploy checks the two agree).
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "tal.json"
UID = "tal-service"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24  # Grafana's grid is 24 units wide
PANEL_HEIGHT = 8
HALF = GRID_COLUMNS // 2
THIRD = GRID_COLUMNS // 3
STAT_HEIGHT = 4
QUANTILES = (0.5, 0.95, 0.99)
RATE = "$__rate_interval"


def quantiles(metric: str, by: str) -> list[dict]:
    """p50 / p95 / p99 of a histogram, one series per value of ``by``."""
    return [
        target(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[{RATE}])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in QUANTILES
    ]


def target(expr: str, legend: str, instant: bool = False) -> dict:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "instant": instant}


def timeseries(title: str, targets: list[dict], unit: str, description: str = "") -> dict:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "max"],
            }
        },
    }


def stat(
    title: str, targets: list[dict], unit: str, description: str = "", text_mode: str = "auto"
) -> dict:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "textMode": text_mode,
            "colorMode": "value",
            "graphMode": "none",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
    }


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def layout(rows: list[tuple[dict, list[tuple[dict, int, int]]]]) -> list[dict]:
    """Places panels left to right, wrapping at the grid width, and numbers them."""
    panels, y = [], 0
    for heading, members in rows:
        heading["gridPos"] = {"x": 0, "y": y, "w": GRID_COLUMNS, "h": 1}
        panels.append(heading)
        y += 1
        x, line_height = 0, 0
        for panel, width, height in members:
            if x + width > GRID_COLUMNS:
                x, y, line_height = 0, y + line_height, 0
            panel["gridPos"] = {"x": x, "y": y, "w": width, "h": height}
            panels.append(panel)
            x += width
            line_height = max(line_height, height)
        y += line_height
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return panels


def panels() -> list[dict]:
    overview = [
        (
            stat(
                "Model version",
                [
                    target(
                        "max by (name, version) (tal_model_info) == 1",
                        "{{name}} {{version}}",
                        instant=True,
                    )
                ],
                "none",
                "Checkpoint the workers serve (tal_model_info)",
                text_mode="name",
            ),
            THIRD,
            STAT_HEIGHT,
        ),
        (
            stat(
                "Model ready",
                [target("min(tal_model_ready)", "ready")],
                "bool_yes_no",
                "1 when every worker has its checkpoint loaded and warm",
            ),
            THIRD,
            STAT_HEIGHT,
        ),
        (
            stat(
                "5xx share (5m)",
                [
                    target(
                        'sum(rate(tal_requests_total{status=~"5.."}[5m]))'
                        " / clamp_min(sum(rate(tal_requests_total[5m])), 1e-9)",
                        "5xx",
                    )
                ],
                "percentunit",
            ),
            THIRD,
            STAT_HEIGHT,
        ),
    ]
    traffic = [
        (
            timeseries(
                "Request rate by route",
                [
                    target(
                        f"sum by (route, method) (rate(tal_requests_total[{RATE}]))",
                        "{{method}} {{route}}",
                    )
                ],
                "reqps",
            ),
            HALF,
            PANEL_HEIGHT,
        ),
        (
            timeseries(
                "Errors by status",
                [
                    target(
                        "sum by (status, route) "
                        f'(rate(tal_requests_total{{status=~"[45].."}}[{RATE}]))',
                        "{{status}} {{route}}",
                    )
                ],
                "reqps",
                "4xx and 5xx answers per second",
            ),
            HALF,
            PANEL_HEIGHT,
        ),
        (
            timeseries(
                "Latency by route (p50 / p95 / p99)",
                quantiles("tal_request_duration_seconds", "route"),
                "s",
            ),
            HALF,
            PANEL_HEIGHT,
        ),
        (
            timeseries(
                "Initialize latency by arch family (p50 / p95 / p99)",
                quantiles("tal_initialize_duration_seconds", "family"),
                "s",
                "POST /v1/initialize, cache hits and misses together",
            ),
            HALF,
            PANEL_HEIGHT,
        ),
        (
            timeseries(
                "Prediction time by family (p50 / p95 / p99)",
                quantiles("tal_prediction_duration_seconds", "family"),
                "s",
            ),
            HALF,
            PANEL_HEIGHT,
        ),
        (
            timeseries(
                "Head fit time by family (p50 / p95 / p99)",
                quantiles("tal_head_fit_duration_seconds", "family"),
                "s",
            ),
            HALF,
            PANEL_HEIGHT,
        ),
    ]
    cache = [
        (
            timeseries(
                "Cache hit ratio by tier",
                [
                    target(
                        f'sum by (tier) (rate(tal_cache_requests_total{{result="hit"}}[{RATE}]))'
                        " / clamp_min(sum by (tier) "
                        f"(rate(tal_cache_requests_total[{RATE}])), 1e-9)",
                        "{{tier}}",
                    )
                ],
                "percentunit",
            ),
            HALF,
            PANEL_HEIGHT,
        ),
        (
            timeseries(
                "Cache errors by tier and operation",
                [
                    target(
                        f"sum by (tier, operation) (rate(tal_cache_errors_total[{RATE}]))",
                        "{{tier}} {{operation}}",
                    )
                ],
                "ops",
            ),
            HALF,
            PANEL_HEIGHT,
        ),
        (
            timeseries(
                "Initialize latency by cache outcome (p95)",
                [
                    target(
                        "histogram_quantile(0.95, sum by (le, cache) "
                        f"(rate(tal_initialize_duration_seconds_bucket[{RATE}])))",
                        "{{cache}}",
                    )
                ],
                "s",
            ),
            HALF,
            PANEL_HEIGHT,
        ),
        (
            timeseries(
                "Blob size by family (p50 / p95 / p99)",
                quantiles("tal_blob_bytes", "family"),
                "bytes",
                "Size of the safetensors files served",
            ),
            HALF,
            PANEL_HEIGHT,
        ),
    ]
    resources = [
        (
            timeseries(
                "In-flight requests", [target("sum(tal_inflight_requests)", "requests")], "short"
            ),
            THIRD,
            PANEL_HEIGHT,
        ),
        (
            timeseries(
                "In-flight bytes",
                [target("sum(tal_inflight_bytes)", "reserved")],
                "bytes",
                "Estimated memory reserved by running predictions (the in-flight budget)",
            ),
            THIRD,
            PANEL_HEIGHT,
        ),
        (
            timeseries(
                "GPU memory by device",
                [
                    target(
                        "sum by (instance, device) (tal_gpu_memory_bytes)",
                        "{{instance}} {{device}}",
                    )
                ],
                "bytes",
                "CUDA memory allocated by the workers",
            ),
            THIRD,
            PANEL_HEIGHT,
        ),
    ]
    return layout(
        [
            (row("Overview"), overview),
            (row("Traffic and latency"), traffic),
            (row("Cache and payloads"), cache),
            (row("Resources"), resources),
        ]
    )


def dashboard() -> dict:
    return {
        "uid": UID,
        "title": "TAL initialization service",
        "description": "Requests, latency, cache, payloads and GPU memory of the TAL service",
        "tags": ["tal"],
        "timezone": "utc",
        "editable": True,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "tal-prometheus"},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
