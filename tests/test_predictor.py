"""rtoolkit.predictor: the three tasks against transformers' pipelines, batching, threads, errors, and backends."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rtoolkit import Predictor
from rtoolkit.cli import main
from rtoolkit.predictor import _Artifact, _onnx_order
from tests.conftest import shared_data

MASKED = [
    "The old man looked at the <mask> and smiled.",
    "She could not <mask> it.",
    "It was a <mask> day, and Emma was in good spirits.",
    '"I do not <mask> so," said Mr. Knightley, who was very kind and very sensible about the whole affair.',
    "<mask> was here.",
]


def sst2_dev(limit: int) -> list[str]:
    with open(shared_data("sst2", "dev.tsv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"].strip() for r in rows[:limit]]


@pytest.fixture(scope="module")
def mlm(trained_mlm_dir) -> Predictor:
    return Predictor.from_pretrained(trained_mlm_dir, backend="torch", batch_size=2)


@pytest.fixture(scope="module")
def clf(classifier_dir) -> Predictor:
    return Predictor.from_pretrained(classifier_dir, backend="torch", batch_size=3)


def _assert_same_predictions(ours, theirs, atol):
    assert [p["token"] for p in ours] == [p["token"] for p in theirs]
    assert [p["token_str"] for p in ours] == [p["token_str"] for p in theirs]
    assert [p["sequence"] for p in ours] == [p["sequence"] for p in theirs]
    np.testing.assert_allclose([p["score"] for p in ours], [p["score"] for p in theirs], atol=atol)


# ----------------------------------------------------------------------------------------- the tasks
def test_fill_mask_matches_transformers_pipeline(mlm, trained_mlm_dir):
    from transformers import pipeline

    hf = pipeline("fill-mask", model=str(trained_mlm_dir), top_k=5)
    ours = mlm.fill_mask(MASKED, top_k=5)
    assert len(ours) == len(MASKED)
    for text, result in zip(MASKED, ours, strict=True):
        assert len(result) == 5
        assert result == sorted(result, key=lambda p: -p["score"])
        _assert_same_predictions(result, hf(text), atol=1e-5)
    # One text in, one list of predictions out.
    _assert_same_predictions(mlm.fill_mask(MASKED[0], top_k=5), ours[0], atol=1e-6)


def test_fill_mask_gives_one_list_per_mask(mlm):
    text = "The <mask> looked at the <mask> and smiled."
    first, second = mlm.fill_mask(text, top_k=3)
    assert len(first) == len(second) == 3
    assert first[0]["sequence"] == "The" + first[0]["token_str"] + " looked at the <mask> and smiled."
    assert second[0]["sequence"] == "The <mask> looked at the" + second[0]["token_str"] + " and smiled."
    # Each mask's distribution is the one the model gives at that position.
    ids = mlm.tokenizer.encode(text)
    positions = [i for i, t in enumerate(ids) if t == mlm.tokenizer.mask_token_id]
    with torch.no_grad():
        logits = mlm._backend.model(torch.tensor([ids])).logits[0]  # (T, V)
    for preds, pos in zip((first, second), positions, strict=True):
        probs = logits[pos].softmax(-1)
        assert [p["token"] for p in preds] == probs.topk(3).indices.tolist()
        np.testing.assert_allclose([p["score"] for p in preds], probs.topk(3).values.numpy(), atol=1e-6)


def test_classify_matches_transformers_pipeline(clf, classifier_dir):
    from transformers import pipeline

    texts = sst2_dev(7)
    hf = pipeline("text-classification", model=str(classifier_dir), top_k=None)
    ours = clf.classify(texts, top_k=None)
    for mine, theirs in zip(ours, hf(texts), strict=True):
        assert [r["label"] for r in mine] == [r["label"] for r in theirs]
        np.testing.assert_allclose([r["score"] for r in mine], [r["score"] for r in theirs], atol=1e-5)
    top1 = clf.classify(texts)
    assert top1 == [r[0] for r in ours]
    assert set(top1[0]) == {"label", "score"}
    # One text in, one result out (alone it is padded differently: equal up to rounding).
    assert clf.classify(texts[0]) == pytest.approx(top1[0], abs=1e-6)
    assert [r["label"] for r in clf.classify(texts[0], top_k=2)] == [r["label"] for r in ours[0]]


def test_classify_pairs_use_the_roberta_pair_format(clf, classifier_dir):
    from transformers import pipeline

    hf = pipeline("text-classification", model=str(classifier_dir), top_k=None)
    firsts, seconds = (
        ["A man is playing a guitar.", "A woman is slicing onions."],
        ["A man plays.", "Nobody cooks."],
    )
    ours = clf.classify(firsts, seconds, top_k=None)
    theirs = hf([{"text": a, "text_pair": b} for a, b in zip(firsts, seconds, strict=True)])
    for mine, ref in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(
            [r["score"] for r in mine],
            [r["score"] for r in sorted(ref, key=lambda r: -r["score"])],
            atol=1e-5,
        )
    assert ours != clf.classify(firsts, top_k=None)  # the second text changes the input


def test_regression_model_returns_a_score(tmp_path, tokenizer, tiny_config):
    from rtoolkit.model import RobertaForSequenceClassification

    tiny_config.num_labels = 1
    model = RobertaForSequenceClassification(tiny_config).eval()
    folder = model.save_pretrained(tmp_path / "stsb", tokenizer=tokenizer)
    predictor = Predictor.from_pretrained(folder)
    result = predictor.classify("A man is playing a guitar.", "A man plays the guitar.")
    ids = tokenizer("A man is playing a guitar.", "A man plays the guitar.")
    with torch.no_grad():
        expected = model(**ids).logits.item()
    assert set(result) == {"score"}
    assert result["score"] == pytest.approx(expected, abs=1e-6)


def test_embed_mean_and_cls_pooling(mlm, trained_mlm_dir):
    from transformers import AutoModel

    texts = MASKED[:3] + ["A short one."]
    hf = AutoModel.from_pretrained(str(trained_mlm_dir), add_pooling_layer=False).eval()
    batch = mlm.tokenizer(texts)
    with torch.no_grad():
        hidden = hf(**batch).last_hidden_state  # (B, T, H)
    mask = batch["attention_mask"][..., None].float()
    mean = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    mean /= np.linalg.norm(mean, axis=-1, keepdims=True)
    ours = mlm.embed(texts)
    assert ours.shape == (4, mlm.config.hidden_size) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, mean, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-6)
    cls = mlm.embed(texts, pooling="cls", normalize=False)
    np.testing.assert_allclose(cls, hidden[:, 0].numpy(), atol=1e-5)
    single = mlm.embed(texts[0])
    assert single.shape == (mlm.config.hidden_size,)
    np.testing.assert_allclose(single, ours[0], atol=1e-6)


def test_a_hugging_face_folder_is_served(tmp_path, tokenizer):
    from transformers import RobertaConfig as HFConfig
    from transformers import RobertaForMaskedLM as HFMaskedLM
    from transformers import pipeline

    config = HFConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
    )
    folder = tmp_path / "hf"
    HFMaskedLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    predictor = Predictor.from_pretrained(folder)
    assert predictor.backend == "torch" and predictor.max_length == 64
    ours = predictor.fill_mask(MASKED[0], top_k=3)
    _assert_same_predictions(ours, pipeline("fill-mask", model=str(folder), top_k=3)(MASKED[0]), atol=1e-5)


# --------------------------------------------------------------------------------- batching and threads
def test_buckets_keep_input_order_and_match_one_by_one(trained_mlm_dir, classifier_dir):
    texts = sst2_dev(11)
    masked = [t.replace(" the ", " <mask> ", 1) if " the " in t else t + " <mask>" for t in texts]
    wide = Predictor.from_pretrained(trained_mlm_dir, batch_size=4)
    one = Predictor.from_pretrained(trained_mlm_dir, batch_size=1)
    for a, b in zip(wide.fill_mask(masked), [one.fill_mask(t) for t in masked], strict=True):
        _assert_same_predictions(a, b, atol=1e-5)
    np.testing.assert_allclose(wide.embed(texts), np.stack([one.embed(t) for t in texts]), atol=1e-5)
    clf4 = Predictor.from_pretrained(classifier_dir, batch_size=4)
    clf1 = Predictor.from_pretrained(classifier_dir, batch_size=1)
    np.testing.assert_allclose(
        [r["score"] for r in clf4.classify(texts)], [clf1.classify(t)["score"] for t in texts], atol=1e-5
    )


def test_unpadded_batches_run_attention_without_a_mask(trained_mlm_dir, monkeypatch):
    """One text (or texts of one length) has no padding: attention gets attn_mask=None (flash-eligible on CUDA)."""
    seen = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        seen.append(attn_mask is None)
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    predictor = Predictor.from_pretrained(trained_mlm_dir)
    predictor.embed("A fine film.")
    assert seen and all(seen)
    seen.clear()
    predictor.embed(["A fine film.", "A much longer and rather less fine film than that one."])
    assert seen and not any(seen)


def test_compiled_torch_backend_pads_to_a_few_shapes_and_agrees(trained_mlm_dir, mlm):
    compiled = Predictor.from_pretrained(trained_mlm_dir, compile=True, batch_size=4)
    assert [compiled._backend.pad_width(w, 128) for w in (3, 16, 17, 100, 128)] == [16, 16, 32, 128, 128]
    assert mlm._backend.pad_width(17, 128) == 17
    texts = sst2_dev(4)
    np.testing.assert_allclose(compiled.embed(texts), mlm.embed(texts), atol=1e-5)
    with pytest.raises(ValueError, match="precision 'bf16' on the torch backend needs device='cuda'"):
        Predictor.from_pretrained(trained_mlm_dir, precision="bf16")


def test_concurrent_calls_from_threads_give_the_serial_answers(mlm):
    texts = sst2_dev(24)
    masked = [t + " <mask>" for t in texts]
    expected = [mlm.fill_mask(t, top_k=3) for t in masked]
    barrier = threading.Barrier(8)

    def worker(offset: int):
        barrier.wait()  # start together
        return [(i, mlm.fill_mask(masked[i], top_k=3)) for i in range(offset, len(masked), 8)]

    with ThreadPoolExecutor(8) as pool:
        results = [r for part in pool.map(worker, range(8)) for r in part]
    assert len(results) == len(masked)
    for i, got in results:
        _assert_same_predictions(got, expected[i], atol=1e-6)


def test_long_text_is_truncated_with_a_warning_or_rejected(mlm, caplog):
    long_text = "It was a <mask> day. " + "Emma walked on and on through the village. " * 30
    assert len(mlm.tokenizer.encode(long_text, max_length=None)) > mlm.max_length
    with caplog.at_level(logging.WARNING, logger="rtoolkit.predictor"):
        result = mlm.fill_mask(long_text)
    assert len(result) == 5
    assert "exceed the 128-token limit and were truncated" in caplog.text
    with pytest.raises(
        ValueError, match=r"1 text\(s\) exceed the 128-token limit \(texts\[0\] has \d+ tokens\)"
    ):
        mlm.fill_mask(long_text, truncation=False)
    late_mask = "Emma walked on and on through the village. " * 30 + "It was a <mask> day."
    with pytest.raises(ValueError, match="<mask> lies beyond the 128-token limit"):
        mlm.fill_mask(late_mask)
    short = Predictor.from_pretrained(mlm.source, max_length=16)
    assert short.max_length == 16
    with pytest.raises(ValueError, match="16-token limit"):
        short.embed(long_text, truncation=False)


# --------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p.fill_mask("No mask in this sentence."), "the text has no <mask> token to fill"),
        (lambda p: p.fill_mask(["A <mask>.", "none here"]), r"texts\[1\] has no <mask> token"),
        (lambda p: p.fill_mask(""), "the text is empty; pass some text"),
        (lambda p: p.fill_mask("   "), "the text is empty"),
        (lambda p: p.fill_mask([]), "texts is an empty list"),
        (lambda p: p.fill_mask(["A <mask>.", 3]), r"texts\[1\] must be a string, got int"),
        (lambda p: p.fill_mask(None), "texts must be a string or a list of strings, got NoneType"),
        (lambda p: p.fill_mask("A <mask>.", top_k=0), "top_k must be a positive integer"),
        (lambda p: p.classify("A fine film."), "has a masked-LM head, so it cannot do classify"),
        (lambda p: p.embed("A fine film.", pooling="max"), "pooling must be one of"),
    ],
)
def test_bad_input_raises_value_error_saying_what_to_fix(mlm, call, message):
    with pytest.raises(ValueError, match=message):
        call(mlm)


def test_classifier_errors(clf):
    with pytest.raises(ValueError, match="has a classification head, so it cannot do fill-mask"):
        clf.fill_mask("A <mask>.")
    with pytest.raises(ValueError, match=r"got 2 text\(s\) but 1 text_pair\(s\)"):
        clf.classify(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="top_k must be a positive integer or None"):
        clf.classify("a", top_k=0)


def test_loading_errors(tmp_path, trained_mlm_dir):
    with pytest.raises(ValueError, match="model folder not found"):
        Predictor.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="has no config.json"):
        Predictor.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="backend must be one of"):
        Predictor.from_pretrained(trained_mlm_dir, backend="tflite")
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
        Predictor.from_pretrained(trained_mlm_dir, device="gpu")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        Predictor.from_pretrained(trained_mlm_dir, batch_size=0)
    with pytest.raises(ValueError, match="precision 'int8' is not available on the torch backend"):
        Predictor.from_pretrained(trained_mlm_dir, precision="int8")
    with pytest.raises(ValueError, match="holds no ONNX model"):
        Predictor.from_pretrained(trained_mlm_dir, backend="onnx")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            Predictor.from_pretrained(trained_mlm_dir, device="cuda")


# --------------------------------------------------------------------------------------------- backends
@pytest.fixture(scope="module")
def mlm_export(tmp_path_factory, trained_mlm_dir):
    pytest.importorskip("onnxruntime")
    from rtoolkit.export import export_onnx

    return export_onnx(trained_mlm_dir, tmp_path_factory.mktemp("mlm_export")).parent


def test_torch_and_onnx_agree_on_real_sentences(mlm, mlm_export):
    onnx = Predictor.from_pretrained(mlm_export)
    assert onnx.backend == "onnx" and onnx.artifact.name == "model.onnx" and onnx.tasks == {"fill-mask"}
    masked = MASKED + [t + " <mask>" for t in sst2_dev(20)]
    for a, b in zip(mlm.fill_mask(masked), onnx.fill_mask(masked), strict=True):
        assert a[0]["token"] == b[0]["token"]
        np.testing.assert_allclose([p["score"] for p in a], [p["score"] for p in b], atol=1e-4)
    with pytest.raises(
        ValueError, match="exported for 'fill-mask', so it cannot do embed; export with --task embedding"
    ):
        onnx.embed("A sentence.")
    with pytest.raises(ValueError, match="holds no PyTorch weights"):
        Predictor.from_pretrained(mlm_export, backend="torch")


def test_onnx_classifier_and_embedding_exports_agree_with_torch(
    tmp_path, clf, mlm, classifier_dir, trained_mlm_dir
):
    pytest.importorskip("onnxruntime")
    from rtoolkit.export import export_onnx

    texts = sst2_dev(20)
    cls_onnx = Predictor.from_pretrained(export_onnx(classifier_dir, tmp_path / "cls").parent)
    for a, b in zip(clf.classify(texts, top_k=None), cls_onnx.classify(texts, top_k=None), strict=True):
        assert a[0]["label"] == b[0]["label"]
        np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-4)
    emb_onnx = Predictor.from_pretrained(
        export_onnx(trained_mlm_dir, tmp_path / "emb", task="embedding").parent
    )
    assert emb_onnx.tasks == {"embed"}
    np.testing.assert_allclose(emb_onnx.embed(texts), mlm.embed(texts), atol=1e-4)


def test_auto_prefers_the_optimized_graph_and_int8_only_on_request(tmp_path, trained_mlm_dir, mlm):
    pytest.importorskip("onnxruntime")
    export = pytest.importorskip("rtoolkit.export.pipeline").export
    out = tmp_path / "all"
    export(trained_mlm_dir, out, optimize=True, quantize="int8")
    auto = Predictor.from_pretrained(out)
    assert (auto.backend, auto.artifact.name, auto.precision) == ("onnx", "model.optimized.onnx", "fp32")
    int8 = Predictor.from_pretrained(out, precision="int8")
    assert int8.artifact.name == "model.int8.onnx" and int8.precision == "int8"
    for a, b in zip(mlm.fill_mask(MASKED), auto.fill_mask(MASKED), strict=True):
        assert a[0]["token"] == b[0]["token"]
        np.testing.assert_allclose([p["score"] for p in a], [p["score"] for p in b], atol=1e-4)


def test_onnx_preference_order():
    def art(name, precision, optimized, passed=True):
        return _Artifact(
            path=Path(name),
            format="onnx",
            precision=precision,
            optimized=optimized,
            passed=passed,
        )

    files = [
        art("model.onnx", "fp32", False),
        art("model.int8.onnx", "int8", False),
        art("model.fp16.onnx", "fp16", False),
        art("model.optimized.onnx", "fp32", True),
    ]
    names = lambda arts: [a.path.name for a in arts]  # noqa: E731
    assert names(_onnx_order(files, None, "cpu")) == ["model.optimized.onnx", "model.onnx"]
    assert names(_onnx_order(files, "int8", "cpu")) == ["model.int8.onnx"]
    assert names(_onnx_order(files, None, "cuda"))[0] == "model.fp16.onnx"


def test_artifact_that_failed_validation_is_skipped_with_a_warning(tmp_path, mlm_export, caplog):
    folder = tmp_path / "export"
    shutil.copytree(mlm_export, folder)
    manifest = json.loads((folder / "export_manifest.json").read_text())
    manifest["artifacts"][0]["passed"] = False
    (folder / "export_manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="rtoolkit.predictor"):
        predictor = Predictor.from_pretrained(folder)
    assert predictor.backend == "onnx"
    assert "failed validation against PyTorch" in caplog.text
    (folder / "export_manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"export_manifest.json: invalid JSON at line 1"):
        Predictor.from_pretrained(folder)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_torch_backend_in_every_precision_and_compiled_agrees_with_cpu(trained_mlm_dir, mlm):
    masked = MASKED + [t + " <mask>" for t in sst2_dev(20)]
    expected = mlm.fill_mask(masked)
    for precision, compile_, atol in [("fp32", False, 1e-4), ("bf16", False, 3e-2), ("fp16", False, 1e-2),
                                      ("fp16", True, 1e-2)]:  # fmt: skip
        gpu = Predictor.from_pretrained(
            trained_mlm_dir, backend="torch", device="cuda", precision=precision, compile=compile_
        )
        for _ in range(2):  # compiled: the second call replays the CUDA graphs
            got = gpu.fill_mask(masked)
        agree = np.mean([a[0]["token"] == b[0]["token"] for a, b in zip(expected, got, strict=True)])
        assert agree >= (1.0 if precision == "fp32" else 0.9), (precision, compile_, agree)
        diffs = [abs(a[0]["score"] - b[0]["score"]) for a, b in zip(expected, got, strict=True)]
        assert np.median(diffs) <= atol, (precision, compile_, np.median(diffs))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tensorrt_and_cuda_backends_agree_with_torch(tmp_path, trained_mlm_dir, mlm):
    tensorrt = pytest.importorskip("tensorrt")
    if not hasattr(tensorrt, "Builder"):
        pytest.skip("only the tensorrt type stubs are installed, not TensorRT")
    from rtoolkit.export.pipeline import export

    out = tmp_path / "trt"
    export(trained_mlm_dir, out, trt=True)
    trt = Predictor.from_pretrained(out, device="cuda")
    assert trt.backend == "tensorrt"
    gpu = Predictor.from_pretrained(trained_mlm_dir, backend="torch", device="cuda")
    masked = MASKED + [t + " <mask>" for t in sst2_dev(20)]
    for a, b, c in zip(mlm.fill_mask(masked), gpu.fill_mask(masked), trt.fill_mask(masked), strict=True):
        assert a[0]["token"] == b[0]["token"] == c[0]["token"]
        np.testing.assert_allclose([p["score"] for p in a], [p["score"] for p in b], atol=1e-4)
        np.testing.assert_allclose([p["score"] for p in a], [p["score"] for p in c], atol=5e-3)  # fp16 engine


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_predict_fill_mask_from_arguments_file_and_stdin(tmp_path, trained_mlm_dir, mlm):
    runner = CliRunner()
    args = ["predict", "fill-mask", "--model", str(trained_mlm_dir), "--top-k", "3"]
    result = runner.invoke(main, [*args, MASKED[0], MASKED[1]])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in lines] == MASKED[:2]
    _assert_same_predictions(lines[0]["predictions"], mlm.fill_mask(MASKED[0], top_k=3), atol=1e-6)
    source = tmp_path / "in.txt"
    source.write_text("\n".join(MASKED) + "\n", encoding="utf-8")
    from_file = runner.invoke(main, [*args, "--input", str(source)])
    from_stdin = runner.invoke(main, args, input="\n".join(MASKED) + "\n")
    assert from_file.exit_code == from_stdin.exit_code == 0
    assert from_file.stdout == from_stdin.stdout
    assert [json.loads(line)["text"] for line in from_file.stdout.splitlines()] == MASKED


def test_cli_predict_classify_pairs_and_embed(classifier_dir, clf):
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["predict", "classify", "--model", str(classifier_dir), "--pairs", "--top-k", "all"],
        input="A man plays.\tA man is playing.\nA cat sleeps.\tA dog barks.\n",
    )
    assert result.exit_code == 0, result.output
    first = json.loads(result.stdout.splitlines()[0])
    assert first["text"] == "A man plays." and first["text_pair"] == "A man is playing."
    expected = clf.classify(
        ["A man plays.", "A cat sleeps."], ["A man is playing.", "A dog barks."], top_k=None
    )
    assert first["predictions"] == expected[0]
    top1 = runner.invoke(main, ["predict", "classify", "--model", str(classifier_dir), "A fine film."])
    assert json.loads(top1.stdout) == {"text": "A fine film.", **clf.classify("A fine film.")}
    emb = runner.invoke(
        main, ["predict", "embed", "--model", str(classifier_dir), "--pooling", "cls", "Hi there."]
    )
    assert emb.exit_code == 0, emb.output
    vector = json.loads(emb.stdout)["embedding"]
    np.testing.assert_allclose(vector, clf.embed("Hi there.", pooling="cls"), atol=1e-6)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["fill-mask", "No mask here."], None, "error: texts[0] has no <mask> token to fill"),
        (["classify", "A fine film."], None, "cannot do classify; load a finetuned classifier"),
        (["fill-mask"], "A <mask>.\n\nB <mask>.\n", "error: stdin line 2: empty line"),
        (["fill-mask"], "", "error: stdin holds no text"),
        (["classify", "--pairs", "no tab"], None, "text 1 has no TAB"),
    ],
)
def test_cli_predict_errors_are_one_line(trained_mlm_dir, args, stdin, message):
    result = CliRunner().invoke(
        main, ["predict", args[0], "--model", str(trained_mlm_dir), *args[1:]], input=stdin
    )
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_demo_without_a_model_says_to_run_quickstart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 1
    assert "runs/quickstart/final does not exist: run `make quickstart` first" in result.stderr
