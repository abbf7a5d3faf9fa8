"""``tal eval``: train or load every method, evaluate, write docs/results.{md,json} + plots."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

TEXT_REPORT = "text_results.md"
TEXT_RESULTS = "text_results.json"


def _cmd_eval_text(args: argparse.Namespace) -> int:
    """``tal eval --modality text``: the GPT-2 comparison -> docs/text_results.{md,json}."""
    from tal.evaluation.text import run_text_evaluation, train_text_methods
    from tal.evaluation.text_config import TEXT_QUICK, TextEvalConfig
    from tal.evaluation.text_report import read_text_results, write_text_report
    from tal.training.config import ConfigError, load_config
    from tal.training.distributed import init_distributed

    overrides = {
        "run_dir": args.run_dir,
        "ancestry_run": args.ancestry_run,
        "output_dir": args.output_dir,
        "epochs": args.epochs,
        "stage1_steps": args.stage1_steps,
        "stage2_steps": args.stage2_steps,
        "methods": tuple(args.methods) if args.methods else None,
    }
    if args.quick:
        overrides = {**TEXT_QUICK, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        config = load_config(TextEvalConfig, args.config, overrides)
        markdown = config.output_dir / TEXT_REPORT
        json_path = config.output_dir / TEXT_RESULTS
        if args.report_only:
            results = read_text_results(json_path)
        else:
            if args.fresh and config.run_dir.exists():
                shutil.rmtree(config.run_dir)
            if args.train_only:
                _, seconds = train_text_methods(config, init_distributed("cpu"))
                print(f"trained {', '.join(seconds)} in {config.run_dir}")
                return 0
            results = run_text_evaluation(config, init_distributed("cpu"))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_text_report(results, markdown, json_path)
    print(f"wrote {markdown} and {json_path}")
    return 0


def _cmd_eval_user_scale(args: argparse.Namespace) -> int:
    """``tal eval --user-scale``: the shipped learngene and the training-free baselines at
    ViT-S/B shapes -> docs/user_scale.{md,json} and a block of docs/results.md."""
    from tal.evaluation.user_scale import (
        USER_SCALE_QUICK,
        UserScaleConfig,
        remeasure,
        run_user_scale,
    )
    from tal.evaluation.user_scale_report import read_user_scale, write_user_scale_report
    from tal.training.config import ConfigError, load_config

    overrides: dict = {"output_dir": args.output_dir, "checkpoint": args.checkpoint}
    if args.quick:
        overrides = {**USER_SCALE_QUICK, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        config = load_config(UserScaleConfig, args.config, overrides)
        if args.report_only:
            results = read_user_scale(config.output_dir / "user_scale.json")
        elif args.remeasure:
            earlier = read_user_scale(config.output_dir / "user_scale.json")
            methods = tuple(args.remeasure_methods) if args.remeasure_methods else None
            results = remeasure(earlier, tuple(args.remeasure), methods, args.remeasure_finetuned)
        else:
            results = run_user_scale(config, config.output_dir / "user_scale.partial.json")
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    written = write_user_scale_report(results, config.output_dir)
    (config.output_dir / "user_scale.partial.json").unlink(missing_ok=True)
    print("wrote " + ", ".join(map(str, written)))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.user_scale:
        return _cmd_eval_user_scale(args)
    if args.modality == "text":
        return _cmd_eval_text(args)
    from tal.evaluation.config import QUICK, EvalConfig
    from tal.evaluation.report import read_results, write_report
    from tal.evaluation.runner import clean_run, output_paths, run_evaluation, train_methods
    from tal.training.config import ConfigError, load_config
    from tal.training.distributed import init_distributed

    overrides = {
        "run_dir": args.run_dir,
        "ancestry_run": args.ancestry_run,
        "output_dir": args.output_dir,
        "epochs": args.epochs,
        "recipe_warmup_epochs": args.warmup_epochs,
        "stage1_steps": args.stage1_steps,
        "stage2_steps": args.stage2_steps,
        "methods": tuple(args.methods) if args.methods else None,
    }
    if args.quick:
        overrides = {**QUICK, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        config = load_config(EvalConfig, args.config, overrides)
        markdown, json_path = output_paths(config)
        if args.compare is not None:
            return _print_comparison(args.compare, json_path)
        if args.report_only:
            results = read_results(json_path)
        elif args.add:
            results = _measure_and_add(args, json_path)
        else:
            if args.fresh:
                clean_run(config)
            if args.train_only:
                _, seconds = train_methods(config, init_distributed("cpu"))
                print(f"trained {', '.join(seconds)} in {config.run_dir}")
                return 0
            results = run_evaluation(config, init_distributed("cpu"))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_report(results, markdown, json_path)
    print(f"wrote {markdown} and {json_path}")
    return 0


def _measure_and_add(args: argparse.Namespace, json_path: Path) -> dict:
    """``tal eval --add``: the earlier results with ``--methods`` measured and added."""
    from tal.evaluation.merge import add_methods, config_for_addition
    from tal.evaluation.report import read_results
    from tal.evaluation.runner import run_evaluation
    from tal.training.distributed import init_distributed

    budget = ("config", "quick", "epochs", "warmup_epochs", "stage1_steps", "stage2_steps")
    given = [f"--{name.replace('_', '-')}" for name in budget if getattr(args, name)]
    if given:
        raise ValueError(f"--add keeps the earlier run's budget; drop {', '.join(given)}")
    earlier = read_results(json_path)
    paths = {"run_dir": args.run_dir, "ancestry_run": args.ancestry_run}
    config = config_for_addition(earlier, tuple(args.methods or ()), paths)
    added = run_evaluation(config, init_distributed("cpu"))
    return add_methods(earlier, added)


def _print_comparison(before_path: Path, after_path: Path) -> int:
    """Markdown on stdout; a results file that is missing or malformed raises (exit 2)."""
    from tal.evaluation.compare import compare_results, format_comparison
    from tal.evaluation.report import read_results

    comparison = compare_results(read_results(before_path), read_results(after_path))
    print(format_comparison(comparison, str(before_path), str(after_path)))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("eval", help="compare initialisations; write a report")
    evaluate.add_argument("--config", type=Path, default=None)
    evaluate.add_argument(
        "--modality",
        choices=["image", "text"],
        default="image",
        help="image: ViTs on the image tasks (results.md); text: GPT-2 on the text tasks "
        f"({TEXT_REPORT}), with its own config (tal.evaluation.text_config)",
    )
    evaluate.add_argument(
        "--user-scale",
        action="store_true",
        help="measure a stored learngene against weight selection and the DCT transfer at "
        "ViT-S/B shapes, RGB, 64-224 px (docs/user_scale.md; tal.evaluation.user_scale); "
        "takes --config, --checkpoint, --output-dir, --quick, --report-only, --remeasure",
    )
    evaluate.add_argument(
        "--checkpoint",
        default=None,
        help="with --user-scale: NAME or NAME:VERSION in the model store (default tal-default)",
    )
    evaluate.add_argument(
        "--remeasure",
        nargs="+",
        metavar="ARCH",
        default=None,
        help="with --user-scale: measure the untrained figures of these architectures again "
        "into OUTPUT_DIR/user_scale.json (the rest of the earlier run is kept)",
    )
    evaluate.add_argument(
        "--remeasure-methods",
        nargs="+",
        metavar="METHOD",
        default=None,
        help="with --remeasure: only these methods (default: every method of the earlier run)",
    )
    evaluate.add_argument(
        "--remeasure-finetuned",
        action="store_true",
        help="with --remeasure: also fine-tune these methods again (the fine-tuned table and "
        "the few-shot fine-tune, every seed)",
    )
    evaluate.add_argument("--quick", action="store_true", help="tiny budget (tests)")
    evaluate.add_argument("--fresh", action="store_true", help="discard earlier training state")
    evaluate.add_argument(
        "--report-only",
        action="store_true",
        help="re-render results.md and the plots from the existing results.json (no training)",
    )
    evaluate.add_argument(
        "--train-only",
        action="store_true",
        help="train or resume the methods' hypernetworks and stop; processes with disjoint "
        "--methods can train side by side, then one `tal eval` measures them all",
    )
    evaluate.add_argument(
        "--compare",
        type=Path,
        default=None,
        metavar="EARLIER_RESULTS_JSON",
        help="print what changed from an earlier run's results.json to this one's "
        "(OUTPUT_DIR/results.json) as Markdown tables (no training)",
    )
    evaluate.add_argument("--run-dir", type=Path, default=None)
    evaluate.add_argument(
        "--ancestry-run",
        type=Path,
        default=None,
        help="run folder of `tal train ancestry` (default runs/default)",
    )
    evaluate.add_argument("--output-dir", type=Path, default=None)
    evaluate.add_argument("--epochs", type=int, default=None)
    evaluate.add_argument(
        "--warmup-epochs",
        type=int,
        default=None,
        help="fine-tuning's linear learning-rate warm-up, in epochs (config recipe_warmup_epochs)",
    )
    evaluate.add_argument("--stage1-steps", type=int, default=None)
    evaluate.add_argument("--stage2-steps", type=int, default=None)
    evaluate.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=["random", "weight_selection", "dct", "ghn3", "logah", "tal", "tal+"],
        help="weight_selection, dct and tal+ are for images only",
    )
    evaluate.add_argument(
        "--add",
        action="store_true",
        help="measure --methods with the budget of the existing OUTPUT_DIR/results.json and "
        "add them to it (training those that need it); random init is measured again and the "
        "merge is refused unless it reproduces the stored figures (tal.evaluation.merge)",
    )
    evaluate.set_defaults(func=_cmd_eval)
