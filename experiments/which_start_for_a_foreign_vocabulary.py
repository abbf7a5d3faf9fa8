"""Which start trains best for a GPT-2 whose vocabulary the token table does not cover?
(docs/lab/foreign_vocabulary.md)

The foreign-text check of ``tal eval --modality text`` (GPT-2, 4 blocks, width 128, the
licence texts as bytes: vocabulary 257) with more seeds, for four starts:

* ``hugging-face``: transformers' init of the whole model, seeded by the run's seed (the
  baseline of the check);
* ``hugging-face-per-tensor``: the same distribution, each tensor drawn from a generator seeded
  by its name and shape (what a learngene without a token table serves, and what the shipped
  checkpoint served for a foreign vocabulary before);
* ``served``: what the checkpoint serves now: decoded with rows drawn from the zero-mean normal
  with the token table rows' covariance as the token basis (``tal.hypernet.decoder.rows_like``);
* ``served-hugging-face-token-rows``: the served blocks with the token rows replaced by
  Hugging Face's init drawn per tensor;
* ``served-head-xS`` for each ``--head-scales S``: the served weights with the final layer
  norm's gain and bias times S, which scales the tied head's logits without touching the
  token embedding (S < 1 brings the untrained loss towards the uniform one).

Each is trained with the check's recipe (200 AdamW steps, lr 1e-3, 10% warm-up, cosine) and
scored on the held-out rows; prints nats per token before and after, per seed, then the mean
and spread.

    PYTHONPATH=$PWD python experiments/which_start_for_a_foreign_vocabulary.py --seeds 0 1 2 3 4
    PYTHONPATH=$PWD python experiments/which_start_for_a_foreign_vocabulary.py --seeds 0 1 \
        --starts served --head-scales 0.5 0.25 0.1 0
"""

from __future__ import annotations

import argparse
import statistics

from tal.checkpoints.learngene import Learngene, load_default
from tal.evaluation.foreign_text import foreign_splits, train_on_foreign_text
from tal.evaluation.text import FOREIGN_SPEC
from tal.evaluation.text_config import TextEvalConfig
from tal.hypernet.decoder import HF_INIT_STD, seeded_normal

TOKEN_ROWS = ("transformer.wte.weight", "lm_head.weight")
FINAL_NORM = ("transformer.ln_f.weight", "transformer.ln_f.bias")  # feeds the tied head only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=TextEvalConfig().foreign_steps)
    parser.add_argument("--starts", nargs="+", default=None, help="default: all four")
    parser.add_argument("--head-scales", type=float, nargs="*", default=[])
    args = parser.parse_args()

    learngene = load_default(device="cpu")
    train, held_out, vocab_size = foreign_splits("bytes", TextEvalConfig().max_tokens)
    spec = FOREIGN_SPEC.model_copy(update={"vocab_size": vocab_size})
    served = {k: v.clone() for k, v in learngene.predict(spec, None, "hf").items()}
    with_hugging_face_rows = dict(served)
    for name in TOKEN_ROWS:
        if name in served:
            rows = seeded_normal("transformer.wte.weight", vocab_size, spec.n_embd, HF_INIT_STD)
            with_hugging_face_rows[name] = rows  # tied: the head shares the embedding's rows
    per_tensor = Learngene.fresh().predict(spec, None, "hf")  # no token table: all drawn
    starts = {
        "hugging-face": lambda seed: None,
        "hugging-face-per-tensor": lambda seed: per_tensor,
        "served": lambda seed: served,
        "served-hugging-face-token-rows": lambda seed: with_hugging_face_rows,
    }
    if args.starts is not None:
        starts = {name: starts[name] for name in args.starts}
    for scale in args.head_scales:
        head_scaled = dict(served) | {name: served[name] * scale for name in FINAL_NORM}
        starts[f"served-head-x{scale:g}"] = lambda seed, weights=head_scaled: weights
    after: dict[str, list[float]] = {}
    for name, start in starts.items():
        for seed in args.seeds:
            before, end = train_on_foreign_text(
                spec, start(seed), train, held_out, args.steps, seed
            )
            after.setdefault(name, []).append(end)
            print(f"{name:30} seed {seed}: before {before:.3f}, after {end:.3f}", flush=True)
    print(f"\n{'start':30} {'mean after':>10} {'sd':>6}  per seed")
    for name, ends in after.items():
        spread = statistics.pstdev(ends)
        values = " ".join(f"{end:.3f}" for end in ends)
        print(f"{name:30} {statistics.mean(ends):10.3f} {spread:6.3f}  {values}")


if __name__ == "__main__":
    main()
