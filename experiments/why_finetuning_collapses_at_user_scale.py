"""Why does fine-tuning undo the served weights at user scale? (docs/lab/user_scale.md)

At the ViT-S-width model (12 blocks, width 384, patch 16, 64 px RGB; ``--architecture`` takes
any of ``tal eval --user-scale``'s) and one task, for each
initialisation this prints, before any step: the loss, the logits' and the classifier head's
scale, each block's output RMS (the residual stream) and each block's gradient norm on one
batch; then fine-tunes it (AdamW, linear warm-up over the first epoch, then cosine) and prints
the test accuracy after each epoch.

Initialisations: ``random`` (timm), ``weight_selection`` and ``dct`` (transfers of the
ancestry), ``tal`` (what the service serves: predicted at the proxy, lifted, the residual
stream scaled by ``tal.transfer.lift.stream_gain``), ``tal-no-gain`` (the same lift without
the stream gain), and with ``--stream-gains`` the lift with other gains (``tal-gain-K``).
``--few-shot`` trains on the task's 300 balanced support images with every head fitted to them
(shrinkage LDA), as a task registered over the API is served. ``--layer-decays`` and
``--head-only-epochs`` try layer-wise learning-rate decay and linear probing first
(``FinetuneRecipe``); ``--epochs`` counts the epochs after the probing ones.

    PYTHONPATH=$PWD python experiments/why_finetuning_collapses_at_user_scale.py \
        --task fashion_mnist --few-shot --lr 5e-4 1e-4
"""

from __future__ import annotations

import argparse
import itertools

import torch
import torch.nn.functional as F

from tal.checkpoints.learngene import Learngene
from tal.evaluation.finetune import FinetuneRecipe, accuracy, finetune
from tal.evaluation.user_scale import (
    ARCHITECTURES,
    TAL,
    VIT_S_WIDTH_64_RGB,
    UserScale,
    UserScaleConfig,
)
from tal.heads.discriminant import fit_discriminant_head
from tal.heads.support import task_support
from tal.tasks import list_tasks, load_task
from tal.transfer.lift import scale_residual_stream, stream_gain
from tal.transfer.tile import tiles

NO_GAIN = "tal-no-gain"
INITS = ("random", "weight_selection", "dct", TAL, NO_GAIN)
STATS_BATCH = 64


def initial_model(scale: UserScale, init: str, spec, task: str, seed: int) -> torch.nn.Module:
    """``init``'s model; ``tal-no-gain`` and ``tal-gain-K`` rescale the served stream gain."""
    model = scale.model(TAL if init.startswith("tal") else init, spec, task, seed)
    if init.startswith("tal-"):
        proxy = scale.learngene.proxy(spec)
        embedding = scale.embedding(task)
        proxy_state = scale.learngene.hypernet(proxy, embedding, "timm", torch.float32)
        served = stream_gain(proxy, proxy_state, spec, tiles(proxy, spec))
        gain = 1.0 if init == NO_GAIN else float(init.removeprefix("tal-gain-"))
        model.load_state_dict(scale_residual_stream(dict(model.state_dict()), gain / served))
    return model


def statistics(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> str:
    """Loss, logit and head scale, per-block output RMS and gradient norm on one batch."""
    outputs: list[float] = []
    hooks = [
        block.register_forward_hook(
            lambda _m, _i, out: outputs.append(float(out.detach().pow(2).mean().sqrt()))
        )
        for block in model.blocks
    ]
    model.train()
    model.zero_grad()
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    for hook in hooks:
        hook.remove()
    grads = [
        float(torch.sqrt(sum(p.grad.pow(2).sum() for p in block.parameters())))
        for block in model.blocks
    ]
    patch_grad = float(model.patch_embed.proj.weight.grad.norm())
    model.zero_grad()
    return (
        f"loss {loss.item():.2f}, logit std {logits.std().item():.2f}, head weight norm "
        f"{model.head.weight.norm().item():.2f}, patch-embedding grad norm "
        f"{patch_grad:.2f}\n"
        f"    block output RMS {' '.join(f'{v:.2f}' for v in outputs)}\n"
        f"    block grad norm  {' '.join(f'{v:.2f}' for v in grads)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="fashion_mnist")
    parser.add_argument("--inits", nargs="+", default=list(INITS), choices=INITS)
    parser.add_argument("--stream-gains", nargs="*", type=float, default=[])
    parser.add_argument("--lr", nargs="+", type=float, default=[5e-4])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--examples", type=int, default=2048, help="training images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--few-shot", action="store_true")
    parser.add_argument("--layer-decays", nargs="+", type=float, default=[1.0])
    parser.add_argument("--head-only-epochs", nargs="+", type=int, default=[0])
    parser.add_argument("--architecture", choices=list(ARCHITECTURES), default=VIT_S_WIDTH_64_RGB)
    parser.add_argument("--test-examples", type=int, default=500)
    args = parser.parse_args()

    learngene = Learngene.load(device="cpu")
    scale = UserScale(learngene, UserScaleConfig(tasks=(args.task,)))
    classes = {info.name: info.num_classes for info in list_tasks()}[args.task]
    spec = ARCHITECTURES[args.architecture].model_copy(update={"num_classes": classes})
    fmt = {"image_size": spec.img_size, "in_chans": spec.in_chans}
    if args.few_shot:
        train = task_support(load_task(args.task, "train", **fmt))
    else:
        train = load_task(args.task, "train", limit=args.examples, **fmt)
    test = load_task(args.task, "test", limit=args.test_examples, **fmt)
    batch = 32 if args.few_shot else 64
    inits = [*args.inits, *(f"tal-gain-{gain:g}" for gain in args.stream_gains)]
    variants = itertools.product(
        inits, args.lr, args.layer_decays, args.head_only_epochs, args.seeds
    )
    for init, lr, decay, probe, seed in variants:
        model = initial_model(scale, init, spec, args.task, seed)
        if args.few_shot:
            fit_discriminant_head(model.eval(), train.images, train.labels)
        start = accuracy(model, test)
        stats = statistics(model, train.images[:STATS_BATCH], train.labels[:STATS_BATCH])
        recipe = FinetuneRecipe(
            epochs=probe + args.epochs,
            batch_size=batch,
            lr=lr,
            warmup_epochs=1,
            layer_decay=decay,
            head_only_epochs=probe,
        )
        curve = finetune(model, train, test, recipe, seed)
        print(
            f"{init} lr {lr:g} layer decay {decay:g} head-only epochs {probe} "
            f"seed {seed}: {start:.3f} -> "
            + " ".join(f"{a:.3f}" for a in curve.test_accuracy)
            + f" (train loss {' '.join(f'{x:.2f}' for x in curve.train_loss)})\n    "
            + stats,
            flush=True,
        )


if __name__ == "__main__":
    main()
