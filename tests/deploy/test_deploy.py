"""Deployment artefacts under deploy/: Prometheus rules and config, Grafana dashboard, compose, Kubernetes.

- promtool (Debian package `prometheus`) checks the rules, runs their unit tests and checks the
  Prometheus config. A missing promtool skips locally and fails in CI (CI=true).
- Every metric named in the dashboard and the alert rules must be one the service exports, read from
  a live `broker.observability.metrics.Metrics()` registry, with the labels and label values it really has.
- `docker compose config` runs when a Docker client with the compose plugin is there; it is optional
  everywhere, CI included (no Docker on the CI machine). The compose file is checked structurally
  in any case, and its config is loaded by the real settings model.
- The Kubernetes manifests get structural checks in Python (no cluster and no JSON schemas offline):
  kinds and names, probes, selectors, Secret references, the PrometheusRule matching alerts.yml.
  `kubectl kustomize` renders them when kubectl is installed (optional).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from broker.config.settings import Settings, load_settings
from broker.domain.deadlines import DEADLINE_NAMES, SlaPolicy, compute_deadlines
from broker.domain.workdays import is_working_day
from broker.observability.metrics import Metrics
from broker.transport.topology import topology_definitions
from schemas.enums import Kind, Urgency
from tests.helpers.app import IN_CI

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_TOML = DEPLOY / "handoff.compose.toml"
DEFINITIONS = DEPLOY / "rabbitmq" / "definitions.json"
ACCESS = DEPLOY / "rabbitmq" / "access.compose.json"
K8S = DEPLOY / "k8s"

# Metrics that are not the service's own but that the rules and the dashboard may use.
EXTERNAL_METRICS = {"up"}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}
# The values the service puts into its enumerated labels.
LABEL_VALUES = {
    "outcome": {"delivered", "retried", "failed"},
    "deadline": set(DEADLINE_NAMES),
    "urgency": {u.value for u in Urgency},
    "kind": {k.value for k in Kind},
    "channel": {"api", "xml"},
    "result": {"settled", "republished"},
}


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def _yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


# --- (a) promtool ----------------------------------------------------------------------------------


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if IN_CI:
            pytest.fail("promtool is required in CI (CI=true): apt-get install -y prometheus")
        pytest.skip("promtool is not installed (Debian package `prometheus`)")
    return path


@pytest.mark.parametrize(("verb", "path"), [
    (("check", "rules"), ALERTS),
    (("test", "rules"), ALERTS_TEST),
    (("check", "config"), PROMETHEUS_CONFIG),
], ids=["check-rules", "test-rules", "check-config"])
def test_promtool(verb: tuple[str, str], path: Path) -> None:
    result = subprocess.run([_promtool(), *verb, str(path)], capture_output=True, text=True,
                            timeout=300, cwd=ROOT, check=False)
    assert result.returncode == 0, f"promtool {' '.join(verb)} {path.name}:\n{result.stdout}\n{result.stderr}"


# --- (b) metric names, labels and values ---------------------------------------------------------


def _exported_samples() -> dict[str, set[str]]:
    """Sample name -> label names, as a live registry exposes them (histogram and counter suffixes
    included). Every labelled child is created once so that its samples show."""
    metrics = Metrics()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            label_names = value._labelnames
            child = value.labels(*(["probe"] * len(label_names))) if label_names else value
            if hasattr(child, "inc"):
                child.inc()
            else:
                child.observe(1.0)
    snapshot = metrics.gauges.snapshot
    snapshot.unanswered[("08", "urgent")] = 1
    snapshot.overdue[("08", "acknowledge")] = 1
    snapshot.oldest_unanswered["08"] = 60.0
    samples: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(k for k in sample.labels if k != "le")
    return samples


EXPORTED = _exported_samples()

_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_NAME_MATCHER = re.compile(r'__name__\s*=~?\s*"([^"]*)"')
_SELECTOR = re.compile(r"(?<![\w:])([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACES = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)")
_KEYWORDS = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
             "group_right", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords and labels left out)."""
    names = {n for m in _NAME_MATCHER.finditer(expr) for n in m.group(1).split("|")}
    rest = _VARIABLE.sub("", expr)
    for pattern in (_STRING, _BRACES, _RANGE, _GROUPING, _OFFSET):
        rest = pattern.sub(" ", rest)
    for m in _IDENT.finditer(rest):
        if m.group(1).lower() in _KEYWORDS or rest[m.end():].lstrip().startswith("("):
            continue
        names.add(m.group(1))
    return names


def check_expression(expr: str) -> list[str]:
    """Problems with one expression: unknown metrics, labels or label values."""
    problems = []
    names = metric_names(expr)
    unknown = names - EXPORTED.keys() - EXTERNAL_METRICS
    if unknown:
        problems.append(f"not exported by the service: {sorted(unknown)}")
    ours = names & EXPORTED.keys()
    for m in _SELECTOR.finditer(expr):
        if m.group(1) not in EXPORTED:
            continue
        for label, _op, value in _MATCHER.findall(m.group(2)):
            if label == "__name__":
                continue
            if label not in EXPORTED[m.group(1)] | TARGET_LABELS:
                problems.append(f"{m.group(1)} has no label {label!r}")
            elif label in LABEL_VALUES and "$" not in value:
                bad = set(value.split("|")) - LABEL_VALUES[label]
                if bad:
                    problems.append(f"{m.group(1)}{{{label}}} never has the value(s) {sorted(bad)}")
    if ours:
        allowed = set().union(*(EXPORTED[n] for n in ours)) | TARGET_LABELS | {"le"}
        for m in _GROUPING.finditer(_VARIABLE.sub("", expr)):
            grouped = {g.strip() for g in m.group(1).split(",") if g.strip()}
            if grouped - allowed:
                problems.append(f"grouping by unknown label(s) {sorted(grouped - allowed)}")
    return problems


LEDGER_GAUGES = ("handoff_unanswered_cases", "handoff_overdue_cases", "handoff_outbox_pending",
                 "handoff_oldest_unanswered_age_seconds")


def gauges_taken_by_max(expr: str) -> bool:
    """Every replica reports the same ledger gauges: each use must go through max() first, so that
    a sum() over replicas cannot double count."""
    return all(re.search(r"max(\s+by\s*\([^)]*\))?\s*\(\s*" + gauge, expr)
               for gauge in LEDGER_GAUGES if re.search(gauge + r"\b", expr))


def test_metric_name_extraction() -> None:
    expr = ('sum by (area) (rate(handoff_deliveries_total{outcome=~"retried|failed"}[15m])) '
            '/ on () group_left max(handoff_outbox_pending offset 5m) and hour() >= 8 '
            '+ histogram_quantile(0.9, sum by (le) (rate(handoff_delivery_latency_seconds_bucket[$window])))')
    assert metric_names(expr) == {"handoff_deliveries_total", "handoff_outbox_pending",
                                  "handoff_delivery_latency_seconds_bucket"}
    assert check_expression('handoff_deliveries_total{outcome="failure"}')
    assert check_expression('handoff_deliveries_total{areas="08"}')
    assert check_expression("handoff_referrals_total")
    assert check_expression("max by (area) (handoff_outbox_pending)")
    assert not check_expression('max by (area, urgency) (handoff_unanswered_cases{area=~"$area"})')
    assert not gauges_taken_by_max("sum(handoff_outbox_pending)")
    assert gauges_taken_by_max('sum(max by (area) (handoff_overdue_cases{deadline="decision"}))')


def test_every_design_metric_is_exported() -> None:
    """DESIGN § 8 names these; the checks below rely on the registry really having them."""
    assert {
        "handoff_referrals_received_total", "handoff_validation_rejections_total", "handoff_deliveries_total",
        "handoff_delivery_latency_seconds_bucket", "handoff_delivery_latency_seconds_sum",
        "handoff_delivery_latency_seconds_count", "handoff_first_reply_latency_seconds_bucket",
        "handoff_unanswered_cases", "handoff_overdue_cases", "handoff_oldest_unanswered_age_seconds",
        "handoff_dead_letters_total", "handoff_outbox_pending",
    } <= EXPORTED.keys()
    assert EXPORTED["handoff_deliveries_total"] == {"area", "outcome"}
    assert EXPORTED["handoff_overdue_cases"] == {"area", "deadline"}


def _dashboard() -> dict[str, Any]:
    with DASHBOARD.open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _dashboard_expressions() -> list[tuple[str, str]]:
    board = _dashboard()
    exprs = []
    for panel in board["panels"]:
        for tgt in panel.get("targets", []):
            exprs.append((panel["title"], tgt["expr"]))
    for var in board["templating"]["list"]:
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else ""
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", text)
        if m:
            exprs.append((f"variable {var['name']}", m.group(1)))
            for name in metric_names(m.group(1)):
                assert m.group(2) in EXPORTED.get(name, set()), f"{name} has no label {m.group(2)}"
    return exprs


def test_dashboard_uses_only_exported_metrics() -> None:
    exprs = _dashboard_expressions()
    assert len(exprs) > 20
    problems = [f"{title}: {expr}\n    {p}" for title, expr in exprs for p in check_expression(expr)]
    assert not problems, "\n".join(problems)
    # And the other way round: every metric family the service exports is on the board.
    used = set().union(*(metric_names(e) for _, e in exprs))
    families = {re.sub(r"_(bucket|sum|count|created)$", "", n) for n in EXPORTED if not n.endswith("_created")}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert families <= shown, f"not on the dashboard: {sorted(families - shown)}"


# Grafana's variables, replaced by values of the right shape so that promtool can parse the queries.
_GRAFANA_VARIABLES = {"__rate_interval": "2m", "__range": "1d", "__interval": "1m", "window": "6h",
                      "area": ".+"}


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query, checked as the expression of a recording rule."""
    promtool = _promtool()
    rules = []
    for i, (_title, expr) in enumerate(_dashboard_expressions()):
        concrete = re.sub(r"\$\{?(\w+)\}?", lambda m: _GRAFANA_VARIABLES[m.group(1)], expr)
        rules.append({"record": f"dashboard:query_{i}", "expr": concrete})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), "utf-8")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_model() -> None:
    board = _dashboard()
    assert board["uid"] == "kela-handoff" and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["area"]["multi"] and variables["area"]["includeAll"]
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    repeated = [p for p in board["panels"] if p.get("repeat") == "area"]
    assert repeated, "the per-area row must repeat over $area"
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] in ("row", "text"):
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for tgt in panel["targets"]:
            assert tgt["datasource"]["uid"] == "${datasource}", panel["title"]
    for panel in board["panels"]:
        for tgt in panel.get("targets", []):
            assert gauges_taken_by_max(tgt["expr"]), f"{panel['title']}: {tgt['expr']}"


def _rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    return [rule for group in _yaml(path)["groups"] for rule in group["rules"]]


def test_alert_rules_use_only_exported_metrics() -> None:
    problems = [f"{r['alert']}: {p}" for r in _rules() for p in check_expression(r["expr"])]
    problems += [f"{r['alert']}: a ledger gauge not taken by max()" for r in _rules()
                 if not gauges_taken_by_max(r["expr"])]
    assert not problems, "\n".join(problems)


def test_alert_rules_are_complete() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), rule["alert"]
    # Every alert has a firing case and a silent case in the promtool unit tests.
    fires: set[str] = set()
    silent: set[str] = set()
    for case in _yaml(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    assert set(names) <= fires, f"no firing test: {sorted(set(names) - fires)}"
    assert set(names) <= silent, f"no silent test: {sorted(set(names) - silent)}"


def test_no_personal_data_in_alerts_or_dashboard() -> None:
    """Alerts and panels speak of areas, kinds, deadlines and reasons; never of people or cases."""
    texts = [json.dumps(_dashboard()), ALERTS.read_text("utf-8")]
    for text in texts:
        for word in ("personal_id", "referral_id", "kela_reference", "first_names", "last_name", "phone"):
            assert word not in text
        # Nothing that looks like a henkilotunnus (DDMMYY, century sign, individual number, check).
        assert not re.search(r"\b\d{6}[-+A-FU-Y]\d{3}[0-9A-Y]\b", text)


def _threshold(alert: str, pattern: str) -> float:
    rule = next(r for r in _rules() if r["alert"] == alert)
    m = re.search(pattern, rule["expr"])
    assert m, rule["expr"]
    return float(m.group(1))


def test_unanswered_thresholds_match_the_sla_policy() -> None:
    """The seconds thresholds of the unanswered-age alerts, against the deadlines the SLA clock
    computes with the default policy (which the deploy configs keep)."""
    helsinki = ZoneInfo("Europe/Helsinki")
    policy = SlaPolicy()
    past_deadline = _threshold("HandoffUnansweredPastDeadline", r"age_seconds\)\s*>\s*(\d+)")
    urgent = _threshold("HandoffUrgentReferralUnanswered", r"age_seconds\)\s*>\s*(\d+)")
    day = dt.date(2026, 1, 1)
    longest_ordinary = 0.0
    shortest_urgent = float("inf")
    while day < dt.date(2028, 1, 1):
        start = dt.datetime.combine(day, dt.time(0, 0), tzinfo=helsinki)
        ack = compute_deadlines(start, Kind.SUPPORT_NEED.value, Urgency.NORMAL.value, policy)[0]
        week = [day + dt.timedelta(days=i) for i in range(1, 9)]
        if all(is_working_day(d) or d.weekday() >= 5 for d in week):  # no public holiday ahead
            longest_ordinary = max(longest_ordinary, (ack.due_at - start).total_seconds())
        late = dt.datetime.combine(day, dt.time.max, tzinfo=helsinki)
        urgent_ack = compute_deadlines(late, Kind.URGENT_ASSISTANCE.value, Urgency.URGENT.value, policy)[0]
        shortest_urgent = min(shortest_urgent, (urgent_ack.due_at - late).total_seconds())
        day += dt.timedelta(days=1)
    # Past the threshold, a case has missed the normal deadline in every week without holidays ...
    assert past_deadline >= longest_ordinary
    # ... and no urgent case can be overdue before the urgent threshold.
    assert urgent >= shortest_urgent
    assert urgent <= shortest_urgent + 1


def test_prometheus_config_scrapes_the_jobs_the_rules_use() -> None:
    config = _yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["handoff"]["metrics_path"] == "/metrics"
    assert jobs["rabbitmq"]["static_configs"][0]["targets"] == ["rabbitmq:15692"]
    assert config["rule_files"] == ["alerts.yml"]
    used = set(re.findall(r'job="(\w+)"', ALERTS.read_text("utf-8")))
    assert used <= jobs.keys()


# --- (c) docker compose ----------------------------------------------------------------------------


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
    return [docker, "compose"] if probe.returncode == 0 else None


def test_docker_compose_config() -> None:
    """Optional everywhere: neither this machine nor CI has Docker's compose plugin."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no `docker compose` (Docker client with the compose plugin) on this machine")
    result = subprocess.run([*cli, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True,
                            text=True, timeout=120, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr


_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = _yaml(COMPOSE)
    return data


def _compose_env(service: str) -> dict[str, str]:
    """The service's environment as compose would pass it, with ${VAR:-default} at its default."""
    env = _compose()["services"][service]["environment"]
    return {k: _DEFAULTED.sub(lambda m: m.group(2), str(v)) for k, v in env.items()}


def test_compose_structure() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"rabbitmq", "postgres", "handoff-1", "handoff-2", "prometheus", "grafana"} <= services.keys()
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3.13-management")
    assert services["postgres"]["image"] == "postgres:16"
    for name in ("handoff-1", "handoff-2"):
        svc = services[name]
        env = _compose_env(name)
        assert {"HANDOFF_STORE_URL", "HANDOFF_TRANSPORT_URL", "HANDOFF_CONFIG"} <= env.keys()
        assert f"./{COMPOSE_TOML.name}:{env['HANDOFF_CONFIG']}:ro" in svc["volumes"]
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert svc["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
    # Every bind-mounted file or directory exists.
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
    # Ports only on the loopback interface.
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
    # Prometheus scrapes exactly the compose replicas.
    targets = _yaml(PROMETHEUS_CONFIG)["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["handoff-1:8080", "handoff-2:8080"]
    # RabbitMQ imports the generated topology after the vhost and users.
    mounts = services["rabbitmq"]["volumes"]
    assert "./rabbitmq/access.compose.json:/etc/rabbitmq/definitions.d/00-access.json:ro" in mounts
    assert "./rabbitmq/definitions.json:/etc/rabbitmq/definitions.d/10-topology.json:ro" in mounts
    conf = (DEPLOY / "rabbitmq" / "handoff.conf").read_text("utf-8")
    assert re.search(r"^load_definitions\s*=\s*/etc/rabbitmq/definitions\.d\s*$", conf, re.M)
    plugins = (DEPLOY / "rabbitmq" / "enabled_plugins").read_text("utf-8")
    assert "rabbitmq_prometheus" in plugins and "rabbitmq_management" in plugins


def _compose_settings() -> Settings:
    return load_settings(COMPOSE_TOML, env=_compose_env("handoff-1"))


def test_compose_config_loads_and_matches_the_imported_topology() -> None:
    settings = _compose_settings()
    assert settings.store.url.startswith("postgresql+asyncpg://")
    assert settings.transport.url.startswith("amqp://")
    assert settings.server.host == "0.0.0.0" and settings.server.port == 8080
    assert not settings.demo_parties
    assert settings.sla == SlaPolicy()
    # RabbitMQ refuses to redeclare a queue with other arguments: the topology the replicas declare
    # must be the one RabbitMQ imported at boot.
    expected = topology_definitions(settings.intake_areas, delivery_limit=settings.transport.delivery_limit,
                                    retry_tiers_s=settings.transport.retry_tiers_s)
    with DEFINITIONS.open(encoding="utf-8") as fh:
        assert json.load(fh) == expected


def _rabbit_password_ok(password_hash: str, password: str) -> bool:
    raw = base64.b64decode(password_hash)
    salt, digest = raw[:4], raw[4:]
    return hashlib.sha256(salt + password.encode()).digest() == digest


def _permissions() -> dict[str, str]:
    with ACCESS.open(encoding="utf-8") as fh:
        access = json.load(fh)
    return next(p for p in access["permissions"] if p["user"] == "handoff")


def test_compose_rabbitmq_user_can_use_the_topology() -> None:
    with ACCESS.open(encoding="utf-8") as fh:
        access = json.load(fh)
    assert {v["name"] for v in access["vhosts"]} == {"/"}
    url = urlsplit(_compose_settings().transport.url)
    user = next(u for u in access["users"] if u["name"] == url.username)
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert _rabbit_password_ok(user["password_hash"], url.password or "")
    perms = _permissions()
    with DEFINITIONS.open(encoding="utf-8") as fh:
        topology = json.load(fh)
    queues = [q["name"] for q in topology["queues"]]
    exchanges = [e["name"] for e in topology["exchanges"]]
    for name in queues + exchanges:
        assert re.search(perms["configure"], name), name
    for name in [*exchanges, "amq.default"]:  # the transport also publishes to the default exchange
        assert re.search(perms["write"], name), name
    for name in queues + exchanges:
        assert re.search(perms["read"], name), name
    assert not re.search(perms["configure"], "amq.gen-x") and not re.search(perms["write"], "other.q")


# --- (d) Kubernetes --------------------------------------------------------------------------------


def _k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in sorted(K8S.glob("*.yaml")) for doc in _yaml_docs(path)]


def _k8s(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [doc for path, doc in _k8s_docs() if doc["kind"] == kind and path.name != "secret.template.yaml"
             and (name is None or doc["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def test_k8s_every_document_is_well_formed() -> None:
    docs = _k8s_docs()
    assert docs
    for path, doc in docs:
        assert (isinstance(doc.get("apiVersion"), str) and "/" in doc["apiVersion"]) or doc["apiVersion"] == "v1"
        assert isinstance(doc.get("kind"), str), path
        if doc["kind"] != "Kustomization":
            assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} without a name"


def test_k8s_kustomization_lists_every_manifest() -> None:
    kustomization = _yaml(K8S / "kustomization.yaml")
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.template.yaml"}
    assert set(kustomization["resources"]) == manifests
    assert "secret.template.yaml" not in kustomization["resources"]
    generated = {g["name"] for g in kustomization["configMapGenerator"]}
    assert generated == {"handoff-config"}
    for gen in kustomization["configMapGenerator"]:
        for file in gen["files"]:
            assert (K8S / file.split("=")[-1]).is_file()


def test_k8s_operators_resources() -> None:
    rabbit = _k8s("RabbitmqCluster")
    assert rabbit["apiVersion"] == "rabbitmq.com/v1beta1"
    assert rabbit["spec"]["replicas"] == 3
    assert "cluster_partition_handling = pause_minority" in rabbit["spec"]["rabbitmq"]["additionalConfig"]
    pg = _k8s("Cluster")
    assert pg["apiVersion"] == "postgresql.cnpg.io/v1"
    assert pg["spec"]["instances"] == 3
    permission = _k8s("Permission")
    k8s_perms = permission["spec"]["permissions"]
    compose_perms = _permissions()
    assert {k: k8s_perms[k] for k in ("configure", "write", "read")} == \
        {k: compose_perms[k] for k in ("configure", "write", "read")}


def _secret_keys() -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for doc in _yaml_docs(K8S / "secret.template.yaml"):
        assert doc["kind"] == "Secret"
        for key, value in doc["stringData"].items():
            keys.setdefault(doc["metadata"]["name"], set()).add(key)
            if key != "username":
                assert value == "CHANGE-ME", f"{doc['metadata']['name']}.{key} must stay a placeholder"
    return keys


def test_k8s_deployment() -> None:
    deployment = _k8s("Deployment", "handoff")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["enableServiceLinks"] is False
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports, probe
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= container["resources"].keys()
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert volumes[mounts["/etc/handoff"]]["configMap"]["name"] == "handoff-config"
    images = {i["name"] for i in _yaml(K8S / "kustomization.yaml")["images"]}
    assert container["image"] in images
    # Environment: HANDOFF_CONFIG at the mounted file; the URLs built only from variables defined
    # before them (Kubernetes expands $(VAR) only then), from Secrets the template provides.
    secrets = _secret_keys()
    defined: list[str] = []
    for var in container["env"]:
        for ref in re.findall(r"\$\((\w+)\)", var.get("value", "")):
            assert ref in defined, f"{var['name']} uses $({ref}) before it is defined"
        key_ref = var.get("valueFrom", {}).get("secretKeyRef")
        if key_ref:
            assert key_ref["key"] in secrets[key_ref["name"]], key_ref
        defined.append(var["name"])
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert env["HANDOFF_CONFIG"] == "/etc/handoff/handoff.toml"
    assert env["HANDOFF_STORE_URL"].startswith("postgresql+asyncpg://")
    assert env["HANDOFF_TRANSPORT_URL"].startswith("amqp://")
    for source in container.get("envFrom", []):
        assert source["secretRef"]["name"] in secrets
    pg = _k8s("Cluster")
    assert pg["spec"]["bootstrap"]["initdb"]["secret"]["name"] in secrets
    assert _k8s("User")["spec"]["importCredentialsSecret"]["name"] in secrets


def test_k8s_service_pdb_and_monitoring_select_the_pods() -> None:
    deployment = _k8s("Deployment", "handoff")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    pdb = _k8s("PodDisruptionBudget", "handoff")
    assert pdb["spec"]["minAvailable"] == 2
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = _k8s("Service", "handoff")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    monitor = _k8s("ServiceMonitor", "handoff")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
    # The job label Prometheus gives these targets is the one the alert rules select.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "handoff"


def test_k8s_prometheusrule_matches_alerts_yml() -> None:
    rule = _k8s("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == _yaml(ALERTS)["groups"]


def test_k8s_config_loads_without_demo_parties() -> None:
    env = {"HANDOFF_STORE_URL": "postgresql+asyncpg://u:p@handoff-db-rw:5432/handoff",
           "HANDOFF_TRANSPORT_URL": "amqp://u:p@handoff-rabbitmq:5672/"}
    settings = load_settings(K8S / "handoff.toml", env=env)
    assert not settings.demo_parties, "without [[parties]] the public demo tokens would be accepted"
    assert settings.server.host == "0.0.0.0"
    assert settings.sla == SlaPolicy()
    with (K8S / "handoff.toml").open("rb") as fh:
        raw = tomllib.load(fh)
    assert "password" not in json.dumps(raw).lower()


def test_kustomize_build() -> None:
    """Optional: renders the kustomization when kubectl is installed (no cluster needed)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert all(d["metadata"].get("namespace") == "kela-handoff" for d in docs if d["kind"] != "Namespace")
    config_maps = [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    mounted = {v["configMap"]["name"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "configMap" in v}
    assert mounted == set(config_maps)  # the hashed name is rewritten into the Deployment


# --- the image -------------------------------------------------------------------------------------


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text("utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and not user[-1].startswith(("root", "0")), "the image must run as a non-root user"
    assert re.search(r"^EXPOSE 8080$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*", text, re.M) and "/healthz" in text
    assert re.search(r'^CMD \["handoff", "run"\]$', text, re.M)


def test_dead_letter_policy_is_the_same_in_definitions_and_k8s() -> None:
    """At-least-once dead-lettering must hold wherever the topology is deployed."""
    with DEFINITIONS.open(encoding="utf-8") as fh:
        (policy,) = json.load(fh)["policies"]
    (k8s,) = _yaml_docs(K8S / "rabbitmq-policy.yaml")
    spec = k8s["spec"]
    assert spec["name"] == policy["name"]
    assert spec["pattern"] == policy["pattern"]
    assert spec["applyTo"] == policy["apply-to"] == "queues"
    assert spec["definition"] == policy["definition"] == {
        "dead-letter-strategy": "at-least-once", "overflow": "reject-publish"}
    assert re.fullmatch(policy["pattern"], "handoff.intake.08")
    assert re.fullmatch(policy["pattern"], "handoff.kela.updates")
    assert not re.fullmatch(policy["pattern"], "handoff.dead")
    tiers = [q for q in json.load(DEFINITIONS.open(encoding="utf-8"))["queues"]
             if q["name"].startswith("handoff.delay.")]
    assert tiers and all(q["arguments"]["x-dead-letter-strategy"] == "at-least-once"
                         and q["arguments"]["x-overflow"] == "reject-publish" for q in tiers)
