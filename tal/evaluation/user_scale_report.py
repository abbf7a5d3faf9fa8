"""docs/user_scale.{md,json} from ``tal eval --user-scale`` results, and its summary table in
docs/results.md (a marked block that ``tal eval`` keeps when it rewrites that file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tal.evaluation.stats import summarize

BLOCK_START = "<!-- user-scale: written by `tal eval --user-scale` -->"
BLOCK_END = "<!-- /user-scale -->"
ANCESTRY_SHARE_TARGET = 0.6  # untrained TAL / ancestry on the learned tasks, every architecture
FINETUNE_MARGIN_TARGET = 10.0  # fine-tuned TAL minus random init, points, mean over tasks
TAL = "tal"
RANDOM = "random"
TRANSFERS = ("weight_selection", "dct")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def learned_means(results: dict[str, Any], arch: str) -> dict[str, float]:
    """Each method's untrained accuracy at ``arch``, mean over the tasks the ancestry learned;
    empty when no such task was measured."""
    rows = {t: r for t, r in results["untrained"][arch].items() if t in results["ancestry"]}
    if not rows:
        return {}
    methods = next(iter(rows.values()))
    return {m: _mean([row[m] for row in rows.values()]) for m in methods}


def _final(runs: list[dict[str, Any]]) -> list[float]:
    return [run["test_accuracy"][-1] for run in runs]


def _untrained(runs: list[dict[str, Any]]) -> list[float]:
    return [run["untrained"] for run in runs]


def targets(results: dict[str, Any]) -> dict[str, tuple[bool | None, str]]:
    """``{target: (met, what was measured)}``; met is None where it was not measured."""
    verdicts: dict[str, tuple[bool | None, str]] = {}
    ancestry = _mean(list(results["ancestry"].values())) if results["ancestry"] else None
    if ancestry:
        shares = {a: learned_means(results, a)[TAL] / ancestry for a in results["untrained"]}
        verdicts[f"untrained TAL >= {ANCESTRY_SHARE_TARGET:.0%} of the ancestry, every arch"] = (
            all(s >= ANCESTRY_SHARE_TARGET for s in shares.values()),
            ", ".join(f"{a} {s:.0%}" for a, s in shares.items()),
        )
    for arch in results["untrained"]:
        means = learned_means(results, arch)
        present = [m for m in TRANSFERS if m in means]
        if TAL in means and present:
            verdicts[f"untrained TAL above weight selection and DCT at {arch}"] = (
                all(means[TAL] > means[m] for m in present),
                ", ".join(f"{m} {100 * (means[TAL] - means[m]):+.1f}" for m in present),
            )
    tasks = results["finetuned"]["tasks"]
    if tasks and all(TAL in t and RANDOM in t for t in tasks.values()):
        margins = {
            task: 100 * (_mean(_final(t[TAL]["runs"])) - _mean(_final(t[RANDOM]["runs"])))
            for task, t in tasks.items()
        }
        detail = ", ".join(f"{t} {m:+.1f}" for t, m in margins.items())
        verdicts[f"fine-tuned TAL >= random + {FINETUNE_MARGIN_TARGET:.0f} points, mean"] = (
            _mean(list(margins.values())) >= FINETUNE_MARGIN_TARGET,
            detail,
        )
        verdicts["fine-tuned TAL never below random (every task)"] = (
            min(margins.values()) >= 0,
            detail,
        )
        gains = {
            task: 100 * (_mean(_final(t[TAL]["runs"])) - _mean(_untrained(t[TAL]["runs"])))
            for task, t in tasks.items()
        }
        verdicts["fine-tuned TAL never below its untrained accuracy"] = (
            min(gains.values()) >= 0,
            ", ".join(f"{t} {g:+.1f}" for t, g in gains.items()),
        )
        for method in TRANSFERS:
            if all(method in t for t in tasks.values()):
                leads = {
                    task: 100 * (_mean(_final(t[TAL]["runs"])) - _mean(_final(t[method]["runs"])))
                    for task, t in tasks.items()
                }
                verdicts[f"fine-tuned TAL above {method}"] = (
                    _mean(list(leads.values())) > 0,
                    ", ".join(f"{t} {v:+.1f}" for t, v in leads.items()),
                )
    few_shot = results["finetuned"].get("few_shot")
    if few_shot and TAL in few_shot["methods"] and RANDOM in few_shot["methods"]:
        tal = few_shot["methods"][TAL]["runs"]
        random_final = _mean(_final(few_shot["methods"][RANDOM]["runs"]))
        verdicts[f"few-shot ({few_shot['task']}) TAL above random and its own start"] = (
            _mean(_final(tal)) >= random_final and _mean(_final(tal)) >= _mean(_untrained(tal)),
            f"TAL {_pct(_mean(_untrained(tal)))} -> {_pct(_mean(_final(tal)))}, random "
            f"{_pct(random_final)}",
        )
    return verdicts


def _summary_cell(values: list[float]) -> str:
    summary = summarize(values)
    return f"{_pct(summary.mean)} ± {_pct(summary.std)}" if summary.n > 1 else _pct(summary.mean)


def summary_table(results: dict[str, Any]) -> list[str]:
    """Untrained accuracy, mean over the learned tasks, per architecture and method; the
    fine-tuned means of the fine-tuning architecture."""
    archs = list(results["untrained"])
    means = {a: learned_means(results, a) for a in archs}
    methods = list(means[archs[0]])
    if not methods:
        return ["No task the ancestry learned was measured (the per-task tables have the others)."]
    tasks = results["finetuned"]["tasks"]
    finetuned = results["finetuned"]["architecture"]
    header = [*archs, f"{finetuned} fine-tuned"] if tasks else archs
    lines = [
        "| method | " + " | ".join(header) + " |",
        "| --- |" + " --- |" * len(header),
    ]
    for method in methods:
        cells = [_pct(means[a][method]) for a in archs]
        if tasks:
            present = [t[method]["runs"] for t in tasks.values() if method in t]
            cells.append(_pct(_mean([_mean(_final(r)) for r in present])) if present else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if results["ancestry"]:
        ancestry = _pct(_mean(list(results["ancestry"].values())))
        lines.append(
            "| ancestry (its own 32-px grey spec) | "
            + " | ".join([ancestry] * len(archs) + (["-"] if tasks else []))
            + " |"
        )
    return lines


def _targets_lines(results: dict[str, Any]) -> list[str]:
    lines = ["| target | met | measured |", "| --- | --- | --- |"]
    for name, (met, detail) in targets(results).items():
        lines.append(f"| {name} | {'yes' if met else '**no**'} | {detail} |")
    return lines


def _untrained_lines(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for arch, rows in results["untrained"].items():
        methods = list(next(iter(rows.values())))
        proxy = results["proxies"].get(arch)
        lines += [
            f"### {arch}",
            "",
            "Predicted at "
            + (
                f"depth {proxy['depth']}, width {proxy['embed_dim']}, {proxy['num_heads']} heads, "
                f"{proxy['img_size']} px, patch {proxy['patch_size']}, "
                f"{proxy['in_chans']} channel(s), then lifted (`tal.transfer.lift`)"
                + _adapter_clause(proxy)
                if proxy
                else "its own shape (inside the trained range)."
            ),
            "",
            "| task | " + " | ".join(methods) + " | ancestry |",
            "| --- |" + " --- |" * (len(methods) + 1),
        ]
        for task, row in rows.items():
            ancestry = results["ancestry"].get(task)
            lines.append(
                f"| {task} | "
                + " | ".join(_pct(row[m]) for m in methods)
                + f" | {_pct(ancestry) if ancestry is not None else 'unseen: fitted heads'} |"
            )
        lines.append("")
    return lines


def _adapter_clause(proxy: dict[str, Any]) -> str:
    blocks = proxy.get("adapter_blocks", 0)
    if not blocks:
        return "."
    grid = proxy["img_size"] // proxy["patch_size"]
    return (
        f"; its first {blocks} blocks rebuild the proxy's {grid} x {grid} patch grid from the "
        "finer one (`tal.transfer.regrid`)."
    )


def _layer_decay(config: dict[str, Any], key: str) -> str:
    """The recipe's layer-wise learning-rate decay, as a clause ("" when there is none; runs
    from before the option had none)."""
    decay = config.get(key, 1.0)
    return "" if decay == 1 else f", layer-wise learning-rate decay {decay}"


def _finetune_lines(results: dict[str, Any]) -> list[str]:
    finetuned = results["finetuned"]
    config = results["config"]
    lines = [
        f"Architecture `{finetuned['architecture']}`; AdamW lr {config['finetune_lr']}, weight "
        f"decay 0.05, batch {config['finetune_batch_size']}, {config['finetune_epochs']} epochs "
        f"over {config['finetune_examples']} training images, linear warm-up over the first "
        f"{config['finetune_warmup_epochs']} epoch(s) then cosine"
        f"{_layer_decay(config, 'finetune_layer_decay')}; seeds {config['seeds']}. "
        "Cells: untrained -> after each epoch, mean ± sample std over seeds.",
        "",
        "| task | method | untrained | per epoch | final |",
        "| --- | --- | --- | --- | --- |",
    ]
    sections = list(finetuned["tasks"].items())
    few_shot = finetuned.get("few_shot")
    if few_shot:
        sections.append((f"{few_shot['task']} (few-shot)", few_shot["methods"]))
    for task, methods in sections:
        for method, entry in methods.items():
            runs = entry["runs"]
            epochs = len(runs[0]["test_accuracy"])
            per_epoch = " ".join(
                _pct(_mean([r["test_accuracy"][e] for r in runs])) for e in range(epochs)
            )
            lines.append(
                f"| {task} | {method} | {_summary_cell(_untrained(runs))} | {per_epoch} | "
                f"{_summary_cell(_final(runs))} |"
            )
    if few_shot:
        lines += [
            "",
            f"Few-shot: {few_shot['examples']} balanced training images of `{few_shot['task']}` "
            f"(unseen by every method) are all the data: every method's head is fitted to them "
            f"and it is fine-tuned on them for {config['few_shot_epochs']} epochs (lr "
            f"{config['few_shot_lr']}, batch "
            f"{config['few_shot_batch_size']}, warm-up {config['few_shot_warmup_epochs']} "
            f"epoch{_layer_decay(config, 'few_shot_layer_decay')}), as a task registered over "
            "the API is served.",
        ]
    return lines


def render(results: dict[str, Any]) -> str:
    """The whole of docs/user_scale.md."""
    config = results["config"]
    lines = [
        "# User-scale evaluation",
        "",
        f"Produced by `tal eval --user-scale` from `{results['checkpoint']}` in "
        f"{results['seconds'] / 60:.0f} minutes (config and every figure in user_scale.json). "
        "Methods: `random` (timm's init), `weight_selection` and `dct` (training-free, from the "
        "checkpoint's ancestry; `tal.transfer`), `tal` (what the service returns: predicted "
        "at the nearest shape of the trained range and lifted, `tal.transfer.lift`) and "
        "`tal_unlifted` (the hypernetwork's prediction at the requested shape itself). Test "
        "images per task: "
        + ", ".join(f"{a} {n}" for a, n in config["test_examples"].items())
        + f", {config['default_test_examples']} elsewhere. The tasks the ancestry did not "
        f"learn are measured at {', '.join(config['unseen_task_architectures'])}, every "
        f"method's head a shrinkage-LDA head fitted to {config['support_examples']} training "
        "images.",
        *_remeasured_lines(results),
        "",
        "## Targets",
        "",
        *_targets_lines(results),
        "",
        "## Summary (%; untrained: mean over the tasks the ancestry learned)",
        "",
        *summary_table(results),
        "",
        "## Untrained accuracy per task (%)",
        "",
        *_untrained_lines(results),
        "## Fine-tuned (%)",
        "",
        *_finetune_lines(results),
        "",
    ]
    return "\n".join(lines)


def _remeasured_lines(results: dict[str, Any]) -> list[str]:
    """A paragraph per later re-measurement (``tal eval --user-scale --remeasure``)."""
    lines = []
    for entry in results.get("remeasured", []):
        changes = _points(entry["largest_change_points"])
        environment = entry["environment"]
        methods = entry.get("methods")
        which = f" of {', '.join(methods)}" if methods else ""
        finetuned = entry.get("finetuned_largest_change_points")
        also = (
            f"; the fine-tuned table and the few-shot fine-tune{which} run again too (largest "
            f"change of a final accuracy, points: {_points(finetuned)})"
            if finetuned is not None
            else ""
        )
        lines += [
            "",
            f"Untrained figures{which} at " + ", ".join(entry["architectures"]) + " measured "
            f"again later with `tal eval --user-scale --remeasure` ({entry['seconds'] / 60:.0f} "
            f"minutes; {environment['cpu_model']}, CPU kernels {environment['cpu_kernels']}, "
            f"{environment['torch_threads']} torch threads); largest change per method, "
            f"points: {changes}{also}.",
        ]
    return lines


def _points(changes: dict[str, float]) -> str:
    return ", ".join(f"{method} {points:.1f}" for method, points in changes.items())


def results_block(results: dict[str, Any]) -> str:
    """The marked section of docs/results.md."""
    return "\n".join(
        [
            BLOCK_START,
            "## User scale: ViT-S/B shapes, RGB, 64-224 px",
            "",
            "Untrained accuracy (%, mean over the tasks the ancestry learned) and the "
            "fine-tuned mean; every task, seed and the targets are in "
            "[user_scale.md](user_scale.md).",
            "",
            *summary_table(results),
            BLOCK_END,
        ]
    )


def kept_block(markdown: Path) -> str | None:
    """The user-scale block of an existing docs/results.md, for ``tal eval`` to keep."""
    if not markdown.exists():
        return None
    text = markdown.read_text()
    start, end = text.find(BLOCK_START), text.find(BLOCK_END)
    if start < 0 or end < start:
        return None
    return text[start : end + len(BLOCK_END)]


def write_user_scale_report(results: dict[str, Any], folder: Path) -> list[Path]:
    """Writes user_scale.{md,json} into ``folder`` and replaces (or appends) the marked block
    of its results.md; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, markdown = folder / "user_scale.json", folder / "user_scale.md"
    json_path.write_text(json.dumps(results, indent=2))
    markdown.write_text(render(results))
    summary = folder / "results.md"
    block = results_block(results)
    old = kept_block(summary)
    text = summary.read_text() if summary.exists() else "# Results\n"
    text = text.replace(old, block) if old else text.rstrip("\n") + "\n\n" + block + "\n"
    summary.write_text(text)
    return [markdown, json_path, summary]


def read_user_scale(json_path: Path) -> dict[str, Any]:
    """Results of an earlier ``tal eval --user-scale`` run."""
    try:
        return json.loads(json_path.read_text())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{json_path} not found: run `tal eval --user-scale`") from exc
