"""docker/seed-model-store: copies the baked checkpoint into an empty store, never overwrites."""

from __future__ import annotations

from pathlib import Path

from deploy_support import DOCKER_DIR, run_tool

SCRIPT = DOCKER_DIR / "seed-model-store"
VERSION = Path("tal-default") / "20260101-000000"


def make_store(root: Path, content: str) -> Path:
    folder = root / VERSION
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(content)
    return root


def seed(source: Path, target: Path) -> str:
    result = run_tool(["sh", str(SCRIPT), str(source), str(target)])
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_copies_into_an_empty_store(tmp_path: Path) -> None:
    source = make_store(tmp_path / "baked", "baked")
    target = tmp_path / "models"
    target.mkdir()
    assert "copied" in seed(source, target)
    assert (target / VERSION / "manifest.json").read_text() == "baked"
    assert [p.name for p in (target / "tal-default").iterdir()] == [VERSION.name]  # no temp left


def test_keeps_what_is_there(tmp_path: Path) -> None:
    source = make_store(tmp_path / "baked", "baked")
    target = make_store(tmp_path / "models", "trained")
    assert "already present" in seed(source, target)
    assert (target / VERSION / "manifest.json").read_text() == "trained"


def test_nothing_baked_is_fine(tmp_path: Path) -> None:
    (tmp_path / "baked").mkdir()
    (tmp_path / "models").mkdir()
    assert seed(tmp_path / "baked", tmp_path / "models") == ""
