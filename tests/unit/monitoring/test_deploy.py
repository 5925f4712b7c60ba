"""The shipped Prometheus rules and Grafana dashboards read only series that exist.

A series exists when a worker's or a server's exposition has it (the registries are built
here exactly as `headrace run --metrics-port` and `headrace serve` build them) or when a
recording rule in deploy/prometheus records it; ``ALERTS`` is what Prometheus makes of
the alerting rules there. A renamed metric or a typo in a panel fails here, not on a
blank dashboard during an incident.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from headrace.monitoring.metrics import DriftMetrics, WorkerMetrics, new_registry
from headrace.monitoring.rollbacks import RollbackCollector
from headrace.registry import Registry

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
RULE_FILES = [PROMETHEUS / "recording.yml", PROMETHEUS / "alerts.yml"]

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def _sample_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every sample name a worker's or a server's ``/metrics`` can show."""
    worker = new_registry()
    WorkerMetrics(worker, pipeline="p")
    DriftMetrics(worker, pipeline="p")
    home = tmp_path_factory.mktemp("registry")
    with Registry(
        f"sqlite:///{home / 'registry.db'}",
        artifacts=f"file://{home / 'artifacts'}",
        actor="test",
        cache_dir=home / "cache",
    ) as registry:
        worker.register(RollbackCollector(registry, models=[]))
        names = _sample_names(worker)

    from headrace.runtimes.pool import ModelPool
    from headrace.serving.metrics import ServerMetrics
    from headrace.serving.metrics import new_registry as server_registry

    server = server_registry()
    ServerMetrics(server)
    ModelPool(metrics_registry=server)
    return names | _sample_names(server)


def _rules() -> Iterator[dict[str, Any]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            yield from group["rules"]


RECORDED = {rule["record"] for rule in _rules() if "record" in rule}
ALERTS = {rule["alert"] for rule in _rules() if "alert" in rule}

# -- PromQL: the metric names an expression reads ---------------------------------------

_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBER = re.compile(r"(?<![\w:])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?(?![\w:])")
_IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects (functions, keywords, labels and numbers removed)."""
    text = _STRING.sub(" ", expr)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group() in _KEYWORDS:
            continue  # a function or an aggregation
        names.add(match.group())
    return names


def test_metric_names_reads_promql_as_prometheus_would() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (pipeline, le) (rate(x_bucket{le="0.5", a=~"$v"}'
        "[$__rate_interval]))) / on (slo) group_left () (1 - y:z:ratio) * 1e6 > bool 2.5"
        ' or vector(0) and ignoring (a) w offset 5m unless max without (b) (q{c="{d}"})'
    )
    assert metric_names(expr) == {"x_bucket", "y:z:ratio", "w", "q"}


# -- the dashboards ----------------------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _expressions(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in _panels(board["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for annotation in board.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            yield f"annotation {annotation['name']}", annotation["expr"]
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, dict):
            inner = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query["query"])
            assert inner is not None, f"variable {variable['name']}: {query['query']}"
            yield f"variable {variable['name']}", inner.group(1)


def test_there_are_three_dashboards() -> None:
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS}
    assert titles == {"headrace: executive", "headrace: on-call", "headrace: debug"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_reads_only_series_that_exist(path: Path, exposed: set[str]) -> None:
    board = json.loads(path.read_text())
    known = exposed | RECORDED | ({"ALERTS"} if ALERTS else set())
    unknown = {
        (where, name)
        for where, expr in _expressions(board)
        for name in metric_names(expr)
        if name not in known
    }
    assert not unknown, f"{path.name} reads series nobody exports: {sorted(unknown)}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_layout_and_variables(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["uid"] == path.stem
    panels = list(_panels(board["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    defined = {v["name"] for v in board["templating"]["list"]}
    builtin = {"__rate_interval", "__range", "__interval"}
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"{panel['title']}: no query"
        assert panel["description"], f"{panel['title']}: say what it shows"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            used = set(re.findall(r"\$(\w+)", target["expr"]))
            assert used <= defined | builtin, f"{panel['title']}: undefined {used - defined}"


# -- the rules ---------------------------------------------------------------------------


def test_rules_read_only_series_that_exist(exposed: set[str]) -> None:
    known = exposed | RECORDED
    unknown = {
        (rule.get("record") or rule.get("alert"), name)
        for rule in _rules()
        for name in metric_names(rule["expr"])
        if name not in known
    }
    assert not unknown, f"rules read series nobody exports: {sorted(unknown)}"


def test_every_rule_appears_in_a_promtool_test() -> None:
    tests = "\n".join(p.read_text() for p in sorted((PROMETHEUS / "tests").glob("*.yml")))
    untested = sorted(name for name in RECORDED | ALERTS if name not in tests)
    assert not untested, f"no promtool test mentions {untested}"


def test_the_required_alerts_are_there() -> None:
    assert {
        "HeadraceErrorBudgetBurnFast",
        "HeadraceErrorBudgetBurnSlow",
        "HeadracePipelineLatencyHigh",
        "HeadraceServingLatencyHigh",
        "HeadracePipelineErrorRateHigh",
        "HeadraceServingErrorRateHigh",
        "HeadraceConsumerLagGrowing",
        "HeadraceDriftDetected",
        "HeadraceRolledBack",
    } <= ALERTS
