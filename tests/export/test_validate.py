"""rtoolkit.export.validate: reference comparisons, failure records, labeled dev data."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from rtoolkit.export import Artifact, ExportError, Manifest, ValidationError, export_onnx, validate_onnx
from rtoolkit.export.validate import build_inputs, read_labeled_tsv

from rtoolkit.config import RobertaConfig
from tests.conftest import shared_data


def test_a_wrong_artifact_fails_with_numbers_and_is_recorded(tmp_path, model_dirs, tokenizer):
    from rtoolkit.model import RobertaForSequenceClassification

    export_onnx(model_dirs["classification"], tmp_path / "good")
    # Another model's weights under the same name: the comparison must catch it.
    other = RobertaForSequenceClassification(RobertaConfig.tiny(id2label={0: "negative", 1: "positive"}))
    other.save_pretrained(tmp_path / "other", tokenizer=tokenizer)
    export_onnx(tmp_path / "other", tmp_path / "bad")
    manifest = Manifest.load(tmp_path / "good")
    shutil.copy(tmp_path / "bad" / "model.onnx", tmp_path / "good" / "model.optimized.onnx")
    manifest.put(Artifact(file="model.optimized.onnx", format="onnx", precision="fp32"))
    manifest.save(tmp_path / "good")
    with pytest.raises(
        ValidationError, match=r"validation failed for model.optimized.onnx against model.onnx: max \|diff\|"
    ) as info:
        validate_onnx(tmp_path / "good", "model.optimized.onnx")
    assert info.value.record["max_abs_diff"] > 1e-4
    art = Manifest.load(tmp_path / "good").artifact("model.optimized.onnx")
    assert art.passed is False and art.validation["failures"]


def test_validate_fp32_reloads_the_source_model(exported):
    record = validate_onnx(exported["embedding"])
    assert record["reference"] == "pytorch" and record["max_abs_diff"] <= 1e-4
    assert record["cosine_min"] > 0.9999


def test_fill_mask_inputs_put_masks_on_real_text(exported):
    inputs = build_inputs(
        exported["fill-mask"], "fill-mask", max_seq_len=128, texts=["a b c d e f g h i j k l"]
    )
    (single, batch) = inputs.batches
    assert single["input_ids"].shape == batch["input_ids"].shape
    assert inputs.masked[0].sum() >= 2
    mask_id = RobertaConfig.from_pretrained(exported["fill-mask"]).vocab_size - 1
    assert (single["input_ids"][inputs.masked[0]] == mask_id).all()


def test_default_inputs_cover_several_shapes_with_padding(exported):
    inputs = build_inputs(exported["classification"], "classification", max_seq_len=16)
    shapes = {b["input_ids"].shape for b in inputs.batches}
    assert len(shapes) >= 2 and max(s[1] for s in shapes) <= 16
    assert any((b["attention_mask"] == 0).any() for b in inputs.batches)


def test_read_glue_tsv_files():
    config = RobertaConfig.tiny(id2label={0: "negative", 1: "positive"})
    sst2 = read_labeled_tsv(shared_data("sst2", "dev.tsv"), config)
    assert len(sst2.texts) == 872 and sst2.pairs is None and set(np.unique(sst2.labels)) == {0, 1}
    rte = read_labeled_tsv(
        shared_data("rte", "dev.tsv"), RobertaConfig.tiny(id2label={0: "entailment", 1: "not_entailment"})
    )
    assert len(rte.texts) == len(rte.pairs) == 277
    stsb = read_labeled_tsv(shared_data("stsb", "dev.tsv"), RobertaConfig.tiny(num_labels=1))
    assert stsb.labels.dtype == np.float32 and stsb.labels.max() <= 5.0


def test_bad_labeled_files_name_the_line(tmp_path):
    config = RobertaConfig.tiny(id2label={0: "negative", 1: "positive"})
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\ngood film\t1\nodd film\tneutral\n")
    with pytest.raises(
        ExportError, match=r"bad.tsv: line 3: label 'neutral' is not one of the model's labels"
    ):
        read_labeled_tsv(bad, config)
    bad.write_text("text\ttarget\nx\t1\n")
    with pytest.raises(ExportError, match=r"line 1: expected columns 'sentence'"):
        read_labeled_tsv(bad, config)
    with pytest.raises(ExportError, match="file not found"):
        read_labeled_tsv(tmp_path / "missing.tsv", config)
