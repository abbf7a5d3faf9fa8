"""The task registry: names, metadata and errors (nothing is loaded here)."""

from __future__ import annotations

import re

import pytest

from tal.tasks import (
    SPLITS,
    SUITE_IMAGE_SIZE,
    SUITE_IN_CHANS,
    TaskInfo,
    UnknownTaskError,
    get_task_info,
    held_out_task,
    list_tasks,
    required_apt_packages,
    task_names,
)

MIN_TASKS = 4
MIN_SOURCES = 2


def test_suite_has_enough_tasks_from_enough_sources() -> None:
    tasks = list_tasks()
    assert len(tasks) >= MIN_TASKS
    assert len({info.source for info in tasks}) >= MIN_SOURCES
    assert all(isinstance(info, TaskInfo) for info in tasks)
    assert task_names() == [info.name for info in tasks]
    assert len(set(task_names())) == len(tasks)


def test_expected_tasks_are_registered() -> None:
    names = set(task_names())
    assert {
        "fashion_mnist",
        "glyphs_latin",
        "glyphs_script",
        "glyphs_digits",
        "glyphs_greek",
        "emoji_groups",
    } <= names


def test_grey_tasks_share_the_suite_format_and_one_task_is_colour() -> None:
    grey = list_tasks(image_size=SUITE_IMAGE_SIZE, in_chans=SUITE_IN_CHANS)
    assert (SUITE_IMAGE_SIZE, SUITE_IN_CHANS) == (32, 1)
    assert [t.name for t in grey] == [
        "fashion_mnist",
        "glyphs_latin",
        "glyphs_script",
        "glyphs_digits",
        "glyphs_greek",
    ]
    assert task_names(image_size=SUITE_IMAGE_SIZE, in_chans=SUITE_IN_CHANS) == [
        t.name for t in grey
    ]
    colour = list_tasks(in_chans=3)
    assert [(t.name, t.image_size) for t in colour] == [("emoji_groups", 64)]
    assert not colour[0].held_out_of_stage2
    assert len(grey) + len(colour) == len(list_tasks())
    assert list_tasks(image_size=7) == []


def test_label_spaces_differ() -> None:
    spaces = [info.class_names for info in list_tasks()]
    assert len(set(spaces)) == len(spaces)
    for info in list_tasks():
        assert len(info.class_names) == info.num_classes >= 2
        assert len(set(info.class_names)) == info.num_classes


def test_split_sizes_are_positive() -> None:
    for info in list_tasks():
        for split in SPLITS:
            assert info.split_sizes[split] > 0


def test_fashion_mnist_sizes() -> None:
    info = get_task_info("fashion_mnist")
    assert info.num_classes == 10
    assert info.split_sizes.train + info.split_sizes.val == 60_000
    assert info.split_sizes.test == 10_000


def test_exactly_one_task_is_held_out_of_stage2() -> None:
    held = [info for info in list_tasks() if info.held_out_of_stage2]
    assert len(held) == 1
    assert held_out_task() == held[0]
    assert held[0].name == "glyphs_greek"


def test_unknown_task_error_lists_known_names() -> None:
    with pytest.raises(UnknownTaskError) as excinfo:
        get_task_info("no_such_task")
    message = str(excinfo.value)
    assert "no_such_task" in message
    for name in task_names():
        assert name in message
    assert isinstance(excinfo.value, KeyError)
    assert isinstance(excinfo.value, ValueError)


def test_required_apt_packages() -> None:
    packages = required_apt_packages()
    assert "dataset-fashion-mnist" in packages
    assert any(pkg.startswith("fonts-") for pkg in packages)
    assert {"fonts-noto-color-emoji", "unicode-data"} <= set(packages)
    assert len(packages) == len(set(packages))
    for info in list_tasks():
        assert info.apt_packages
        assert set(info.apt_packages) <= set(packages)


def test_setup_and_trainer_image_install_every_required_apt_package() -> None:
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    setup = (repo / "scripts" / "setup").read_text()
    dockerfile = (repo / "docker" / "trainer.Dockerfile").read_text()
    installed = set(re.search(r"APT_PACKAGES=\((.*?)\)", setup, re.DOTALL).group(1).split())
    for package in required_apt_packages():
        assert package in installed, package
        assert f"{package}=" in dockerfile, package
