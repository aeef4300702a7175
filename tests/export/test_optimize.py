"""rtoolkit.export.optimize: ONNX Runtime's transformer fusions are applied, counted, asserted and validated."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from rtoolkit.export import ExportError, Manifest, expected_fusions, optimize_onnx
from rtoolkit.export.optimize import fused_operator_counts

from rtoolkit.config import RobertaConfig


@pytest.fixture(scope="module")
def optimized(exported) -> dict:
    return {task: optimize_onnx(folder) for task, folder in exported.items()}


@pytest.mark.parametrize("task", ["fill-mask", "classification", "embedding"])
def test_every_expected_fusion_is_present(optimized, task):
    graph = onnx.load(str(optimized[task]))
    counts = fused_operator_counts(graph)
    layers = 2
    assert counts["Attention"] == layers
    assert counts["SkipLayerNormalization"] == 2 * layers
    assert counts["BiasGelu"] == layers + (task == "fill-mask")
    assert counts["LayerNormalization"] == 1 + (task == "fill-mask")
    # EmbedLayerNormalization numbers positions from 0; RoBERTa's start after the padding index.
    assert "EmbedLayerNormalization" not in counts
    # Nothing of the unfused attention is left: no Softmax, no separate Q/K/V MatMuls.
    ops = [n.op_type for n in graph.graph.node]
    assert "Softmax" not in ops and "Erf" not in ops


@pytest.mark.parametrize("task", ["fill-mask", "classification", "embedding"])
def test_manifest_records_fusions_and_validation(optimized, task):
    art = Manifest.load(optimized[task].parent).artifact("model.optimized.onnx")
    assert art.optimized and art.precision == "fp32" and art.passed
    assert art.fused_operators == fused_operator_counts(onnx.load(str(optimized[task])))
    assert art.details["expected_fusions"] == expected_fusions(RobertaConfig.tiny(), task)
    assert art.validation["reference"] == "model.onnx"
    assert art.validation["max_abs_diff"] <= 1e-4


def test_fused_graph_runs_with_padding(optimized, exported):
    plain = ort.InferenceSession(
        str(exported["fill-mask"] / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    fused = ort.InferenceSession(str(optimized["fill-mask"]), providers=["CPUExecutionProvider"])
    ids = np.array([[0, 50, 60, 70, 80, 2], [0, 90, 2, 1, 1, 1]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids != 1).astype(np.int64)}
    a, b = plain.run(None, feeds)[0], fused.run(None, feeds)[0]
    keep = feeds["attention_mask"].astype(bool)
    np.testing.assert_allclose(a[keep], b[keep], atol=1e-4, rtol=0)


def test_expected_fusions_for_roberta_base():
    assert expected_fusions(RobertaConfig.base(), "fill-mask") == {
        "Attention": 12,
        "SkipLayerNormalization": 24,
        "LayerNormalization": 2,
        "BiasGelu": 13,
    }


def test_gelu_approximation_gives_fastgelu(tmp_path, model_dirs):
    from rtoolkit.export import export_onnx

    export_onnx(model_dirs["classification"], tmp_path)
    path = optimize_onnx(tmp_path, gelu_approximation=True)
    counts = fused_operator_counts(onnx.load(str(path)))
    assert counts.get("FastGelu") == 2 and "BiasGelu" not in counts
    assert Manifest.load(tmp_path).artifact("model.optimized.onnx").passed


def test_missing_fusion_fails_loudly(tmp_path, model_dirs):
    from rtoolkit.export import export_onnx

    export_onnx(model_dirs["classification"], tmp_path)
    # A graph with the exact Gelu swapped for ReLU cannot get BiasGelu: the check must name that fusion.
    graph = onnx.load(str(tmp_path / "model.onnx"))
    erf_nodes = [n for n in graph.graph.node if n.op_type == "Erf"]
    assert erf_nodes
    for node in erf_nodes:
        node.op_type = "Relu"
    onnx.save(graph, str(tmp_path / "model.onnx"))
    with pytest.raises(
        ExportError, match=r"fusions were not applied to model.optimized.onnx: BiasGelu 0 of 2"
    ):
        optimize_onnx(tmp_path)
    art = Manifest.load(tmp_path).artifact("model.optimized.onnx")
    assert art.passed is False and art.fused_operators["Attention"] == 2


def test_optimize_needs_an_export_folder(tmp_path):
    with pytest.raises(ExportError, match="not an export folder"):
        optimize_onnx(tmp_path)
