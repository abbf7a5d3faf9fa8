"""Text tasks over HTTP: registered from a JSONL / CSV of labelled texts, embedded by the
checkpoint's text ancestry, listed with their modality, kept to GPT-2s, and given a
``GPT2ForSequenceClassification`` head fitted to their texts."""

from __future__ import annotations

import csv
import io as pyio
import json

import httpx
import numpy as np
import pytest
import torch
from svc_support import MODEL, TINY_GPT2, TINY_VIT

from tal.arch.specs import GPT2Spec
from tal.arch.target_models import build_model
from tal.blobs import io
from tal.checkpoints.ancestry import NoAncestryError
from tal.checkpoints.learngene import Learngene
from tal.predict import predict_for_task_data
from tal.tasks.text.build import encode_padded
from tal.tasks.text.tokenizer import GPT2_VOCAB_SIZE
from tal.tasks.text.user_data import load_text_file

CLASS_WORDS = (
    ("apple", "banana", "cherry", "melon"),
    ("river", "mountain", "forest", "valley"),
    ("engine", "wheel", "brake", "piston"),
)
CLASSES = len(CLASS_WORDS)
MAX_REPEATS = 3
PER_CLASS = 16
SEQ_CLS = "hf-sequence-classification"
TEXT_GPT2 = {**TINY_GPT2, "vocab_size": GPT2_VOCAB_SIZE, "num_classes": CLASSES}
FITTED_ACCURACY = 0.6  # on new texts, from an untrained GPT-2's features; chance is 1/3


def labelled_texts(per_class: int = PER_CLASS, seed: int = 0) -> list[dict[str, str]]:
    """Texts that repeat one word of their class a few times, shuffled: a dozen distinct last
    tokens (the one a sequence classifier reads), so separable even by a GPT-2 nobody
    trained."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, words in enumerate(CLASS_WORDS):
        for _ in range(per_class):
            text = " ".join([str(rng.choice(words))] * int(rng.integers(1, MAX_REPEATS + 1)))
            rows.append({"text": text, "label": f"class-{label}"})
    return [rows[i] for i in rng.permutation(len(rows))]


def jsonl(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def csv_bytes(rows: list[dict[str, str]]) -> bytes:
    buffer = pyio.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["text", "label"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def upload(client: httpx.Client, name: str, data: bytes, filename: str) -> httpx.Response:
    files = {"file": (filename, data, "application/octet-stream")}
    return client.post("/v1/tasks", data={"name": name}, files=files)


def register(client: httpx.Client, name: str, data: bytes, filename: str = "t.jsonl") -> dict:
    response = upload(client, name, data, filename)
    assert response.status_code == 201, response.text
    return response.json()


def initialize(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/v1/initialize", json=body)


def accuracy(blob: bytes, spec: dict, rows: list[dict[str, str]]) -> float:
    """A real ``GPT2ForSequenceClassification`` with the blob's weights, scored text by text
    (no padding, so the model classifies each text's last token)."""
    tensors, _ = io.load_state_dict(blob)
    model = build_model(GPT2Spec.model_validate(spec), SEQ_CLS).eval()
    model.load_state_dict(tensors, strict=True)
    ids, lengths = encode_padded([row["text"] for row in rows], spec["n_positions"])
    labels = [int(row["label"].removeprefix("class-")) for row in rows]
    correct = 0
    with torch.no_grad():
        for row_ids, length, label in zip(ids, lengths, labels, strict=True):
            logits = model(input_ids=torch.from_numpy(row_ids[:length])[None]).logits
            correct += int(logits.argmax(1).item() == label)
    return correct / len(rows)


def test_registering_from_texts_lists_a_text_task(a: httpx.Client) -> None:
    created = register(a, "words", jsonl(labelled_texts()))
    assert created["support_images"] == PER_CLASS * CLASSES  # texts kept for heads
    assert created["classes"] == CLASSES
    assert created["note"] is None
    from_csv = register(a, "words-csv", csv_bytes(labelled_texts(seed=1)), "t.csv")
    assert from_csv["classes"] == CLASSES
    rows = {row["name"]: row for row in a.get("/v1/tasks").json()["tasks"]}
    assert rows["words"]["modality"] == rows["words-csv"]["modality"] == "text"
    assert rows["words"]["hash"] != rows["words-csv"]["hash"]


def test_text_task_and_image_task_keep_to_their_family(a: httpx.Client) -> None:
    register(a, "words-family", jsonl(labelled_texts()))
    refused = initialize(a, arch={**TINY_VIT, "num_classes": CLASSES}, task="words-family")
    assert refused.status_code == 422
    assert "registered from texts" in refused.json()["detail"]
    assert "family 'gpt2'" in refused.json()["detail"]
    served = initialize(a, arch=TEXT_GPT2, task="words-family", format="hf")
    assert served.status_code == 200, served.text
    assert served.headers["x-tal-head"] == "predicted"  # format hf has no classifier


def test_fitted_sequence_classification_head_classifies_new_texts(a: httpx.Client) -> None:
    register(a, "words-fit", jsonl(labelled_texts()))
    fitted = initialize(a, arch=TEXT_GPT2, task="words-fit", format=SEQ_CLS)
    predicted = initialize(a, arch=TEXT_GPT2, task="words-fit", format=SEQ_CLS, head="predicted")
    assert fitted.status_code == predicted.status_code == 200, fitted.text
    assert fitted.headers["x-tal-head"] == "discriminant"
    fitted_tensors, metadata = io.load_state_dict(fitted.content)
    predicted_tensors, _ = io.load_state_dict(predicted.content)
    assert metadata["tal.head"] == "discriminant" and "tal.input_norm" not in metadata
    changed = {k for k, v in fitted_tensors.items() if not torch.equal(v, predicted_tensors[k])}
    assert changed == {"score.weight"}
    new_texts = labelled_texts(per_class=10, seed=9)
    fitted_accuracy = accuracy(fitted.content, TEXT_GPT2, new_texts)
    assert fitted_accuracy >= FITTED_ACCURACY
    assert accuracy(predicted.content, TEXT_GPT2, new_texts) < fitted_accuracy


def test_service_fits_the_text_head_the_library_fits(a: httpx.Client, cluster) -> None:
    data = jsonl(labelled_texts(seed=3))
    register(a, "words-lib", data)
    served = initialize(a, arch=TEXT_GPT2, task="words-lib", format=SEQ_CLS, dtype="float16")
    assert served.status_code == 200, served.text
    learngene = Learngene.load(MODEL, "1", root=cluster.store)
    path = cluster.store.parent / "words-lib.jsonl"
    path.write_bytes(data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server (TAL_TORCH_THREADS=1): the same float sums
    try:
        expected = predict_for_task_data(
            learngene, TEXT_GPT2, load_text_file(path), SEQ_CLS, "float16"
        )
    finally:
        torch.set_num_threads(threads)
    tensors, _ = io.load_state_dict(served.content)
    assert tensors.keys() == expected.tensors.keys()
    for name, tensor in expected.tensors.items():
        assert torch.equal(tensors[name], tensor), name


def test_text_heads_that_cannot_be_fitted(a: httpx.Client) -> None:
    register(a, "words-bad", jsonl(labelled_texts()))
    cases = {
        "format hf": dict(arch=TEXT_GPT2, format="hf"),
        "class count": dict(arch={**TEXT_GPT2, "num_classes": 5}, format=SEQ_CLS),
        "vocabulary": dict(arch={**TEXT_GPT2, "vocab_size": 1000}, format=SEQ_CLS),
    }
    for case, body in cases.items():
        response = initialize(a, task="words-bad", head="discriminant", **body)
        assert response.status_code == 422, (case, response.text)
        auto = initialize(a, task="words-bad", **body)
        assert auto.status_code == 200 and auto.headers["x-tal-head"] == "predicted", case
    details = {
        case: initialize(a, task="words-bad", head="discriminant", **body).json()["detail"]
        for case, body in cases.items()
    }
    assert SEQ_CLS in details["format hf"]
    assert "set num_classes to 3" in details["class count"]
    assert f"vocab_size >= {GPT2_VOCAB_SIZE}" in details["vocabulary"]


@pytest.mark.parametrize(
    ("filename", "data", "expected"),
    [
        ("t.jsonl", b"", "holds no example"),
        ("t.jsonl", jsonl([{"text": "same", "label": "x"}] * 4), "at least 2 classes"),
        ("t.jsonl", b'{"text": "caf\xe9", "label": "a"}\n', "is not UTF-8"),
        ("t.jsonl", b'{"text": "no label"}\n', "lacks field(s) 'label'"),
        ("t.csv", b"words,label\nhello,a\n", "lacks column(s) 'text'"),
        ("t.txt", b"hello", "unknown file type '.txt'"),
    ],
    ids=["empty", "one-class", "not-utf8", "no-label", "no-text-column", "unknown-suffix"],
)
def test_bad_text_uploads_are_refused_clearly(
    a: httpx.Client, filename: str, data: bytes, expected: str
) -> None:
    response = upload(a, "words-refused", data, filename)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert expected in detail
    assert "/tmp" not in detail  # the server's temporary path stays private
    assert "words-refused" not in {row["name"] for row in a.get("/v1/tasks").json()["tasks"]}


def test_oversized_text_upload_is_refused(a: httpx.Client) -> None:
    rows = labelled_texts(per_class=20_000)  # a few MB, over server a's upload limit
    response = upload(a, "words-huge", jsonl(rows), "t.jsonl")
    assert response.status_code == 413, response.text


def test_checkpoint_without_text_ancestry_refuses_texts(a: httpx.Client, cluster) -> None:
    learngene = Learngene.load(MODEL, "2", root=cluster.store)
    assert learngene.text_ancestry is None
    rows = labelled_texts(per_class=4)
    path = cluster.store.parent / "words-none.jsonl"
    path.write_bytes(jsonl(rows))
    with pytest.raises(NoAncestryError, match="no text ancestry"):
        predict_for_task_data(learngene, TEXT_GPT2, load_text_file(path), SEQ_CLS)
