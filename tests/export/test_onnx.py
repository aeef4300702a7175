"""rtoolkit.export.onnx: fp32 ONNX for each task, validated against PyTorch, with a self-contained folder."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from rtoolkit.export import ExportError, Manifest, export_onnx
from rtoolkit.export.onnx import OnnxWrapper, load_for_task
from rtoolkit.export.spec import MANIFEST_NAME, source_sha256

EXPECTED_OUTPUT = {"fill-mask": "logits", "classification": "logits", "embedding": "last_hidden_state"}


@pytest.mark.parametrize("task", ["fill-mask", "classification", "embedding"])
def test_export_graph_contract(exported, model_dirs, task):
    folder = exported[task]
    model = onnx.load(str(folder / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    for graph_input in model.graph.input:
        assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = [d.dim_param for d in graph_input.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"]
    assert [o.name for o in model.graph.output] == [EXPECTED_OUTPUT[task]]
    opset = {o.domain: o.version for o in model.opset_import}[""]
    assert opset == 17
    # opset 17: each LayerNorm is one node (2 per layer + embeddings, + 1 in the LM head).
    n_ln = sum(n.op_type == "LayerNormalization" for n in model.graph.node)
    assert n_ln == 2 * 2 + 1 + (task == "fill-mask")


@pytest.mark.parametrize("task", ["fill-mask", "classification", "embedding"])
def test_folder_is_self_contained_and_manifest_complete(exported, model_dirs, task):
    folder = exported[task]
    for name in ("config.json", "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (folder / name).is_file(), name
    data = json.loads((folder / MANIFEST_NAME).read_text())
    assert data["task"] == task
    assert data["source"]["sha256"] == source_sha256(model_dirs[task])
    assert data["opset"] == 17 and data["max_batch"] == 32 and data["max_seq_len"] == 128
    assert [i["name"] for i in data["inputs"]] == ["input_ids", "attention_mask"]
    assert data["outputs"][0]["name"] == EXPECTED_OUTPUT[task]
    assert {"torch", "onnx", "onnxruntime"} <= set(data["tool_versions"])
    (art,) = data["artifacts"]
    assert art["file"] == "model.onnx" and art["precision"] == "fp32" and art["format"] == "onnx"
    assert art["passed"] is True
    v = art["validation"]
    assert v["reference"] == "pytorch" and v["inputs"] == "text"
    assert len({tuple(s) for s in v["shapes"]}) >= 2
    assert v["max_abs_diff"] <= 1e-4
    if task == "fill-mask":
        assert v["top5_agreement"] == 1.0


@pytest.mark.parametrize("task", ["fill-mask", "classification", "embedding"])
def test_onnx_matches_pytorch_with_padding_and_dynamic_shapes(exported, model_dirs, task):
    model, _ = load_for_task(model_dirs[task], task)
    wrapper = OnnxWrapper(model, task)
    session = ort.InferenceSession(str(exported[task] / "model.onnx"), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(1)
    for batch, length in [(1, 5), (3, 17), (4, 128)]:
        ids = torch.randint(4, 999, (batch, length), generator=gen)
        mask = torch.ones_like(ids)
        if batch > 1:
            ids[-1, length // 2 :] = 1  # a right-padded row
            mask[-1, length // 2 :] = 0
        out = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        with torch.no_grad():
            ref = wrapper(ids, mask).numpy()
        assert out.shape == ref.shape
        keep = mask.bool().numpy() if task != "classification" else slice(None)
        np.testing.assert_allclose(out[keep], ref[keep], atol=1e-4, rtol=0)


def test_classification_output_shape_follows_num_labels(tmp_path, tokenizer):
    from rtoolkit.config import RobertaConfig
    from rtoolkit.model import RobertaForSequenceClassification

    config = RobertaConfig.tiny(num_labels=3)
    RobertaForSequenceClassification(config).save_pretrained(tmp_path / "m", tokenizer=tokenizer)
    path = export_onnx(tmp_path / "m", tmp_path / "out")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = np.array([[0, 10, 11, 2], [0, 12, 2, 1]], dtype=np.int64)
    out = session.run(None, {"input_ids": ids, "attention_mask": (ids != 1).astype(np.int64)})[0]
    assert out.shape == (2, 3)


def test_external_data_round_trip(tmp_path, model_dirs):
    path = export_onnx(model_dirs["classification"], tmp_path / "out", external_data=True)
    assert (tmp_path / "out" / "model.onnx.data").is_file()
    assert (tmp_path / "out" / "model.onnx").stat().st_size < 100_000  # the weights live in the data file
    manifest = Manifest.load(tmp_path / "out")
    assert manifest.artifact("model.onnx").details["external_data"] is True
    assert manifest.artifact("model.onnx").passed
    onnx.checker.check_model(str(path))


def test_auto_task_without_architectures_uses_the_heads(tmp_path, model_dirs):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(model_dirs["fill-mask"], folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("architectures")
    (folder / "config.json").write_text(json.dumps(config))
    _, task = load_for_task(folder)
    assert task == "fill-mask"


def test_embedding_can_be_exported_from_a_task_checkpoint(tmp_path, model_dirs):
    export_onnx(model_dirs["fill-mask"], tmp_path / "out", task="embedding")
    assert Manifest.load(tmp_path / "out").task == "embedding"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "summarize"}, "unknown task 'summarize'"),
        ({"task": "classification"}, "has no classification head"),
        ({"max_seq_len": 129}, "beyond the position table: this model takes at most 128"),
        ({"max_batch": 0}, "--max-batch must be a positive integer"),
        ({"opset": 13}, "--opset must be between 17"),
    ],
)
def test_bad_requests_are_named(tmp_path, model_dirs, kwargs, message):
    with pytest.raises(ExportError, match=message):
        export_onnx(model_dirs["fill-mask"], tmp_path / "out", **kwargs)


def test_not_a_model_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="not a model folder: config.json is missing"):
        export_onnx(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ExportError, match="model folder not found"):
        export_onnx(tmp_path / "nowhere" / "x", tmp_path / "out")


def test_core_package_does_not_import_onnx():
    import subprocess
    import sys

    code = "import rtoolkit, rtoolkit.export, sys; print(sorted(m for m in ('onnx', 'onnxruntime', 'tensorrt') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
