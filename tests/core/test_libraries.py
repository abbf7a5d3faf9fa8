from tal.arch.libraries import PRESETS, build_library, is_held_out
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
        assert all(s.img_size == preset.img_size == 32 for s in library.train)
    assert build_library("cpu-plus").max_width > build_library("cpu").max_width
