"""Untrained accuracy of the training-free baselines transferred from the shipped ancestry.

For each target ViT and task, the target's test split (brought to the target's size and
channels) is classified by: timm's random init, weight selection and the DCT transfer from
the shipped checkpoint's ancestry, and (at the ancestry's own spec) the ancestry itself. On the
tasks the ancestry learned, the transfers keep its head rows for the task; on the others
(glyphs_greek, emoji_groups) the head is timm's random one, so the table also shows a
shrinkage-LDA head fitted on 300 balanced training images (as the evaluation does for the
unseen task), which measures the transferred features.

    PYTHONPATH=$PWD python experiments/transfer_baselines.py --test-limit 2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.checkpoints.ancestry import Ancestry
from tal.evaluation.finetune import accuracy
from tal.heads.discriminant import fit_discriminant_head
from tal.heads.support import task_support
from tal.tasks import list_tasks, load_task
from tal.transfer import TRANSFER_METHODS, transfer_from_ancestry
from tal.transfer.layout import target_initial_state

STORE = Path("model_store/tal-default")
RANDOM = "random"
ANCESTRY = "ancestry"
TARGETS = {
    "d6-w128-p8-32-grey": ViTSpec(
        depth=6, embed_dim=128, num_heads=4, patch_size=8, img_size=32, in_chans=1
    ),
    "d12-w384-p16-64-rgb": ViTSpec(
        depth=12, embed_dim=384, num_heads=6, patch_size=16, img_size=64, in_chans=3
    ),
    "d2-w96-p8-32-grey": ViTSpec(
        depth=2, embed_dim=96, num_heads=3, patch_size=8, img_size=32, in_chans=1
    ),
}


def latest_ancestry() -> tuple[str, Ancestry]:
    path = sorted(STORE.glob("*/ancestry.safetensors"))[-1]
    return path.parent.name, Ancestry.from_bytes(path.read_bytes())


def evaluate(
    state: dict[str, torch.Tensor], spec: ViTSpec, task: str, limit: int, fit_head: bool
) -> float:
    model = build_model(spec, "timm")
    model.load_state_dict(state, strict=True)
    if fit_head:
        train = load_task(task, "train", image_size=spec.img_size, in_chans=spec.in_chans)
        support = task_support(train)
        fit_discriminant_head(model, support.images, support.labels)
    test = load_task(task, "test", limit=limit, image_size=spec.img_size, in_chans=spec.in_chans)
    return accuracy(model, test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test-limit", type=int, default=2000, help="test images per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    version, ancestry = latest_ancestry()
    print(f"ancestry tal-default/{version}: {ancestry.spec.canonical_json()}")
    targets = {"ancestry-spec": ancestry.spec, **TARGETS}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for target_name, base in targets.items():
        for info in list_tasks():
            spec = base.model_copy(update={"num_classes": info.num_classes})
            learned = info.name in ancestry.task_offsets
            methods = [RANDOM, *TRANSFER_METHODS]
            if target_name == "ancestry-spec" and learned:
                methods.append(ANCESTRY)
            row = results.setdefault(target_name, {}).setdefault(info.name, {})
            for method in methods:
                started = time.perf_counter()
                if method == RANDOM:
                    state = target_initial_state(spec, args.seed)
                elif method == ANCESTRY:
                    start, stop = ancestry.task_offsets[info.name]
                    state = {k: v.detach() for k, v in ancestry.model.state_dict().items()}
                    state["head.weight"] = state["head.weight"][start:stop]
                    state["head.bias"] = state["head.bias"][start:stop]
                else:
                    state = transfer_from_ancestry(ancestry, spec, method, info.name, args.seed)
                seconds = time.perf_counter() - started
                for fit_head in (False, True) if not learned else (False,):
                    label = f"{method}+lda" if fit_head else method
                    row[label] = evaluate(state, spec, info.name, args.test_limit, fit_head)
                print(
                    f"{target_name:22s} {info.name:14s} {method:17s} "
                    + " ".join(f"{k}={v:.3f}" for k, v in row.items() if k.startswith(method))
                    + f"  (transfer {seconds:.2f}s)",
                    flush=True,
                )
    if args.out:
        args.out.write_text(json.dumps({"ancestry": version, "results": results}, indent=2))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
