"""Kubernetes manifests: every object (rendered overlays included) against the bundled API
schemas in strict mode, custom resources against the CRD schemas kept in k8s/crd-schemas/, and
the properties the deployment relies on."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from deploy_support import DEPLOY_DIR, K8S_DIR, load_yaml, load_yaml_documents, render_kustomization

KUBERNETES_VERSION = "1.33"  # oldest minor we support; its schemas are bundled
OVERLAYS = ("cpu", "gpu")
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
    ("kubeflow.org/v1", "PyTorchJob"): "pytorchjob-kubeflow-v1.json",
}
# Plain manifests outside kustomize's inputs (the base is checked through its overlays).
STANDALONE = [*sorted((K8S_DIR / "training").glob("*.yaml")), K8S_DIR / "secret.example.yaml"]
GPU = "nvidia.com/gpu"


@cache
def rendered(overlay: str) -> tuple[dict, ...]:
    return tuple(render_kustomization(K8S_DIR / "overlays" / overlay))


def crd_schema(resource: dict) -> dict | None:
    name = CRD_SCHEMAS.get((resource["apiVersion"], resource["kind"]))
    return json.loads((K8S_DIR / "crd-schemas" / name).read_text()) if name else None


def validate(resource: dict) -> None:
    """Strict schema validation; raises on the first problem."""
    schema = crd_schema(resource)
    if schema is None:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        return
    jsonschema.Draft202012Validator(schema).validate(resource)
    if resource["kind"] == "PyTorchJob":
        # The pod templates are core/v1 PodTemplateSpecs: check them with the real schema.
        for role, spec in resource["spec"]["pytorchReplicaSpecs"].items():
            template = {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": f"{resource['metadata']['name']}-{role.lower()}"},
                "template": spec["template"],
            }
            kubernetes_validate.validate(template, KUBERNETES_VERSION, strict=True)


def all_resources() -> list[tuple[str, dict]]:
    found = [
        (f"overlay-{o}:{r['kind']}/{r['metadata']['name']}", r)
        for o in OVERLAYS
        for r in rendered(o)
    ]
    for path in STANDALONE:
        found += [(f"{path.name}:{r['kind']}", r) for r in load_yaml_documents(path)]
    return found


def by_kind(resources: tuple[dict, ...], kind: str) -> list[dict]:
    return [r for r in resources if r["kind"] == kind]


def worker(overlay: str) -> dict:
    [deployment] = by_kind(rendered(overlay), "Deployment")
    return deployment


@pytest.mark.parametrize(
    ("label", "resource"), all_resources(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_manifest_is_valid(label: str, resource: dict) -> None:
    validate(resource)


def test_strict_validation_catches_typos() -> None:
    deployment = copy.deepcopy(worker("gpu"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    [monitor] = by_kind(rendered("gpu"), "ServiceMonitor")
    monitor = copy.deepcopy(monitor)
    monitor["spec"]["endpoints"][0]["intreval"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_has_the_whole_stack(overlay: str) -> None:
    kinds = {r["kind"] for r in rendered(overlay)}
    assert {
        "Namespace",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
        "PersistentVolumeClaim",
        "StatefulSet",
        "ConfigMap",
    } <= kinds
    assert all(
        r["metadata"].get("namespace") == "tal"
        for r in rendered(overlay)
        if r["kind"] != "Namespace"
    )


def test_gpu_overlay_requests_a_gpu_and_cpu_overlay_none() -> None:
    gpu = worker("gpu")["spec"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"][GPU] == 1
    assert any(t["key"] == GPU for t in gpu["tolerations"])
    cpu = worker("cpu")["spec"]["template"]["spec"]
    assert GPU not in cpu["containers"][0]["resources"].get("limits", {})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_configmap_selects_the_device(overlay: str) -> None:
    [settings] = [
        r
        for r in by_kind(rendered(overlay), "ConfigMap")
        if r["metadata"]["name"].startswith("tal-worker-settings")
    ]
    assert settings["data"]["TAL_DEVICE"] == {"cpu": "cpu", "gpu": "cuda"}[overlay]
    container = worker(overlay)["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"][0]["configMapRef"]["name"] == settings["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_pod_is_hardened_and_probed(overlay: str) -> None:
    pod = worker(overlay)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert (
        container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    )
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    env = {e["name"]: e for e in container["env"]}
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]
    assert mounts["metrics"]["mountPath"] == env["PROMETHEUS_MULTIPROC_DIR"]["value"]
    assert "emptyDir" in volumes["metrics"]
    assert volumes["model-store"]["persistentVolumeClaim"]["claimName"] == "tal-model-store"
    assert mounts["model-store"]["readOnly"] is True
    for key in ("TAL_API_KEYS", "TAL_ADMIN_KEYS"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "tal-api-keys"


SHUTDOWN_MARGIN_SECONDS = 5  # after the grace period: pending Redis writes, closing Redis


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_leaves_the_drain_its_time(overlay: str) -> None:
    """preStop sleep + drain delay + grace period + margin fit before the kubelet's SIGKILL,
    and the readiness probe (which sees 503 from SIGTERM on) never overlaps itself."""
    pod = worker(overlay)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    [settings] = [
        r
        for r in by_kind(rendered(overlay), "ConfigMap")
        if r["metadata"]["name"].startswith("tal-worker-settings")
    ]
    delay = float(settings["data"]["TAL_DRAIN_DELAY_SECONDS"])
    grace = float(settings["data"]["TAL_DRAIN_GRACE_SECONDS"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    budget = pod["terminationGracePeriodSeconds"]
    assert pre_stop + delay + grace + SHUTDOWN_MARGIN_SECONDS <= budget
    readiness = container["readinessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz"
    assert readiness["timeoutSeconds"] < readiness["periodSeconds"]


def test_service_monitor_scrapes_the_worker_service() -> None:
    resources = rendered("gpu")
    [service] = [r for r in by_kind(resources, "Service") if r["metadata"]["name"] == "tal-worker"]
    [monitor] = by_kind(resources, "ServiceMonitor")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["port"] in port_names
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_redis_is_an_lru_cache_without_persistence() -> None:
    resources = rendered("gpu")
    [config] = [r for r in by_kind(resources, "ConfigMap") if "redis" in r["metadata"]["name"]]
    conf = config["data"]["redis.conf"]
    # registered tasks without a TTL are state: only keys with a TTL may be evicted
    assert "maxmemory-policy volatile-lru" in conf and 'save ""' in conf
    assert "appendonly no" in conf
    [redis] = by_kind(resources, "StatefulSet")
    assert redis["spec"]["replicas"] == 1


def training(path: str) -> dict:
    [resource] = load_yaml_documents(K8S_DIR / "training" / path)
    return resource


def pod_specs(resource: dict) -> list[dict]:
    if resource["kind"] == "Job":
        return [resource["spec"]["template"]["spec"]]
    return [s["template"]["spec"] for s in resource["spec"]["pytorchReplicaSpecs"].values()]


@pytest.mark.parametrize("path", ["job.yaml", "pytorchjob.yaml"])
def test_training_writes_to_the_model_store_claim(path: str) -> None:
    for pod in pod_specs(training(path)):
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["model-store"]["persistentVolumeClaim"]["claimName"] == "tal-model-store"
        container = pod["containers"][0]
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["model-store"]["mountPath"] == "/models"
        assert not mounts["model-store"].get("readOnly", False)
        assert "/models" in container["args"] and "train" in container["args"]
        assert container["resources"]["limits"][GPU] >= 1


def test_pytorchjob_runs_torchrun_across_nodes() -> None:
    job = training("pytorchjob.yaml")
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Worker"]["replicas"] >= 1
    gpus = specs["Master"]["template"]["spec"]["containers"][0]["resources"]["limits"][GPU]
    assert job["spec"]["nprocPerNode"] == str(gpus)


def test_crd_schema_files_are_valid_schemas() -> None:
    for path in (K8S_DIR / "crd-schemas").glob("*.json"):
        jsonschema.Draft202012Validator.check_schema(json.loads(Path(path).read_text()))


def test_every_image_has_an_exact_tag() -> None:
    pods = [
        spec
        for r in rendered("gpu")
        if r["kind"] in ("Deployment", "StatefulSet")
        for spec in [r["spec"]["template"]["spec"]]
    ]
    pods += pod_specs(training("job.yaml")) + pod_specs(training("pytorchjob.yaml"))
    for pod in pods:
        for container in pod["containers"] + pod.get("initContainers", []):
            repository, _, tag = container["image"].rpartition(":")
            assert repository and tag and tag != "latest", container["image"]


def test_prometheus_rule_matches_the_compose_alert_rules() -> None:
    [rule] = by_kind(rendered("gpu"), "PrometheusRule")
    expected = load_yaml(DEPLOY_DIR / "prometheus" / "alerts.yml")["groups"]
    assert rule["spec"]["groups"] == expected, (
        "k8s/base/prometheusrule.yaml must carry the groups of deploy/prometheus/alerts.yml"
    )


def test_service_monitor_sets_the_job_the_alerts_expect() -> None:
    [monitor] = by_kind(rendered("gpu"), "ServiceMonitor")
    relabel = monitor["spec"]["endpoints"][0]["relabelings"][0]
    job = load_yaml(DEPLOY_DIR / "prometheus" / "prometheus.yml")["scrape_configs"][0]["job_name"]
    assert relabel["targetLabel"] == "job" and relabel["replacement"] == job
