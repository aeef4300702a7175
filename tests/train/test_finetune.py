"""Finetuning on real GLUE data (SST-2, STS-B, RTE from ../shared/data) and on custom files: the run layout,
best/final models, exact resume, evaluation, predictions, the CLI, and torchrun with two processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from rtoolkit.cli import main
from rtoolkit.config import RobertaConfig
from rtoolkit.data.glue import LabelSpace, get_task
from rtoolkit.model import RobertaForMaskedLM, RobertaForSequenceClassification
from rtoolkit.train.finetune import FinetuneConfig, evaluate_model, finetune, load_classifier
from rtoolkit.train.loop import read_metrics
from tests.conftest import REPO, shared_data


def save_encoder(path, tokenizer, **overrides):
    torch.manual_seed(0)
    RobertaForMaskedLM(RobertaConfig.tiny(**overrides)).save_pretrained(path, tokenizer=tokenizer)
    return path


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, tokenizer):
    """A tiny randomly initialised MLM folder with the real-books tokenizer (dropout off: runs are exact)."""
    return save_encoder(
        tmp_path_factory.mktemp("encoder"),
        tokenizer,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sentiment_rows(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    good, bad = ["good", "great", "fine", "happy"], ["bad", "awful", "dull", "sad"]
    rows = []
    for _ in range(n):
        label = "pos" if rng.random() < 0.5 else "neg"
        words = rng.choice(good if label == "pos" else bad, size=3)
        rows.append({"review": "the film was " + " and ".join(words), "stars": label})
    return rows


# ------------------------------------------------------------------------------------------------ SST-2
def test_sst2_short_run_beats_majority_class(tmp_path, encoder_dir):
    data_dir = shared_data("sst2")
    out = tmp_path / "sst2"
    config = FinetuneConfig(
        model=str(encoder_dir), task="sst2", data_dir=str(data_dir), out=str(out),
        lr=2e-3, batch_size=32, max_steps=300, max_train_samples=9600, max_length=64,
        eval_every=150, log_every=50, predict=True, progress=False,
    )  # fmt: skip
    results = finetune(config)

    majority = 444 / 872  # dev: 444 positive, 428 negative
    best = results["best"]
    assert results["main_metric"] == "dev/accuracy"
    assert best["dev/accuracy"] >= majority + 0.10, best
    # Layout: resumable checkpoint, best/, final/, metrics.jsonl, eval_results.json.
    assert (out / "checkpoints" / "step-000300" / "train_state.pt").is_file()
    assert not (out / "checkpoints" / "step-000150").exists()  # keep_last=1
    for folder in ("best", "final"):
        assert (out / folder / "model.safetensors").is_file() and (out / folder / "tokenizer.json").is_file()
    assert json.loads((out / "eval_results.json").read_text()) == json.loads(json.dumps(results))
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if "dev/accuracy" in r] == [150, 300]
    assert [r["step"] for r in records if "loss" in r] == [1, 50, 100, 150, 200, 250, 300]
    assert results["best"]["step"] in (150, 300)
    assert results["final"]["dev/accuracy"] == records[-1]["dev/accuracy"]

    # The saved model is a Hugging Face folder with the label names.
    config_json = json.loads((out / "best" / "config.json").read_text())
    assert config_json["id2label"] == {"0": "negative", "1": "positive"}
    assert config_json["architectures"] == ["RobertaForSequenceClassification"]

    # Evaluating best/ on its own reproduces the number finetuning recorded.
    again = evaluate_model(out / "best", task="sst2", data_dir=data_dir, max_length=64)
    assert again["dev/accuracy"] == pytest.approx(best["dev/accuracy"], abs=1e-9)
    assert again["dev/examples"] == 872

    # GLUE submission file: every test row, the files' label values.
    lines = (out / "predictions" / "SST-2.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 1 + 1821
    assert [line.split("\t")[0] for line in lines[1:]] == [str(i) for i in range(1821)]
    assert {line.split("\t")[1] for line in lines[1:]} == {"0", "1"}


def test_transformers_reads_the_finetuned_folder(tmp_path, encoder_dir, tokenizer):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "rte"
    finetune(
        FinetuneConfig(
            model=str(encoder_dir), task="rte", data_dir=str(shared_data("rte")), out=str(out),
            max_steps=2, batch_size=8, max_train_samples=16, max_eval_samples=16, max_length=64, progress=False,
        )
    )  # fmt: skip
    ours = RobertaForSequenceClassification.from_pretrained(out / "final")
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(out / "final").eval()
    assert theirs.config.id2label == {0: "entailment", 1: "not_entailment"}
    batch = tokenizer(["A man sleeps.", "It rains."], ["Someone sleeps.", "It is dry."])
    with torch.no_grad():
        expected = theirs(**batch).logits
        got = ours(**batch).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_finetunes_a_transformers_folder(tmp_path, tokenizer):
    """--model accepts a folder written by transformers (as roberta-base is distributed)."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.RobertaForMaskedLM(
        transformers.RobertaConfig(
            **{k: v for k, v in RobertaConfig.tiny().to_dict().items() if k != "model_type"}
        )
    )
    hf.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    results = finetune(
        FinetuneConfig(
            model=str(tmp_path / "hf"), task="sst2", data_dir=str(shared_data("sst2")), out=str(tmp_path / "run"),
            max_steps=2, batch_size=8, max_train_samples=16, max_eval_samples=16, progress=False,
        )
    )  # fmt: skip
    assert results["steps"] == 2
    tuned = weights(tmp_path / "run" / "final")
    torch.testing.assert_close(  # the encoder started from the transformers weights (and moved a little)
        tuned["roberta.embeddings.word_embeddings.weight"],
        hf.roberta.embeddings.word_embeddings.weight.detach(),
        atol=1e-3,
        rtol=0,
    )


# ------------------------------------------------------------------------------------------------ STS-B
def test_stsb_regression_learns_the_score_scale(tmp_path, encoder_dir):
    data_dir = shared_data("stsb")
    out = tmp_path / "stsb"
    results = finetune(
        FinetuneConfig(
            model=str(encoder_dir), task="stsb", data_dir=str(data_dir), out=str(out), lr=2e-3, batch_size=32,
            max_steps=60, max_train_samples=1920, max_eval_samples=300, max_length=64, log_every=10,
            predict=True, progress=False,
        )
    )  # fmt: skip
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["num_labels"] == 1 and config["problem_type"] == "regression"
    assert set(results["final"]) == {"step", "dev/loss", "dev/pearson", "dev/spearman"}
    assert results["main_metric"] == "dev/pearson"
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    # A fresh head predicts about 0 for scores averaging 2.7 (MSE about 9); after 60 steps it predicts the scale.
    assert losses[0] > 5.0 and losses[-1] < 3.0, losses
    assert results["final"]["dev/loss"] < 3.0
    scores = [
        float(line.split("\t")[1])
        for line in (out / "predictions" / "STS-B.tsv").read_text().splitlines()[1:]
    ]
    assert len(scores) == 1379 and all(0.0 <= s <= 5.0 for s in scores)


# --------------------------------------------------------------------------------------------- resume
def test_resume_continues_exactly(tmp_path, tokenizer):
    encoder = save_encoder(tmp_path / "encoder", tokenizer)  # dropout 0.1: the RNG state must come back too
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(48, seed=1))
    valid = write_jsonl(tmp_path / "valid.jsonl", sentiment_rows(16, seed=2))
    common = dict(
        model=str(encoder), train_file=str(train), validation_file=str(valid), text_column="review",
        label_column="stars", lr=1e-3, batch_size=8, max_steps=8, save_every=4, keep_last=3, log_every=1,
        progress=False,
    )  # fmt: skip
    full = tmp_path / "full"
    expected = finetune(FinetuneConfig(out=str(full), **common))
    # 6 steps per epoch: checkpoints at 4 (save_every), 6 (end of epoch 1) and 8 (the last step).
    assert [p.name for p in sorted((full / "checkpoints").iterdir())] == [
        "step-000004",
        "step-000006",
        "step-000008",
    ]
    # An interrupted copy: stopped mid-epoch, right after the step-4 checkpoint.
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    for name in ("checkpoints/step-000006", "checkpoints/step-000008", "final", "eval_results.json"):
        path = cut / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    resumed = finetune(FinetuneConfig(out=str(cut), resume=True, **common))
    assert resumed["steps"] == 8
    assert resumed["best"] == expected["best"] and resumed["final"] == expected["final"]
    for folder in ("final", "best"):
        a, b = weights(full / folder), weights(cut / folder)
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=0, rtol=0)
    assert read_metrics(cut / "metrics.jsonl") == read_metrics(full / "metrics.jsonl")


def test_refuses_to_overwrite_a_run(tmp_path, encoder_dir):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(8, seed=1))
    common = dict(
        model=str(encoder_dir), train_file=str(train), validation_file=str(train), text_column="review",
        label_column="stars", batch_size=4, max_steps=1, out=str(tmp_path / "run"), progress=False,
    )  # fmt: skip
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        finetune(FinetuneConfig(resume=True, **common))
    first = finetune(FinetuneConfig(**common))
    with pytest.raises(FileExistsError, match="already holds a run"):
        finetune(FinetuneConfig(**common))
    again = finetune(FinetuneConfig(resume=True, **common))  # a finished run: nothing left to train
    assert again["steps"] == 1 and again["final"] == first["final"]
    assert len(read_metrics(tmp_path / "run" / "metrics.jsonl")) == 2  # one loss record, one evaluation


# ------------------------------------------------------------------------------------------ heads, labels
def test_classifier_head_kept_or_replaced(tmp_path, encoder_dir):
    two = load_classifier(encoder_dir, LabelSpace(("neg", "pos")))
    with torch.no_grad():
        two.classifier.out_proj.bias.fill_(0.5)
    two.save_pretrained(tmp_path / "two")
    same = load_classifier(tmp_path / "two", LabelSpace(("no", "yes")))
    assert torch.equal(same.classifier.out_proj.bias, two.classifier.out_proj.bias)  # continued finetuning
    assert same.config.id2label == {0: "no", 1: "yes"}
    three = load_classifier(tmp_path / "two", LabelSpace(("a", "b", "c")))
    assert three.classifier.out_proj.weight.shape == (3, 64)  # a new head for another label set
    torch.testing.assert_close(
        three.roberta.embeddings.word_embeddings.weight, two.roberta.embeddings.word_embeddings.weight
    )
    regression = load_classifier(encoder_dir, LabelSpace(None))
    assert regression.config.is_regression and regression.config.num_labels == 1


def test_evaluate_maps_label_names_in_another_order(tmp_path, encoder_dir, tokenizer):
    task = get_task("rte")
    model = load_classifier(encoder_dir, task.label_space())
    with torch.no_grad():
        model.classifier.out_proj.weight.normal_(0, 1.0)  # make the predictions depend on the input
    model.save_pretrained(tmp_path / "task_order", tokenizer=tokenizer)
    # The same classifier with its two outputs swapped and named accordingly (as some Hub models are).
    swapped = load_classifier(
        tmp_path / "task_order", LabelSpace(("NOT_ENTAILMENT", "ENTAILMENT")), dropout=0.0
    )
    with torch.no_grad():
        swapped.classifier.out_proj.weight.copy_(model.classifier.out_proj.weight.flip(0))
        swapped.classifier.out_proj.bias.copy_(model.classifier.out_proj.bias.flip(0))
    swapped.save_pretrained(tmp_path / "swapped", tokenizer=tokenizer)
    kwargs = dict(task="rte", data_dir=shared_data("rte"), max_samples=64, max_length=64)
    a = evaluate_model(tmp_path / "task_order", **kwargs)
    b = evaluate_model(tmp_path / "swapped", **kwargs)
    assert a["dev/accuracy"] == b["dev/accuracy"]
    assert a["dev/loss"] == pytest.approx(b["dev/loss"], rel=1e-5)
    with pytest.raises(ValueError, match="needs 1"):
        evaluate_model(tmp_path / "task_order", task="stsb", data_dir=shared_data("stsb"))


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_custom_data_and_its_errors(tmp_path, encoder_dir):
    rows = sentiment_rows(40, seed=3)
    (tmp_path / "train.csv").write_text(
        "review,stars\n" + "".join(f"{r['review']},{r['stars']}\n" for r in rows), encoding="utf-8"
    )
    (tmp_path / "valid.csv").write_text("review,stars\nthe film was great,pos\nthe film was sad,neg\n")
    (tmp_path / "test.csv").write_text("review\nhappy and fine\nawful and dull\n")
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["finetune", "--model", str(encoder_dir), "--train", str(tmp_path / "train.csv"),
            "--validation", str(tmp_path / "valid.csv"), "--text-column", "review", "--label-column", "stars"]  # fmt: skip
    result = runner.invoke(
        main, [*args, "--test", str(tmp_path / "test.csv"), "--predict", "--out", str(out), "--lr", "2e-3",
               "--batch-size", "8", "--epochs", "3", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "best dev/accuracy" in result.output
    assert json.loads((out / "best" / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    predictions = (out / "predictions" / "test_predictions.tsv").read_text().splitlines()
    assert predictions[0] == "index\tprediction" and {p.split("\t")[1] for p in predictions[1:]} <= {
        "neg",
        "pos",
    }
    assert len([r for r in read_metrics(out / "metrics.jsonl") if "dev/accuracy" in r]) == 3  # once per epoch

    result = runner.invoke(
        main, ["evaluate", "--model", str(out / "best"), "--validation", str(tmp_path / "valid.csv"),
               "--text-column", "review", "--label-column", "stars", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert set(scores) == {"dev/loss", "dev/accuracy", "dev/f1", "dev/examples"}

    (tmp_path / "odd.csv").write_text("review,stars\ngood,pos\nmeh,neutral\n")
    (tmp_path / "short.csv").write_text("review,stars\ngood,pos\nbad\n")
    (tmp_path / "empty.csv").write_text("")
    cases = [
        (
            ["--validation", str(tmp_path / "odd.csv")],
            "odd.csv:3: label 'neutral' never appears in the training data",
        ),
        (["--validation", str(tmp_path / "short.csv")], "short.csv:3: malformed row: expected 2 fields"),
        (["--validation", str(tmp_path / "empty.csv")], "empty.csv: file is empty"),
        (["--text-column", "text"], "missing column 'text'"),
    ]
    for extra, message in cases:
        result = runner.invoke(main, [*args, *extra, "--out", str(tmp_path / "bad"), "--no-progress"])
        assert result.exit_code == 1, result.output
        assert "error: " in result.output and message in result.output, result.output
        assert "Traceback" not in result.output
    result = runner.invoke(main, ["finetune", "--model", str(encoder_dir), "--task", "wmt16", "--data-dir", ".",
                                  "--out", str(tmp_path / "bad")])  # fmt: skip
    assert result.exit_code == 1 and "unknown task 'wmt16'" in result.output


# ------------------------------------------------------------------------------------------- torchrun
def test_torchrun_two_processes_match_one(tmp_path, encoder_dir):
    """2 processes x 4 rows reach the weights of 1 process accumulating micro-batches of 3, 3 and 2 rows."""
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(32, seed=4))
    args = ["--model", str(encoder_dir), "--train", str(train), "--validation", str(train),
            "--text-column", "review", "--label-column", "stars", "--lr", "1e-3", "--batch-size", "8",
            "--max-steps", "4", "--no-progress", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "rtoolkit.cli", "finetune", *args, "--micro-batch-size", "3", "--out", str(tmp_path / "one")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "rtoolkit.cli", "finetune", *args, "--out", str(tmp_path / "two")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert double.returncode == 0, double.stderr[-3000:]
    assert double.stdout.count("best dev/accuracy") == 1  # rank 0 reports
    a, b = weights(tmp_path / "one" / "final"), weights(tmp_path / "two" / "final")
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_mixed_precision_finetune(tmp_path, encoder_dir, precision):
    out = tmp_path / precision
    results = finetune(
        FinetuneConfig(
            model=str(encoder_dir), task="sst2", data_dir=str(shared_data("sst2")), out=str(out), lr=2e-3,
            batch_size=32, max_steps=300, max_train_samples=9600, max_length=64, precision=precision,
            device="cuda", progress=False,
        )
    )  # fmt: skip
    assert results["best"]["dev/accuracy"] >= 444 / 872 + 0.10
    assert json.loads((out / "run_config.json").read_text())["precision"] == precision
