"""The ``tal`` command line. Each command group lives in ``tal.cli.<name>``."""

from __future__ import annotations

import argparse
import importlib
import os

THP_ENV = "THP_MEM_ALLOC_ENABLE"  # PyTorch: huge-page backed CPU tensors (faster prediction)

COMMAND_MODULES = (
    "tal.cli.predict",
    "tal.cli.store",
    "tal.cli.train",
    "tal.cli.evaluate",
    "tal.cli.serve",
    "tal.cli.init",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tal", description="Task-Aware Learngene tools")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault(THP_ENV, "1")
    args = build_parser().parse_args(argv)
    return args.func(args)
