import torch

from tal.arch.libraries import (
    PRESETS,
    RGB,
    VIT_S_WIDTH_64_RGB,
    InputFormat,
    build_library,
    in_corner,
    is_held_out,
    training_cost,
)
from tal.arch.parse import PLAIN_VIT_NAMES, spec_from_timm_name
from tal.arch.specs import ViTSpec


def test_libraries_are_deterministic_and_split_stably():
    first, again = build_library("cpu", seed=0), build_library.__wrapped__("cpu", seed=0)
    assert first == again
    assert not set(first.train) & set(first.held_out)
    assert all(is_held_out(s) for s in first.held_out)
    assert not any(is_held_out(s) for s in first.train)
    assert len(first.held_out) >= 5


def test_authors_vit_rules():
    library = build_library("vits-1k")
    for spec in library.train + library.held_out:
        assert isinstance(spec, ViTSpec) and 3 <= spec.depth <= 9
        low = 192 if spec.depth == 3 else 256
        high = 512 if spec.depth <= 5 else 768
        assert low <= spec.embed_dim <= high and spec.embed_dim % 32 == 0
        assert spec.embed_dim % spec.num_heads == 0 and spec.mlp_ratio == 4.0
    plus = build_library("vits-plus-1k")
    assert {s.depth for s in plus.train} == set(range(3, 13))
    assert all(s.embed_dim % 64 == 0 for s in plus.train)


def test_gpt_library_and_cpu_presets():
    gpts = build_library("gpts-1k")
    assert all(
        3 <= s.n_layer <= 9 and 72 <= s.n_embd <= 256 and s.n_embd % 8 == 0 for s in gpts.train
    )
    for name in ("cpu", "cpu-plus"):
        preset = PRESETS[name]
        library = build_library(name)
        assert preset.formats == (InputFormat(32, 8, 1),)
        assert all((s.img_size, s.patch_size, s.in_chans) == (32, 8, 1) for s in library.train)
        assert library.sampling_weights() is None  # drawn uniformly, as the shipped recipe
    assert build_library("cpu-plus").max_width > build_library("cpu").max_width


def test_scales_library_covers_the_shapes_and_formats_users_request():
    """Width up to ViT-S's, depth up to 12, 32-96 px, patch 8 and 16, grey and RGB, at most 64
    patches; timm's ViT-Ti/S/B held out at 224 px; none of them trained."""
    library = build_library("cpu-scales")
    train = library.train
    assert max(s.embed_dim for s in train) == 384 and max(s.depth for s in train) == 12
    assert any(s.depth == 12 and s.embed_dim == 384 for s in train)
    formats = {(s.img_size, s.patch_size, s.in_chans) for s in train}
    assert {size for size, _, _ in formats} == {32, 48, 64, 96}
    assert {patch for _, patch, _ in formats} == {8, 16}
    assert {chans for _, _, chans in formats} == {1, 3}
    assert all(s.num_patches <= 64 and s.embed_dim % s.num_heads == 0 for s in train)
    held_out = {s.canonical_json() for s in library.held_out}
    for name in PLAIN_VIT_NAMES:
        timm_shape = spec_from_timm_name(name).model_copy(update={"num_classes": 10})
        assert timm_shape.canonical_json() in held_out and timm_shape not in train
    assert not held_out & {s.canonical_json() for s in train}


def test_scales_library_holds_its_deep_wide_corner_but_not_the_user_scale_model():
    """Depth 9-12 at width 384 in both formats the user-scale evaluation asks for, every head
    count, joins the library; the evaluation's own model stays held out whatever its head
    count, because the hypernetwork's prediction does not depend on it."""
    preset = PRESETS["cpu-scales"]
    library = build_library("cpu-scales")
    corner = preset.corner
    assert corner.formats == (InputFormat(64, 16, RGB), InputFormat(64, 8, RGB))
    indices = library.corner_indices()
    assert indices and all(in_corner(corner, library.train[i]) for i in indices)
    assert {i for i, s in enumerate(library.train) if in_corner(corner, s)} == set(indices)
    everything = set(library.train) | set(library.held_out)
    for depth in range(9, 13):
        for heads in (6, 8, 12, 16, 24):
            for image_format in corner.formats:
                spec = VIT_S_WIDTH_64_RGB.model_copy(
                    update={
                        "depth": depth,
                        "num_heads": heads,
                        "img_size": image_format.img_size,
                        "patch_size": image_format.patch_size,
                        "num_classes": 10,
                    }
                )
                if depth == 12 and image_format.patch_size == 16:  # the evaluation's shape
                    assert spec not in library.train
                else:
                    assert spec in everything
                    assert (spec in library.train) == (not is_held_out(spec))
    assert VIT_S_WIDTH_64_RGB.model_copy(update={"num_classes": 10}) in library.held_out
    assert library.corner_share == corner.share
    for name in ("cpu", "gpt2-cpu"):
        assert build_library(name).corner_indices() == ()
        assert build_library(name).corner_share == 0.0


def test_scales_library_draws_cheap_architectures_more_often():
    library = build_library("cpu-scales")
    weights = library.sampling_weights()
    assert weights.shape == (len(library.train),)
    assert torch.isclose(weights.sum(), torch.tensor(1.0, dtype=weights.dtype))
    costs = torch.tensor([float(training_cost(s)) for s in library.train])
    cheapest, dearest = int(costs.argmin()), int(costs.argmax())
    assert weights[cheapest] > weights[dearest]
    expected_cost = float((weights * costs.double()).sum())
    assert expected_cost < float(costs.mean())  # cheaper per step than uniform draws
