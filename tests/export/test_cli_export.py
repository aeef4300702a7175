"""`rtoolkit export`: the CLI end to end, its summary, and one-line errors."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from click.testing import CliRunner

from rtoolkit.cli import main


def test_export_all_cpu_steps(tmp_path, model_dirs):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "export",
            str(model_dirs["classification"]),
            "--out",
            str(out),
            "--optimize",
            "--quantize",
            "int8",
            "--fp16",
        ],
    )
    assert result.exit_code == 0, result.output
    for name in (
        "model.onnx",
        "model.optimized.onnx",
        "model.int8.onnx",
        "model.fp16.onnx",
        "tokenizer.json",
    ):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "export_manifest.json").read_text())
    assert [a["file"] for a in manifest["artifacts"]] == [
        "model.onnx",
        "model.optimized.onnx",
        "model.int8.onnx",
        "model.fp16.onnx",
    ]
    assert all(a["passed"] for a in manifest["artifacts"])
    assert manifest["artifacts"][2]["details"]["source"] == "model.optimized.onnx"
    assert "model.int8.onnx" in result.output and "passed" in result.output


def test_no_validate_records_nothing(tmp_path, model_dirs):
    result = CliRunner().invoke(
        main, ["export", str(model_dirs["embedding"]), "--out", str(tmp_path), "--no-validate"]
    )
    assert result.exit_code == 0, result.output
    (art,) = json.loads((tmp_path / "export_manifest.json").read_text())["artifacts"]
    assert art["validation"] == {} and art["passed"] is False
    assert "not validated" in result.output


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available(),
    reason="TensorRT is usable here",
)
def test_trt_without_tensorrt_is_one_line(tmp_path, model_dirs):
    result = CliRunner().invoke(
        main, ["export", str(model_dirs["fill-mask"]), "--out", str(tmp_path / "o"), "--trt"]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --trt needs")
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # checked before any work


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "classification"], "has no classification head"),
        (["--max-seq-len", "500"], "--max-seq-len 500 is beyond the position table"),
        (["--per-channel"], "--per-channel and --exclude apply to --quantize int8"),
        (["--eval-data", "missing.tsv"], "--eval-data missing.tsv: file not found"),
    ],
)
def test_bad_inputs_one_line(tmp_path, model_dirs, args, message):
    result = CliRunner().invoke(
        main, ["export", str(model_dirs["fill-mask"]), "--out", str(tmp_path / "o"), *args]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in result.output


def test_not_a_model_folder_and_unknown_task(tmp_path):
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "is not a model folder: config.json is missing" in result.output
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--out", str(tmp_path / "o"), "--task", "qa"])
    assert result.exit_code == 2 and "'qa' is not one of" in result.output
