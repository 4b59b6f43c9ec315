"""The alert rules and the Grafana dashboard in deploy/observability/ are well formed, and every
query in them names metrics that Jobplane really exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from app.observability import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
#: the alerts the specification's §11.1 asks for, and the scheduler's own
WANTED_ALERTS = {"JobplaneApiDown", "JobplaneDatabaseDown", "JobplaneHighErrorRate", "JobplaneQueueBacklog",
                 "JobplaneSchedulerLeaderMissing", "JobplaneScheduleLagHigh"}
#: made by Prometheus itself, not by Jobplane
PROMETHEUS_OWN = {"up"}
_SUFFIXES = ("_bucket", "_count", "_sum")


def _exposed(client) -> set[str]:
    """The metric families in a real scrape of the web's /metrics, and the scheduler's leader metrics."""
    metrics.standby()  # what a scheduler process does at start: its leader gauge exists from then on
    text = client.get("/metrics").get_data(as_text=True)
    return set(re.findall(r"^# TYPE (\S+) ", text, re.M))


def _names_in(expr: str) -> set[str]:
    # metric names: identifiers followed by a selector, a range or an operator, not label names or functions
    without_labels = re.sub(r"\{[^}]*\}", "{}", expr)
    without_by = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_labels)
    names = set(re.findall(r"\b([a-z_][a-z0-9_:]*)\b(?!\s*\()", without_by))
    return {name for name in names if name.startswith("jobplane_") or name in PROMETHEUS_OWN}


def _unknown(names: set[str], exposed: set[str]) -> set[str]:
    def known(name: str) -> bool:
        family = next((name[: -len(s)] for s in _SUFFIXES if name.endswith(s)), name)
        return name in PROMETHEUS_OWN or name in exposed or family in exposed
    return {name for name in names if not known(name)}


def test_the_alert_rules_are_valid_and_name_exposed_metrics(app, client):
    # Given the rules file
    path = DEPLOY / "prometheus-alerts.yml"
    document = yaml.safe_load(path.read_text())
    # Then promtool accepts it, where promtool is installed
    if shutil.which("promtool"):
        result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    # And it has Prometheus's rule file structure: groups of named rules with expr, for, labels, annotations
    assert set(document) == {"groups"} and document["groups"]
    rules = []
    for group in document["groups"]:
        assert isinstance(group["name"], str) and group["rules"]
        rules += group["rules"]
    exposed = _exposed(client)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
        assert rule["labels"]["severity"] in {"critical", "high", "medium", "low"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        names = _names_in(rule["expr"])
        # every expression reads at least one metric, and only metrics that exist
        assert names, rule["alert"]
        assert not _unknown(names, exposed), (rule["alert"], _unknown(names, exposed))
    assert WANTED_ALERTS <= {rule["alert"] for rule in rules}
    assert len({rule["alert"] for rule in rules}) == len(rules)


def test_the_dashboard_loads_and_its_queries_name_exposed_metrics(app, client):
    # Given the dashboard JSON / Then it loads, with the three rows asked for
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows == ["Platform overview", "Job execution", "Scheduler"]
    exposed = _exposed(client)
    queried = set()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        # every panel queries something, and only metrics that exist
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = _names_in(target["expr"])
            assert names and not _unknown(names, exposed), (panel["title"], target["expr"], _unknown(names, exposed))
            queried |= names
    # And every Jobplane metric family appears on the dashboard
    families = {name for name in exposed if name.startswith("jobplane_")}
    shown = {next((n[: -len(s)] for s in _SUFFIXES if n.endswith(s)), n) for n in queried}
    assert families <= shown, families - shown


def test_the_name_check_catches_a_misspelt_metric(app, client):
    # Given an expression naming a metric that does not exist / Then the check reports it
    exposed = _exposed(client)
    assert _unknown(_names_in('sum(rate(jobplane_http_request_total{status=~"5.."}[5m]))'), exposed) == \
        {"jobplane_http_request_total"}
    assert _unknown(_names_in("histogram_quantile(0.95, sum by (le) (rate(jobplane_schedule_lag_seconds_bucket[5m])))"),
                    exposed) == set()
