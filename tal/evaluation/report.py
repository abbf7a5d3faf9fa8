"""docs/results.md (tables, targets, plots) and docs/results.json from measured results."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from pydantic import ValidationError

from tal.evaluation.config import TRANSFERS
from tal.evaluation.schema import EvalResults
from tal.evaluation.stats import epochs_to_reach, paired_t_test, summarize
from tal.evaluation.user_scale_report import kept_block

PAPER_MARGIN_POINTS = 24.0  # TAL over GHN untrained, paper's Decathlon average
ANCESTRY_FRACTION_TARGET = 0.85
EPOCHS_TO_MATCH_TARGET = 2
PERCENT = 100.0
ANCESTRY_KEY_PREFIX = "val_acc/"  # ancestry_val_accuracy holds val_acc/<task> per task
REPORTED_PROBLEMS = 5  # schema errors named when a results.json is malformed


def _pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{PERCENT * value:.1f}"


def untrained_by_task(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """method -> task -> untrained accuracy averaged over the held-out architectures."""
    return {
        method: {task: sum(archs.values()) / len(archs) for task, archs in tasks.items()}
        for method, tasks in results["untrained_accuracy"].items()
    }


def unseen_predicted_head(results: dict[str, Any]) -> dict[str, float]:
    """method -> the unseen task's untrained accuracy with the head as predicted, averaged over
    the architectures; empty when the run's untrained figures use that head already."""
    return {
        method: sum(archs.values()) / len(archs)
        for method, archs in results.get("unseen_predicted_head_accuracy", {}).items()
    }


def _ancestry_validation(results: dict[str, Any]) -> dict[str, float]:
    """task -> the ancestry's accuracy on its validation split (from ``val_acc/<task>`` keys)."""
    return {
        key.removeprefix(ANCESTRY_KEY_PREFIX): value
        for key, value in results["ancestry_val_accuracy"].items()
        if key.startswith(ANCESTRY_KEY_PREFIX)
    }


def ancestry_reference(results: dict[str, Any]) -> tuple[dict[str, float], str]:
    """task -> the ancestry's accuracy, and the split it was measured on: the methods' test
    images where the run measured them, else (older runs) the ancestry's validation split."""
    if results.get("ancestry_test_accuracy"):
        return dict(results["ancestry_test_accuracy"]), "test"
    return _ancestry_validation(results), "validation"


def _accuracies_at(curves: dict, method: str, task: str, epoch: int = -1) -> list[float]:
    """Test accuracy after ``epoch`` (default: the last), one per seed in seed order."""
    return [run["test_accuracy"][epoch] for _, run in sorted(curves[method][task].items())]


def _mean_curve(curves: dict, method: str, task: str, key: str) -> list[float]:
    runs = [run[key] for run in curves[method][task].values()]
    return [sum(values) / len(values) for values in zip(*runs, strict=True)]


def analyse(results: dict[str, Any]) -> dict[str, Any]:
    """Derived figures: averages, significance, epochs-to-match and the targets' verdicts."""
    by_task = untrained_by_task(results)
    tasks = list(next(iter(by_task.values())))
    mean_untrained = {m: sum(per_task.values()) / len(per_task) for m, per_task in by_task.items()}
    curves = results["finetune"]["curves"]
    ft_tasks = list(next(iter(curves.values()))) if curves else []
    final = {
        m: {t: summarize(_accuracies_at(curves, m, t)).__dict__ for t in ft_tasks} for m in curves
    }
    tests = {}
    if "tal" in curves:
        for baseline in curves:
            if baseline == "tal":
                continue
            a = [x for t in ft_tasks for x in _accuracies_at(curves, "tal", t)]
            b = [x for t in ft_tasks for x in _accuracies_at(curves, baseline, t)]
            tests[baseline] = paired_t_test(a, b).__dict__
    reach = {}
    if "random" in curves:
        for m in curves:
            reach[m] = {
                t: epochs_to_reach(
                    _mean_curve(curves, m, t, "test_accuracy"),
                    _mean_curve(curves, "random", t, "test_accuracy")[-1],
                )
                for t in ft_tasks
            }
    verdicts = {}
    if "tal" in mean_untrained and "ghn3" in mean_untrained:
        margin = PERCENT * (mean_untrained["tal"] - mean_untrained["ghn3"])
        detail = f"{margin:.1f} points"
        predicted = unseen_predicted_head(results)
        if "tal" in predicted and "ghn3" in predicted:
            unseen = results["unseen_task"]
            gap_as_predicted = (predicted["tal"] - predicted["ghn3"]) - (
                by_task["tal"][unseen] - by_task["ghn3"][unseen]
            )
            detail += (
                f" ({margin + PERCENT * gap_as_predicted / len(tasks):.1f} with the unseen "
                "task's heads as predicted)"
            )
        verdicts["untrained margin over GHN-3 >= 24 points"] = (
            margin >= PAPER_MARGIN_POINTS,
            detail,
        )
    ancestry, split = ancestry_reference(results)
    learned = [t for t in tasks if t in ancestry]
    if "tal" in by_task and learned:
        # over the tasks the ancestry learned: it has no accuracy on the unseen task
        tal_mean = sum(by_task["tal"][t] for t in learned)
        ancestry_mean = sum(ancestry[t] for t in learned)
        ratio = tal_mean / ancestry_mean
        verdicts["untrained TAL >= 85% of ancestry"] = (
            ratio >= ANCESTRY_FRACTION_TARGET,
            f"{PERCENT * ratio:.0f}% ({_pct(tal_mean / len(learned))} against "
            f"{_pct(ancestry_mean / len(learned))}, mean over the {len(learned)} tasks the "
            f"ancestry learned; the ancestry on its {split} split)",
        )
    if "tal" in reach:
        ok = all(e is not None and e <= EPOCHS_TO_MATCH_TARGET for e in reach["tal"].values())
        detail = ", ".join(
            f"{t} {'never' if e is None else f'{e} epochs'}" for t, e in reach["tal"].items()
        )
        verdicts["reaches random's final accuracy within 2 epochs"] = (ok, detail)
    if "tal" in final and "random" in final:
        gaps = {
            t: PERCENT * (final["tal"][t]["mean"] - final["random"][t]["mean"]) for t in ft_tasks
        }
        detail = "TAL minus random, mean final accuracy (points): " + ", ".join(
            f"{t} {gap:+.1f}" for t, gap in gaps.items()
        )
        verdicts["final accuracy never below random"] = (min(gaps.values()) >= 0, detail)
    verdicts.update(_above_transfers(mean_untrained, final, ft_tasks, tests))
    return {
        "mean_untrained": mean_untrained,
        "unseen_task": _unseen_task_figures(results, by_task, final),
        "final": final,
        "paired_tests": tests,
        "epochs_to_random_final": reach,
        "verdicts": verdicts,
    }


def _above_transfers(
    mean_untrained: dict[str, float], final: dict, ft_tasks: list[str], tests: dict[str, dict]
) -> dict[str, tuple[bool, str]]:
    """TAL against each training-free transfer of the ancestry the run measured: mean
    untrained accuracy, and mean final fine-tuned accuracy over the fine-tuned tasks (with the
    paired t-test's p-value, from ``tests``, so a lead within the seed spread reads as one)."""
    verdicts = {}
    for transfer in (t for t in TRANSFERS if t in mean_untrained and "tal" in mean_untrained):
        margin = PERCENT * (mean_untrained["tal"] - mean_untrained[transfer])
        verdicts[f"untrained TAL above {transfer}"] = (margin > 0, f"{margin:+.1f} points")
        if "tal" in final and transfer in final and ft_tasks:
            gaps = [final["tal"][t]["mean"] - final[transfer][t]["mean"] for t in ft_tasks]
            detail = f"{PERCENT * sum(gaps) / len(gaps):+.1f} points (mean over tasks"
            if transfer in tests:
                detail += f"; paired t-test p = {tests[transfer]['p_value']:.2g}"
            detail += ")"
            verdicts[f"fine-tuned TAL above {transfer}"] = (sum(gaps) > 0, detail)
    return verdicts


def _unseen_task_figures(
    results: dict[str, Any], by_task: dict[str, dict[str, float]], final: dict
) -> dict[str, dict]:
    """Per method on the unseen task: untrained accuracy (mean over architectures; with the
    head as predicted too, when the run fitted a discriminant head), accuracy after the first
    fine-tuning epoch and at the end (summaries over seeds)."""
    task = results["unseen_task"]
    curves = results["finetune"]["curves"]
    predicted = unseen_predicted_head(results)
    figures = {}
    for method, per_task in by_task.items():
        if task not in per_task:
            continue
        row: dict[str, Any] = {"untrained": per_task[task]}
        if method in predicted:
            row["untrained_predicted_head"] = predicted[method]
        if task in curves.get(method, {}):
            row["first_epoch"] = summarize(_accuracies_at(curves, method, task, 0)).__dict__
            row["final"] = final[method][task]
        figures[method] = row
    return figures


def _ancestry_lines(results: dict[str, Any]) -> list[str]:
    """Section 6: the ancestry's accuracy per task on the test images the methods were scored
    on (when the run measured it) and on its own validation split."""
    validation = _ancestry_validation(results)
    splits = {"validation": validation}
    if results.get("ancestry_test_accuracy"):
        splits = {"test (the methods' images)": results["ancestry_test_accuracy"], **splits}
    tasks = list(validation)
    lines = [
        "## 6. Ancestry model (reference), accuracy %",
        "",
        "| split | " + " | ".join(tasks) + " | mean |",
        "|" + " --- |" * (len(tasks) + 2),
    ]
    for split, scores in splits.items():
        cells = [_pct(scores[t]) if t in scores else "n/a" for t in tasks]
        measured = [scores[t] for t in tasks if t in scores]
        mean = sum(measured) / len(measured) if measured else math.nan
        lines.append(f"| {split} | " + " | ".join(cells) + f" | {_pct(mean)} |")
    wall = results["ancestry_val_accuracy"].get("wall_seconds")
    if wall is not None:
        lines += ["", f"Ancestry training: {wall:.0f} s."]
    return [*lines, ""]


def _calibration_lines(results: dict[str, Any]) -> list[str]:
    """The fitted head scale per method and task (mean over seeds) with the calibration
    images' loss before and after, for the methods calibrated; nothing when none was."""
    curves = results["finetune"]["curves"]
    tasks = list(next(iter(curves.values())))
    fits = {
        method: {
            task: [c["head_calibration"] for c in per_seed.values() if c.get("head_calibration")]
            for task, per_seed in per_task.items()
        }
        for method, per_task in curves.items()
    }
    if not any(found for per_task in fits.values() for found in per_task.values()):
        return []
    lines = [
        "Head calibration before epoch 1: fitted scale, mean over seeds (the calibration "
        "images' cross-entropy before -> after):",
        "",
        "| method | " + " | ".join(tasks) + " |",
        "| --- |" + " --- |" * len(tasks),
    ]
    for method, per_task in fits.items():
        if not any(per_task.values()):
            continue
        cells = []
        for task in tasks:
            found = per_task.get(task, [])
            mean = {k: sum(f[k] for f in found) / len(found) for k in found[0]} if found else {}
            cells.append(
                f"{mean['scale']:.2f} ({mean['loss_before']:.2f} -> {mean['loss_after']:.2f})"
                if mean
                else "n/a"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _environment_lines(results: dict[str, Any]) -> list[str]:
    """One sentence naming the measuring run's machine (nothing for runs that did not record it)."""
    environment = results.get("environment")
    if not environment:
        return []
    return [
        "",
        f"Measured on: {environment['cpu_model']}, CPU kernels {environment['cpu_kernels']}, "
        f"{environment['torch_threads']} torch thread(s), torch {environment['torch']}"
        + (f", {environment['cuda_device']}" if environment.get("cuda_device") else "")
        + ". A different CPU kernel path changes trained hypernetworks' weights "
        "(docs/lab/ablations.md: the CPU kernel path).",
    ]


def _addition_lines(results: dict[str, Any]) -> list[str]:
    """One sentence per later run that added methods (``tal eval --add``): its machine, and how
    closely random init, measured again, reproduced this run's figures."""
    lines = []
    for addition in results.get("additions", []):
        environment = addition["environment"]
        machine = (
            f" on {environment['cpu_model']}, {environment['torch_threads']} torch thread(s)"
            if environment
            else ""
        )
        lines.append(
            f"{', '.join(addition['methods'])}: measured later with this run's config and added "
            f"(`tal eval --add`){machine}; random init, measured again beside them, reproduced "
            f"every stored figure within {PERCENT * addition['reference_difference']:.2f} points."
        )
    return ["", *lines] if lines else []


def _schedule(recipe: dict[str, Any]) -> str:
    """The learning-rate schedule in words (older results files record no warm-up)."""
    warmup = recipe.get("warmup_epochs", 0)
    if not warmup:
        return "cosine"
    return f"linear warm-up over the first {warmup} epoch{'s' if warmup > 1 else ''}, then cosine"


def _fitted_unseen_head(derived: dict[str, Any]) -> bool:
    """Whether the run fitted the unseen task's discriminant head (config ``unseen_head``)."""
    return any("untrained_predicted_head" in row for row in derived["unseen_task"].values())


def _unseen_task_lines(results: dict[str, Any], derived: dict[str, Any]) -> list[str]:
    task = results["unseen_task"]
    figures = derived["unseen_task"]
    discriminant = _fitted_unseen_head(derived)
    examples = results["config"].get("calibration_examples")
    lines = [
        f"## 4. The unseen task (`{task}`)",
        "",
        "No hypernetwork training saw this task; its embedding is computed from a few hundred "
        "of its training images."
        + (
            f" Its classifier head is the discriminant head fitted on the features of the same "
            f"{examples} images (`tal.heads.discriminant`: shrinkage LDA, scaled to its "
            "out-of-fold confidence; no gradient step), for "
            "every method untrained and for every method but random init fine-tuned; the "
            "predicted head's untrained accuracy (timm's default head for random) is beside it."
            if discriminant
            else ""
        )
        + " Accuracy % on its test split:",
        "",
        "| method | untrained |"
        + (" untrained, head as predicted |" if discriminant else "")
        + " after 1 epoch (mean ± std) | final (mean ± std) |",
        "| --- | --- |" + (" --- |" if discriminant else "") + " --- | --- |",
    ]
    for method, row in figures.items():
        tuned = [row.get(key) for key in ("first_epoch", "final")]
        cells = ["n/a" if s is None else f"{_pct(s['mean'])} ± {_pct(s['std'])}" for s in tuned]
        if discriminant:
            cells.insert(0, _pct(row.get("untrained_predicted_head", math.nan)))
        lines.append(f"| {method} | {_pct(row['untrained'])} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _plot_curves(results: dict[str, Any], folder: Path) -> list[str]:
    curves = results["finetune"]["curves"]
    names = []
    for task in next(iter(curves.values()), {}):
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
        for method in curves:
            epochs = range(1, len(_mean_curve(curves, method, task, "train_loss")) + 1)
            loss_ax.plot(epochs, _mean_curve(curves, method, task, "train_loss"), label=method)
            acc_ax.plot(epochs, _mean_curve(curves, method, task, "test_accuracy"), label=method)
        loss_ax.set(title=f"{task}: training loss", xlabel="epoch")
        acc_ax.set(title=f"{task}: test accuracy", xlabel="epoch")
        acc_ax.legend()
        fig.tight_layout()
        name = f"convergence_{task}.png"
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
        names.append(name)
    return names


def _plot_untrained(results: dict[str, Any], folder: Path) -> str:
    untrained = results["untrained_accuracy"]
    methods = list(untrained)
    tasks = list(next(iter(untrained.values())))
    fig, ax = plt.subplots(figsize=(10, 3.6))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = [
            PERCENT * sum(untrained[method][t].values()) / len(untrained[method][t]) for t in tasks
        ]
        ax.bar([j + i * width for j in range(len(tasks))], values, width, label=method)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks)
    ax.set(ylabel="untrained accuracy (%)", title="Predicted weights, no training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "untrained_accuracy.png", dpi=90)
    plt.close(fig)
    return "untrained_accuracy.png"


def read_results(json_path: Path) -> dict[str, Any]:
    """The measured results of an earlier run from its results.json (derived figures dropped,
    they are recomputed)."""
    try:
        data = json.loads(Path(json_path).read_text())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{json_path} not found: run `tal eval` first") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{json_path} holds a JSON {type(data).__name__}, not `tal eval` results")
    data.pop("derived", None)
    try:
        return EvalResults.model_validate(data).model_dump(exclude_unset=True)  # as written
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}"
            for e in exc.errors()[:REPORTED_PROBLEMS]
        )
        raise ValueError(f"{json_path} is not `tal eval` results ({problems})") from exc


def write_report(results: dict[str, Any], markdown: Path, json_path: Path) -> None:
    folder = markdown.parent
    folder.mkdir(parents=True, exist_ok=True)
    derived = analyse(results)
    json_path.write_text(json.dumps({**results, "derived": derived}, indent=2, default=str))
    untrained = results["untrained_accuracy"]
    tasks = list(next(iter(untrained.values())))
    archs = list(next(iter(next(iter(untrained.values())).values())))
    lines = [
        "# Results",
        "",
        f"Produced by `tal eval` (config in results.json). Unseen task: "
        f"`{results['unseen_task']}` (its embedding comes from at most a few hundred "
        "training images; no hypernetwork training saw it). "
        "`tal eval --compare EARLIER/results.json` prints what changed against an earlier run.",
        "",
        "## Targets",
        "",
        "| target | met | measured |",
        "| --- | --- | --- |",
    ]
    for name, (ok, detail) in derived["verdicts"].items():
        lines.append(f"| {name} | {'yes' if ok else '**no**'} | {detail} |")
    if not all(ok for ok, _ in derived["verdicts"].values()):
        lines += [
            "",
            "Missed targets: what was tried and what limits them is in the repository's "
            "`docs/lab/ablations.md`.",
        ]
    lines += [
        "",
        "## 1. Untrained accuracy of predicted weights (%), test split",
        "",
        "Held-out architectures: "
        + ", ".join(
            f"{k} ({v['depth']} blocks, width {v['embed_dim']}, {v['num_params']:,} params)"
            for k, v in results["architectures"].items()
        )
        + (
            f". On the unseen task `{results['unseen_task']}` every method's head is fitted in "
            "closed form to the images behind its task embedding (section 4)."
            if _fitted_unseen_head(derived)
            else ""
        ),
        "",
        "| method | " + " | ".join(tasks) + " | mean |",
        "| --- |" + " --- |" * (len(tasks) + 1),
    ]
    for method in untrained:
        cells = [_pct(sum(untrained[method][t].values()) / len(archs)) for t in tasks]
        lines.append(
            f"| {method} | " + " | ".join(cells) + f" | {_pct(derived['mean_untrained'][method])} |"
        )
    lines += [
        "",
        "Per architecture (mean over tasks):",
        "",
        "| method | " + " | ".join(archs) + " |",
        "| --- |" + " --- |" * len(archs),
    ]
    for method in untrained:
        cells = [_pct(sum(untrained[method][t][a] for t in tasks) / len(tasks)) for a in archs]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", f"![untrained]({_plot_untrained(results, folder)})", ""]
    recipe = results["finetune"]["recipe"]
    lines += [
        "## 2-3. Fine-tuning (architecture `medium`)",
        "",
        f"Recipe: AdamW lr {recipe['lr']}, weight decay {recipe['weight_decay']}, "
        f"batch {recipe['batch_size']}, {recipe['epochs']} epochs, {_schedule(recipe)}; "
        f"seeds {results['config']['seeds']}."
        + (
            " Every predicted classifier head is first scaled by the factor in [0, 1] that "
            f"fits the first {recipe['calibration_examples']} training images best "
            "(`tal.heads.calibration`; untrained accuracy is measured without it); random init "
            "is fine-tuned from timm's default initialisation as it is."
            if recipe.get("calibrate_head")
            else ""
        )
        + (
            f" On `{results['unseen_task']}` the learned methods' heads are replaced by the "
            "discriminant head first (section 4)."
            if _fitted_unseen_head(derived)
            else ""
        ),
        "",
        *_calibration_lines(results),
        "| method | task | final accuracy % (mean ± std) | epochs to random's final |",
        "| --- | --- | --- | --- |",
    ]
    for method, per_task in derived["final"].items():
        for task, summary in per_task.items():
            reach = derived["epochs_to_random_final"].get(method, {}).get(task)
            lines.append(
                f"| {method} | {task} | {_pct(summary['mean'])} ± "
                f"{_pct(summary['std'])} | {reach if reach else 'never'} |"
            )
    lines += [
        "",
        "Paired t-test, TAL against each baseline (final accuracy, pairs = task x seed):",
        "",
        "| baseline | mean difference (points) | t | p |",
        "| --- | --- | --- | --- |",
    ]
    for baseline, test in derived["paired_tests"].items():
        lines.append(
            f"| {baseline} | {PERCENT * test['mean_difference']:.2f} | "
            f"{test['t_statistic']:.2f} | {test['p_value']:.3g} |"
        )
    lines += [""] + [f"![{n}]({n})" for n in _plot_curves(results, folder)]
    lines += ["", *_unseen_task_lines(results, derived)]
    lines += [
        "## 5. Cost",
        "",
        "| method | training s | prediction ms (" + ", ".join(archs) + ") |",
        "| --- | --- | --- |",
    ]
    for method, seconds in results["training_seconds"].items():
        ms = results["prediction_ms"].get(method, {})
        lines.append(
            f"| {method} | {seconds:.0f} | " + ", ".join(f"{ms[a]:.1f}" for a in ms) + " |"
        )
    lines += _environment_lines(results)
    lines += _addition_lines(results)
    lines += ["", *_ancestry_lines(results)]
    user_scale = kept_block(markdown)  # written by `tal eval --user-scale`
    if user_scale:
        lines += ["", user_scale]
    markdown.write_text("\n".join(lines) + "\n")
