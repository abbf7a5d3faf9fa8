"""GPT-2 layouts: every format loads strictly into the real transformers classes, the token
embedding is decoded from the token table (or rows drawn like it for another vocabulary; Hugging
Face's seeded init without a table), and the sequence
classifier reads the last real token as transformers does."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tal.arch.formats import HF_SEQUENCE_CLASSIFICATION, format_num_params
from tal.arch.parse import parse_arch
from tal.arch.specs import GPT2Spec, SpecError, ViTSpec
from tal.arch.target_models import build_model, gpt2_pad_token_id
from tal.checkpoints.learngene import Learngene
from tal.hypernet import decoder as decoder_module
from tal.hypernet import preset
from tal.hypernet.decoder import LowRankMatrix, in_threads, rows_like

PROPERTY_SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
BASIS = 64
FORMATS = ("hf", HF_SEQUENCE_CLASSIFICATION)


@st.composite
def gpt2_specs(draw):
    heads = draw(st.integers(1, 4))
    return GPT2Spec(
        n_layer=draw(st.integers(1, 3)),
        n_embd=heads * draw(st.integers(1, 16)),
        n_head=heads,
        n_inner=draw(st.none() | st.integers(1, 96)),
        vocab_size=draw(st.integers(2, 300)),
        n_positions=draw(st.integers(1, 40)),
        tie_word_embeddings=draw(st.booleans()),
        num_classes=draw(st.integers(1, 12)),
    )


def learngene_with_table(vocab_size: int, seed: int = 0) -> Learngene:
    learngene = Learngene.fresh()
    table = torch.randn(vocab_size, BASIS, generator=torch.Generator().manual_seed(seed))
    learngene.hypernet.set_token_table(table)
    return learngene


def run(spec, format, state):
    model = build_model(spec, format).eval()
    model.load_state_dict(state, strict=True)
    tokens = torch.randint(0, spec.vocab_size, (2, min(5, spec.n_positions)))
    with torch.no_grad():
        logits = model(input_ids=tokens).logits
    assert torch.isfinite(logits).all()
    return model, logits


@PROPERTY_SETTINGS
@given(spec=gpt2_specs(), covered=st.booleans())
def test_every_layout_loads_strictly_into_transformers(spec, covered):
    """Language model and sequence classifier, tied or not, with a token table covering the
    vocabulary or not."""
    learngene = learngene_with_table(spec.vocab_size if covered else spec.vocab_size + 1)
    for format in FORMATS:
        state = learngene.predict(spec, format=format)
        model, logits = run(spec, format, state)
        expected = spec.vocab_size if format == "hf" else spec.num_classes
        assert logits.shape[-1] == expected
        assert format_num_params(spec, format) == sum(p.numel() for p in model.parameters())
    state = learngene.predict(spec, format="hf")
    table, _ = learngene.hypernet.decoder._token_basis(spec.vocab_size)
    assert torch.equal(table, learngene.hypernet.decoder.token_table) == covered
    assert (
        torch.equal(table, rows_like(learngene.hypernet.decoder.token_table, spec.vocab_size))
        != covered
    )


def test_a_vocabulary_the_table_does_not_cover_decodes_rows_drawn_like_the_table():
    """A foreign vocabulary (bytes) is decoded with rows drawn with the table rows' covariance
    and no mean row (seeded: the same every time) as its token basis."""
    spec = GPT2Spec(n_layer=2, n_embd=64, n_head=2, vocab_size=257, n_positions=32)
    learngene = learngene_with_table(50_257)  # the table is GPT-2's, the spec's vocabulary not
    shared_row = 1.0  # every token of the table shares this offset; a drawn row does not
    table = learngene.hypernet.decoder.token_table + shared_row
    learngene.hypernet.set_token_table(table)
    drawn = rows_like(table, 257)
    assert torch.equal(drawn, rows_like(table, 257))
    torch.testing.assert_close(drawn.mean(0), torch.zeros(BASIS), atol=0.25, rtol=0)
    ratio = drawn.var(0) / table.var(0)
    assert float(ratio.min()) > 0.6 and float(ratio.max()) < 1.6
    state = {k: v.clone() for k, v in learngene.predict(spec, format="hf").items()}
    half = learngene.predict(spec, format="hf", dtype="float16")["transformer.wte.weight"]
    assert torch.equal(half, state["transformer.wte.weight"].half())
    learngene.hypernet.set_token_table(drawn)  # the same hypernetwork, with those rows as table
    decoded = learngene.predict(spec, format="hf")
    for name, tensor in state.items():
        torch.testing.assert_close(decoded[name], tensor, msg=name)


def test_drawn_token_bases_are_kept_within_their_byte_cap(monkeypatch):
    """Drawn bases are kept oldest-out within TOKEN_BASIS_CACHE_BYTES; the table itself costs
    nothing; a basis over the cap is served the same but never kept."""
    decoder = learngene_with_table(1000).hypernet.decoder
    cap = 2 * 302 * BASIS * 4  # two drawn vocabularies of about 300 tokens, float32
    monkeypatch.setattr(decoder_module, "TOKEN_BASIS_CACHE_BYTES", cap)
    decoder._token_basis(1000)  # the table's own size: no drawn rows
    assert decoder.token_basis_cache_bytes == 0
    first, _ = decoder._token_basis(300)
    decoder._token_basis(301)
    assert set(decoder._token_bases) == {1000, 300, 301}
    decoder._token_basis(302)  # over the cap: the oldest drawn one goes
    assert decoder.token_basis_cache_bytes <= cap
    assert {301, 302} <= set(decoder._token_bases) and 300 not in decoder._token_bases
    again, _ = decoder._token_basis(300)  # drawn again, the same rows
    assert torch.equal(again, first)
    kept = dict(decoder._token_bases)
    huge, _ = decoder._token_basis(700)  # alone larger than the cap
    assert huge.shape == (700, BASIS) and decoder._token_bases == kept


def test_a_learngene_without_a_token_table_serves_hugging_faces_init():
    """A learngene that never learned GPT-2 (no token table) serves transformers' own
    initialisation of the whole model, seeded per tensor."""
    spec = GPT2Spec(n_layer=2, n_embd=64, n_head=2, vocab_size=257, n_positions=32)
    state = Learngene.fresh().predict(spec, format="hf")
    reference = build_model(spec, "hf").state_dict()  # transformers' init, its own seed
    for name, tensor in state.items():
        assert tensor.shape == reference[name].shape
        assert tensor.std().item() == pytest.approx(reference[name].std().item(), rel=0.1, abs=1e-6)
        assert tensor.mean().item() == pytest.approx(reference[name].mean().item(), abs=2e-3)
    assert torch.equal(state["transformer.h.0.ln_1.weight"], torch.ones(spec.n_embd))


def test_threads_draw_hugging_faces_init_with_the_same_values():
    spec = GPT2Spec(n_layer=3, n_embd=64, n_head=2, vocab_size=257, n_positions=32)
    learngene = Learngene.fresh()  # no token table: every tensor is drawn
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = learngene.predict(spec, format="hf")
        torch.set_num_threads(3)
        parallel = learngene.predict(spec, format="hf")
    finally:
        torch.set_num_threads(threads)
    assert serial.keys() == parallel.keys()
    assert all(torch.equal(serial[name], parallel[name]) for name in serial)


def test_in_threads_keeps_order_and_the_callers_modes():
    def modes(item: int) -> tuple[int, bool, bool]:
        return item, torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    with torch.inference_mode():
        seen = list(in_threads(modes, range(20), threads=3))
    assert seen == [(i, True, False) for i in range(20)]
    with torch.no_grad():
        assert list(in_threads(modes, range(5), threads=2)) == [(i, False, False) for i in range(5)]


def test_token_rows_come_from_the_table_not_the_row_index():
    spec = GPT2Spec(n_layer=1, n_embd=128, n_head=2, vocab_size=500, n_positions=16)
    learngene = learngene_with_table(spec.vocab_size)
    table = learngene.hypernet.decoder.token_table
    table[7] = table[400]  # two tokens the ancestry embeds alike
    learngene.hypernet.set_token_table(table)
    wte = learngene.predict(spec, format="hf")["transformer.wte.weight"]
    assert torch.equal(wte[7], wte[400])
    assert not torch.allclose(wte[7], wte[8])  # neighbouring ids: nothing in common
    assert wte.std().item() == pytest.approx(0.02, rel=0.05)  # the embedding std (gain 1)
    assert torch.linalg.matrix_rank(wte).item() <= BASIS
    # the baselines decode token rows like any other rows (GHN-3 tiles them)
    ghn3 = Learngene.fresh(preset("ghn3"))
    ghn3.hypernet.set_token_table(table)
    tiled = ghn3.predict(spec, format="hf")["transformer.wte.weight"]
    assert torch.equal(tiled[0], tiled[BASIS])


def test_factored_prediction_is_the_composed_one():
    spec = GPT2Spec(n_layer=1, n_embd=48, n_head=2, vocab_size=300, n_positions=16, num_classes=3)
    learngene = learngene_with_table(spec.vocab_size)
    dense = learngene.predict(spec, format=HF_SEQUENCE_CLASSIFICATION)
    factored = learngene.hypernet.factored(spec, None, HF_SEQUENCE_CLASSIFICATION)
    wte = factored["transformer.wte.weight"]
    assert isinstance(wte, LowRankMatrix) and wte.shape == (300, 48)
    torch.testing.assert_close(wte.dense(), dense["transformer.wte.weight"])
    ids = torch.tensor([[3, 299, 0]])
    torch.testing.assert_close(wte.rows(ids), dense["transformer.wte.weight"][ids])
    torch.testing.assert_close(factored["score.weight"], dense["score.weight"])


def test_the_sequence_classifier_reads_the_last_real_token():
    spec = GPT2Spec(n_layer=2, n_embd=32, n_head=2, vocab_size=120, n_positions=16, num_classes=4)
    state = Learngene.fresh().predict(spec, format=HF_SEQUENCE_CLASSIFICATION)
    model = build_model(spec, HF_SEQUENCE_CLASSIFICATION).eval()
    model.load_state_dict(state, strict=True)
    assert model.config.pad_token_id == gpt2_pad_token_id(spec) == 119
    text = torch.tensor([[5, 17, 33]])
    padded = torch.tensor([[5, 17, 33, 119, 119]])
    with torch.no_grad():
        alone = model(input_ids=text).logits
        with_pads = model(input_ids=padded).logits
        last = model.transformer(input_ids=text).last_hidden_state[:, -1] @ state["score.weight"].T
    torch.testing.assert_close(alone, with_pads)
    torch.testing.assert_close(alone, last)


def test_format_errors_say_what_to_fix():
    lm = GPT2Spec(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=8)
    with pytest.raises(SpecError, match="needs the spec's num_classes"):
        Learngene.fresh().predict(lm, format=HF_SEQUENCE_CLASSIFICATION)
    vit = ViTSpec(depth=1, embed_dim=16, num_heads=2, img_size=16, patch_size=8)
    with pytest.raises(SpecError, match="is for GPT-2"):
        Learngene.fresh().predict(vit, format=HF_SEQUENCE_CLASSIFICATION)
    assert "score.weight" not in Learngene.fresh().predict(
        lm.model_copy(update={"num_classes": 3}), format="hf"
    )


def test_hugging_face_configs_name_the_classifier():
    import transformers

    base = {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2}
    assert parse_arch(base).num_classes == 0
    assert parse_arch({**base, "num_labels": 5}).num_classes == 5
    classifier = {**base, "architectures": ["GPT2ForSequenceClassification"]}
    assert parse_arch(classifier).num_classes == 2  # transformers' default, left out of the file
    full = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2).to_dict()  # holds id2label
    assert parse_arch(full).num_classes == 0
    saved = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, num_labels=7)
    saved.architectures = ["GPT2ForSequenceClassification"]
    assert parse_arch(saved.to_diff_dict()).num_classes == 7
