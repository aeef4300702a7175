"""The CLI skeleton: help without optional dependencies, version, train-tokenizer, info, one-line errors."""

import json
import subprocess
import sys

from click.testing import CliRunner

from rtoolkit import RobertaForMaskedLM, __version__
from rtoolkit.cli import main

BLOCK_OPTIONAL = (
    "import sys\n"
    "for name in ('onnx', 'onnxruntime', 'tensorrt', 'gradio', 'matplotlib', 'transformers'):\n"
    "    sys.modules[name] = None  # any import of these now fails\n"
)


def test_help_works_without_optional_dependencies():
    code = BLOCK_OPTIONAL + "from rtoolkit.cli import main\nmain(['--help'])\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train-tokenizer" in result.stdout and "info" in result.stdout


def test_core_import_pulls_no_optional_dependency():
    code = (
        "import sys, rtoolkit, rtoolkit.cli\n"
        "bad = [m for m in ('onnx', 'onnxruntime', 'tensorrt', 'gradio') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == ""


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_train_tokenizer_then_info(tmp_path, corpus_files, tiny_config, tokenizer):
    out = tmp_path / "tok"
    result = CliRunner().invoke(
        main, ["train-tokenizer", str(corpus_files[1]), "--vocab-size", "600", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "600 ids, <mask>=599" in result.output
    assert (out / "tokenizer.json").is_file() and (out / "merges.txt").is_file()

    model_dir = tmp_path / "model"
    RobertaForMaskedLM(tiny_config).save_pretrained(model_dir, tokenizer=tokenizer)
    result = CliRunner().invoke(main, ["info", str(model_dir), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["architecture"] == "RobertaForMaskedLM" and summary["layers"] == 2
    assert summary["parameters"] == RobertaForMaskedLM(tiny_config).num_parameters()
    text = CliRunner().invoke(main, ["info", str(model_dir)]).output
    assert "hidden_size" in text and "64" in text


def test_known_errors_are_one_line_without_traceback(tmp_path):
    result = CliRunner().invoke(main, ["info", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path} is not a model folder: config.json is missing"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["train-tokenizer", str(empty), "--out", str(tmp_path / "t")])
    assert (
        result.exit_code == 1 and "folder holds no .txt" in result.output and "Traceback" not in result.output
    )
