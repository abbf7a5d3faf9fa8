"""The shipped checkpoint predicts what it predicted when the reference was recorded.

``tests/fixtures/reference_predictions.safetensors`` holds the shipped checkpoint's float32
predictions for a tiny ViT (timm with a task, Hugging Face without), a tiny GPT-2 of another
vocabulary and one of GPT-2's vocabulary with a text task's sequence head. Code
changes that are meant to keep behaviour (refactors, a faster decoder) must reproduce them bit
for bit on a machine of the kind that recorded them (the same CPU model and torch CPU kernel
path), and to float rounding elsewhere. A new shipped checkpoint needs a new reference: rerun
``python tests/fixtures/record_reference_predictions.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tal.arch.parse import parse_arch
from tal.checkpoints.learngene import load_default
from tal.checkpoints.provenance import describe_environment

FIXTURE = Path(__file__).parents[1] / "fixtures" / "reference_predictions.safetensors"
OTHER_KERNELS_TOLERANCE = 1e-5  # relative, where another CPU kernel path rounds differently
# Bit for bit only on the recording machine's kind: the same kernel path (AVX512, ...) on
# another CPU vendor rounds differently (an Intel Xeon and an AMD EPYC, both AVX512, give
# different float32 bits), and so does another number of torch threads (another split of the
# sums).
SAME_KERNELS_KEYS = ("cpu_kernels", "cpu_model", "torch_threads")


def _reference() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(FIXTURE, "pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()  # noqa: SIM118


REFERENCE, METADATA = _reference()
CASES = [key for key in METADATA if key not in ("model_version", "environment")]


@pytest.fixture(scope="module")
def learngene():
    learngene = load_default(device="cpu")
    if learngene.model_version != METADATA["model_version"]:
        pytest.fail(
            f"the shipped checkpoint is {learngene.model_version} but the reference was "
            f"recorded with {METADATA['model_version']}: record a new reference"
        )
    return learngene


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_predictions_match_the_recorded_reference(learngene, case, dtype):
    recorded = json.loads(METADATA[case])
    recorded_on, here = json.loads(METADATA["environment"]), describe_environment()
    same_kernels = all(recorded_on[key] == here[key] for key in SAME_KERNELS_KEYS)
    predicted = learngene.predict(
        parse_arch(recorded["spec"]), recorded["task"], recorded["format"], dtype
    )
    names = [key.removeprefix(f"{case}/") for key in REFERENCE if key.startswith(f"{case}/")]
    assert sorted(predicted) == sorted(names)
    for name, tensor in predicted.items():
        expected = REFERENCE[f"{case}/{name}"].to(tensor.dtype)  # other dtypes: float32, cast
        if same_kernels:
            assert torch.equal(tensor, expected), name
        else:
            # float32 that differs in its last bits may round to the neighbouring half value;
            # another summation order errs relative to the tensor's scale, not to an entry
            # that sums to almost zero, so the absolute tolerance follows the largest entry
            tolerance = max(OTHER_KERNELS_TOLERANCE, torch.finfo(tensor.dtype).eps)
            reference = expected.float()
            scale = reference.abs().max().item()
            torch.testing.assert_close(
                tensor.float(), reference, rtol=tolerance, atol=tolerance * scale
            )
