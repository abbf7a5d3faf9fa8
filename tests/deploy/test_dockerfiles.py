"""The Dockerfiles: hadolint-clean, and the properties the deployment relies on."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from deploy_support import DOCKER_DIR, REPO, run_tool, tool
from packaging.requirements import Requirement

DOCKERFILES = sorted(DOCKER_DIR.glob("*.Dockerfile"))
PINNED_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]+\])?==[^=\s]+$")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_both_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} == {"worker.Dockerfile", "trainer.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    # Any finding (warnings and infos too) fails: the threshold is "style".
    result = run_tool([tool("hadolint"), "--failure-threshold", "style", str(dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_as_numeric_non_root_user(dockerfile: Path) -> None:
    users = [args for keyword, args in instructions(dockerfile) if keyword == "USER"]
    assert users, "no USER instruction"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"last USER is {users[-1]!r}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_is_exec_form(dockerfile: Path) -> None:
    for keyword, args in instructions(dockerfile):
        if keyword in ("ENTRYPOINT", "CMD"):
            assert args.startswith("["), f"{keyword} {args} is in shell form"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_and_torch_are_pinned(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    bases = [
        args for keyword, args in steps if keyword == "ARG" and args.startswith("PYTHON_IMAGE")
    ]
    assert bases and re.fullmatch(r"PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+", bases[0])
    assert ("ARG", "TORCH_VERSION=2.14.1") in steps
    assert ("ARG", "TORCHVISION_VERSION=0.29.1") in steps
    assert any("-c constraints.txt" in args for keyword, args in steps if keyword == "RUN")


def test_worker_healthcheck_probes_healthz() -> None:
    checks = [
        args
        for keyword, args in instructions(DOCKER_DIR / "worker.Dockerfile")
        if keyword == "HEALTHCHECK"
    ]
    assert len(checks) == 1 and "/healthz" in checks[0] and "CMD [" in checks[0]


def test_worker_mounts_model_store_with_baked_default() -> None:
    steps = instructions(DOCKER_DIR / "worker.Dockerfile")
    assert ("VOLUME", '["/models"]') in steps
    assert ("COPY", "model_store/ /opt/tal/default-store/") in steps
    env = " ".join(args for keyword, args in steps if keyword == "ENV")
    assert "TAL_MODEL_STORE=/models" in env
    assert "PROMETHEUS_MULTIPROC_DIR=" in env


def test_trainer_runs_under_torchrun_into_the_store() -> None:
    steps = instructions(DOCKER_DIR / "trainer.Dockerfile")
    assert ("ENTRYPOINT", '["torchrun"]') in steps
    command = next(args for keyword, args in steps if keyword == "CMD")
    assert '"tal.cli", "train"' in command and '"--store", "/models"' in command


def test_constraints_pin_every_dependency_exactly() -> None:
    lines = [line.strip() for line in (DOCKER_DIR / "constraints.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    loose = [line for line in requirements if not PINNED_REQUIREMENT.match(line)]
    assert not loose, f"not pinned with ==: {loose}"
    assert "torch==2.14.1" in requirements


def test_dockerignore_keeps_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "ignore everything, then list what the images need"
    for needed in ("!pyproject.toml", "!tal/", "!service/", "!model_store/", "!docker/"):
        assert needed in patterns


def test_constraints_cover_the_project_requirements() -> None:
    """A dependency added to pyproject.toml needs a pin: run docker/freeze_constraints.py."""
    with (REPO / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    wanted = project["dependencies"] + [
        req
        for extra in ("models", "service", "text")
        for req in project["optional-dependencies"][extra]
    ]
    pinned = {
        canonical(line.split("==")[0].split("[")[0])
        for line in (DOCKER_DIR / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    missing = {canonical(Requirement(req).name) for req in wanted} - pinned
    assert not missing, f"not in docker/constraints.txt: {sorted(missing)}"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
