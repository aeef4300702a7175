"""rtoolkit.export.quantize: dynamic int8 (also on the fused graph) and fp16, each run in ONNX Runtime and validated."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from rtoolkit.export import (
    ExportError,
    Manifest,
    convert_fp16,
    export,
    export_onnx,
    optimize_onnx,
    quantize_int8,
)

from tests.conftest import shared_data
from tests.export.conftest import read_sst2


def _run(path, ids):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": (ids != 1).astype(np.int64)}
    return session.run(None, feeds)[0]


IDS = np.array([[0, 50, 60, 70, 80, 90, 2], [0, 100, 110, 2, 1, 1, 1]], dtype=np.int64)


@pytest.mark.parametrize("task", ["fill-mask", "classification", "embedding"])
def test_int8_on_the_fused_graph(tmp_path, model_dirs, task):
    export_onnx(model_dirs[task], tmp_path, task=task)
    optimize_onnx(tmp_path)
    # Random fill-mask weights give near-flat distributions; its output head stays fp32 (the documented lever).
    exclude = ("head",) if task == "fill-mask" else ()
    path = quantize_int8(tmp_path, exclude=exclude)
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["QAttention"] == 2  # the fused attention is quantized, not skipped
    assert ops["MatMulInteger"] > 0 and ops["DynamicQuantizeLinear"] > 0
    art = Manifest.load(tmp_path).artifact("model.int8.onnx")
    assert art.passed and art.optimized and art.details["source"] == "model.optimized.onnx"
    assert art.validation["reference"] == "model.onnx"
    key = {"fill-mask": "top1_agreement", "classification": "top1_agreement", "embedding": "cosine_min"}[task]
    assert art.validation[key] >= 0.9
    out = _run(path, IDS)
    assert np.isfinite(out).all()
    assert out.shape == _run(tmp_path / "model.onnx", IDS).shape


def test_int8_from_the_plain_graph_is_smaller(tmp_path, model_dirs):
    export_onnx(model_dirs["classification"], tmp_path)
    path = quantize_int8(tmp_path, per_channel=True)
    art = Manifest.load(tmp_path).artifact("model.int8.onnx")
    assert art.details["source"] == "model.onnx" and art.details["per_channel"] is True and not art.optimized
    assert art.passed
    assert path.stat().st_size < 0.5 * (tmp_path / "model.onnx").stat().st_size


def test_excluded_groups_stay_fp32(tmp_path, model_dirs):
    export_onnx(model_dirs["fill-mask"], tmp_path)
    path = quantize_int8(tmp_path, exclude=("embeddings", "head"))
    graph = onnx.load(str(path))
    kept = [
        n
        for n in graph.graph.node
        if "/lm_head/decoder/" in n.name or "/embeddings/word_embeddings/" in n.name
    ]
    assert kept and {n.op_type for n in kept} <= {"MatMul", "Gather", "Add"}
    assert Manifest.load(tmp_path).artifact("model.int8.onnx").details["excluded_groups"] == [
        "embeddings",
        "head",
    ]
    # The classifier's Gemm nodes too (the quantizer renames them on the way).
    export_onnx(model_dirs["classification"], tmp_path / "cls")
    optimize_onnx(tmp_path / "cls")
    graph = onnx.load(str(quantize_int8(tmp_path / "cls", exclude=("head",))))
    head = [n.op_type for n in graph.graph.node if "/classifier/" in n.name]
    assert head and "MatMulInteger" not in head and "DynamicQuantizeLinear" not in head
    with pytest.raises(ExportError, match=r"unknown node group\(s\) \['decoder'\]"):
        quantize_int8(tmp_path, exclude=("decoder",))


def test_int8_accuracy_delta_on_sst2_dev(sst2_classifier_dir, tmp_path):
    dev = shared_data("sst2", "dev.tsv")
    manifest = export(sst2_classifier_dir, tmp_path, optimize=True, quantize="int8", eval_data=dev)
    fp32 = manifest.artifact("model.onnx").validation
    int8 = manifest.artifact("model.int8.onnx").validation
    assert fp32["eval_examples"] == int8["eval_examples"] == 872
    # The model learned something real, and the fp32 ONNX scores exactly what PyTorch does.
    assert fp32["reference_score"] > 60 and fp32["score"] == fp32["reference_score"]
    assert int8["accuracy_drop"] <= 1.0
    assert int8["top1_agreement"] >= 0.97
    # The recorded metric is the real accuracy of the int8 graph on the dev set.
    from rtoolkit.tokenizer import Tokenizer

    texts, labels = read_sst2("dev")
    tok = Tokenizer.from_pretrained(tmp_path)
    session = ort.InferenceSession(str(tmp_path / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    # Dynamic int8 scales activations per batch, so score in the batches validation used (in order, padded per
    # batch, truncated to the manifest's length).
    from rtoolkit.export.validate import BATCH_SIZE

    correct, n = 0, BATCH_SIZE
    for i in range(0, len(texts), n):
        enc = tok(texts[i : i + n], max_length=manifest.max_seq_len)
        feeds = {k: v.numpy() for k, v in enc.items()}
        correct += int((session.run(None, feeds)[0].argmax(-1) == np.array(labels[i : i + n])).sum())
    assert abs(100.0 * correct / len(texts) - int8["score"]) < 1e-6


@pytest.mark.parametrize("task", ["fill-mask", "classification"])
def test_fp16_graph(tmp_path, model_dirs, task):
    export_onnx(model_dirs[task], tmp_path)
    path = convert_fp16(tmp_path, texts=read_sst2("dev", limit=64)[0])  # validated on real sentences
    graph = onnx.load(str(path))
    weights = [i for i in graph.graph.initializer if len(i.dims) == 2]
    assert weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in weights)
    assert [i.type.tensor_type.elem_type for i in graph.graph.input] == [onnx.TensorProto.INT64] * 2
    assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # LayerNormalization and Softmax are kept in fp32: each of their inputs is cast to float32 right before them.
    producer = {out: n for n in graph.graph.node for out in n.output}
    for op_type in ("LayerNormalization", "Softmax"):
        nodes = [n for n in graph.graph.node if n.op_type == op_type]
        assert nodes, op_type
        for node in nodes:
            casts = [producer.get(name) for name in node.input[:3] if name]
            assert all(c is not None and c.op_type == "Cast" for c in casts), node.name
            assert all(
                onnx.helper.get_attribute_value(c.attribute[0]) == onnx.TensorProto.FLOAT for c in casts
            )
    # A fully padded tail and a long input: finite everywhere (the mask fill is -1e4, not finfo.min).
    ids = np.ones((2, 120), dtype=np.int64)
    ids[:, 0], ids[0, 1:119], ids[0, 119], ids[1, 1:3], ids[1, 3] = 0, 77, 2, 88, 2
    assert np.isfinite(_run(path, ids)).all()
    art = Manifest.load(tmp_path).artifact("model.fp16.onnx")
    assert (
        art.passed
        and art.precision == "fp16"
        and art.details["kept_fp32"] == ["LayerNormalization", "Softmax"]
    )
    assert (
        art.validation["runtime"] == "onnxruntime CPUExecutionProvider"
    )  # no GPU here, and the record says so
    assert art.validation["top1_agreement"] >= 0.98 and art.validation["compared_rows"] >= 64


def test_fp16_graph_agrees_with_pytorch_on_real_sentences(sst2_classifier_dir, tmp_path):
    """The graph TensorRT builds fp16 engines from, run in ONNX Runtime, against the PyTorch model itself."""
    import torch

    from rtoolkit.model import RobertaForSequenceClassification
    from rtoolkit.tokenizer import Tokenizer

    export_onnx(sst2_classifier_dir, tmp_path)
    path = convert_fp16(tmp_path, validate=False)
    texts, _ = read_sst2("dev", limit=200)
    tokenizer = Tokenizer.from_pretrained(sst2_classifier_dir)
    model = RobertaForSequenceClassification.from_pretrained(sst2_classifier_dir).eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    agree, worst = 0, 0.0
    for i in range(0, len(texts), 25):
        batch = tokenizer(texts[i : i + 25])
        with torch.no_grad():
            reference = model(batch["input_ids"], batch["attention_mask"]).logits.softmax(-1).numpy()
        logits = session.run(None, {k: v.numpy() for k, v in batch.items()})[0]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        agree += int((probs.argmax(-1) == reference.argmax(-1)).sum())
        worst = max(worst, float(np.abs(probs - reference).max()))
    assert agree / len(texts) >= 0.99 and worst < 1e-2, (agree, worst)
