"""Pretraining end to end on real text: loss goes down, exact resume, NaN handling, the CLI, the sample default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rtoolkit.cli import main
from rtoolkit.config import RobertaConfig
from rtoolkit.data.corpus import TokenSplit, iter_documents
from rtoolkit.model import RobertaForMaskedLM
from rtoolkit.tokenizer import Tokenizer
from rtoolkit.train import pretrain as pretrain_module
from rtoolkit.train.loop import TrainingDiverged, latest_checkpoint, read_metrics
from rtoolkit.train.pretrain import PretrainConfig, pretrain


def _config(out, data, **overrides) -> PretrainConfig:
    base = dict(
        out=out,
        data=data,
        model_config="tiny",
        seq_len=64,
        batch_size=8,
        micro_batch_size=4,
        max_steps=12,
        warmup_steps=2,
        lr=1e-3,
        eval_every=6,
        save_every=6,
        eval_max_blocks=32,
        log_every=1,
        progress=False,
    )
    return PretrainConfig(**{**base, **overrides})


def _train_losses(out):
    return [(r["step"], r["loss"]) for r in read_metrics(out / "metrics.jsonl") if "eval" not in r]


def test_resume_after_a_crash_gives_exactly_the_same_losses(tmp_path, pretrain_data, monkeypatch):
    # Dropout on (tiny preset): the RNG state has to be restored too.
    pretrain(_config(tmp_path / "straight", pretrain_data))
    expected = _train_losses(tmp_path / "straight")
    assert [s for s, _ in expected] == list(range(1, 13))

    real_step, calls = pretrain_module.train_step, {"n": 0}

    def crash_at_step_9(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt("power cut")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "train_step", crash_at_step_9)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_config(tmp_path / "resumed", pretrain_data))
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path / "resumed").name == "step-000006"
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(_config(tmp_path / "resumed", pretrain_data))
    pretrain(_config(tmp_path / "resumed", pretrain_data, resume=True))
    assert _train_losses(tmp_path / "resumed") == expected  # bit-exact, steps 7-8 not logged twice
    straight = RobertaForMaskedLM.from_pretrained(tmp_path / "straight" / "final").state_dict()
    resumed = RobertaForMaskedLM.from_pretrained(tmp_path / "resumed" / "final").state_dict()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    with pytest.raises(ValueError, match="seq_len"):
        pretrain(_config(tmp_path / "resumed", pretrain_data, resume=True, seq_len=32, max_steps=13))


def test_nonfinite_loss_stops_with_a_checkpoint_or_is_skipped(tmp_path, pretrain_data):
    # A learning rate this large blows the weights up within a few steps.
    cfg = _config(tmp_path / "nan", pretrain_data, lr=1e9, warmup_steps=0, max_steps=30, save_every=100)
    with pytest.raises(TrainingDiverged, match="last good state is saved") as info:
        pretrain(cfg)
    saved = latest_checkpoint(tmp_path / "nan")
    assert saved is not None and str(saved) in str(info.value)
    assert all(
        torch.isfinite(v).all() for v in RobertaForMaskedLM.from_pretrained(saved).state_dict().values()
    )

    pretrain(
        _config(tmp_path / "skip", pretrain_data, lr=1e9, warmup_steps=0, max_steps=30, on_nonfinite="skip")
    )
    records = _train_losses(tmp_path / "skip")
    assert len(records) == 30
    last = [r for r in read_metrics(tmp_path / "skip" / "metrics.jsonl") if "eval" not in r][-1]
    assert last["skipped"] > 0


def test_fixed_size_steps_reach_attention_without_a_mask(tmp_path, pretrain_data, monkeypatch):
    """No padding in fixed-size (`--format none`) batches, so every training call of scaled_dot_product_attention
    gets attn_mask=None (what CUDA's flash kernel needs); doc-sentences batches, which are padded, still pass a
    mask."""
    calls: list = []
    recording = [False]
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        if recording[0]:
            calls.append(attn_mask)
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    real_step = pretrain_module.train_step

    def recorded_step(*args, **kwargs):
        recording[0] = True
        try:
            return real_step(*args, **kwargs)
        finally:
            recording[0] = False

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    monkeypatch.setattr(pretrain_module, "train_step", recorded_step)
    pretrain(
        _config(tmp_path / "full", pretrain_data, max_steps=6, eval_every=0, save_every=0, format="none")
    )
    layers, micro_batches = 2, 2  # tiny preset; batch 8 in micro-batches of 4
    assert len(calls) == 6 * micro_batches * layers and all(mask is None for mask in calls)
    calls.clear()
    pretrain(
        _config(
            tmp_path / "doc", pretrain_data, max_steps=6, eval_every=0, save_every=0, format="doc-sentences"
        )
    )
    assert any(mask is not None for mask in calls)


def test_save_every_zero_saves_only_the_end_and_bad_cadences_are_one_line_errors(tmp_path, pretrain_data):
    pretrain(_config(tmp_path / "end", pretrain_data, max_steps=4, save_every=0, eval_every=0))
    assert [p.name for p in (tmp_path / "end" / "checkpoints").iterdir()] == ["step-000004"]
    assert [r["step"] for r in read_metrics(tmp_path / "end" / "metrics.jsonl") if "eval" in r] == [0, 4]
    pretrain(_config(tmp_path / "no-eval", pretrain_data, max_steps=2, eval_max_blocks=0))
    assert not [r for r in read_metrics(tmp_path / "no-eval" / "metrics.jsonl") if "eval" in r]
    runner = CliRunner()
    for flag, value in [("--save-every", "-1"), ("--eval-every", "-2"), ("--log-every", "0")]:
        result = runner.invoke(
            main, ["pretrain", "--data", str(pretrain_data), "--out", str(tmp_path / flag), flag, value]
        )
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert (
            result.output.startswith("error: ")
            and flag in result.output
            and len(result.output.splitlines()) == 1
        )


def test_cli_preprocess_pretrain_plot_end_to_end(tmp_path, tokenizer_dir, no_dropout_config):
    books = tmp_path / "books"
    books.mkdir()
    source = pretrain_module.sample_files()
    for f in source[:2]:
        (books / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    runner = CliRunner()
    data = tmp_path / "data"
    result = runner.invoke(
        main,
        ["preprocess", str(books), "--tokenizer", str(tokenizer_dir), "--out", str(data), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "tokens/s" in result.output
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(data), "--out", str(run), "--model-config", str(no_dropout_config)]
    args += [
        "--seq-len",
        "64",
        "--batch-size",
        "16",
        "--max-steps",
        "40",
        "--lr",
        "2e-3",
        "--warmup-steps",
        "4",
    ]
    args += ["--eval-every", "20", "--save-every", "20", "--no-progress", "--format", "doc-sentences"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    evals = [r for r in read_metrics(run / "metrics.jsonl") if r.get("eval") == "valid"]
    assert [r["step"] for r in evals] == [0, 20, 40]
    assert evals[-1]["loss"] < evals[0]["loss"] - 0.5  # held-out loss goes down
    train = [r for r in read_metrics(run / "metrics.jsonl") if "eval" not in r]
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 for r in train)
    run_config = json.loads((run / "run_config.json").read_text())
    assert run_config["format"] == "doc-sentences" and run_config["adam_betas"] == [0.9, 0.98]
    # OUT/final is a complete HF folder with the tokenizer the data was made with.
    model = RobertaForMaskedLM.from_pretrained(run / "final")
    assert (
        Tokenizer.from_pretrained(run / "final").fingerprint()
        == Tokenizer.from_pretrained(tokenizer_dir).fingerprint()
    )
    assert model.config.vocab_size == Tokenizer.from_pretrained(tokenizer_dir).vocab_size
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000020", "step-000040"]
    result = runner.invoke(main, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Errors are one line naming the problem.
    result = runner.invoke(main, ["pretrain", "--data", str(data), "--out", str(run), "--seq-len", "64"])
    assert result.exit_code == 1 and "--resume" in result.output
    result = runner.invoke(main, ["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "rtoolkit preprocess" in result.output


def test_no_data_prepares_the_bundled_sample(tmp_path):
    out = tmp_path / "quick"
    final = pretrain(
        PretrainConfig(out=out, max_steps=2, batch_size=4, eval_every=0, eval_max_blocks=8, progress=False)
    )
    meta = json.loads((out / "sample" / "data" / "meta.json").read_text())
    assert meta["vocab_size"] == 2048 and meta["splits"]["valid"]["tokens"] > 0
    books = pretrain_module.sample_files()
    assert (
        sorted(Path(i["path"]).name for i in meta["inputs"]) == sorted(b.name for b in books)
        and len(books) >= 2
    )
    # Every book reached the corpus: the first paragraph of each, tokenized by the run's tokenizer, is found in the
    # token files, and the tokenizer gives its text back.
    tokenizer = Tokenizer.from_pretrained(final)
    stream = np.concatenate([TokenSplit.open(out / "sample" / "data", s).tokens for s in ("train", "valid")])
    for book in books:
        paragraph = next(text for text, _ in iter_documents(book) if len(text) > 200)
        ids = tokenizer.encode(paragraph, max_length=None, add_special_tokens=False)
        assert tokenizer.decode(ids) == paragraph
        window = np.lib.stride_tricks.sliding_window_view(stream, 16)
        assert (window == np.asarray(ids[1:17])).all(axis=1).any(), book.name
    assert RobertaForMaskedLM.from_pretrained(final).config.num_hidden_layers == 2


def test_the_sample_runs_the_quickstart_recipe_and_data_runs_the_papers():
    quick = PretrainConfig(out=Path("q")).resolved()
    assert (
        quick.model_config,
        quick.seq_len,
        quick.batch_size,
        quick.max_steps,
        quick.lr,
        quick.warmup_steps,
    ) == (
        "mini",
        64,
        32,
        5000,
        1e-3,
        240,
    )
    assert quick.sample_vocab_size == 2048
    model = RobertaConfig.preset("mini", vocab_size=2048)
    assert (
        model.hidden_size,
        model.num_hidden_layers,
        model.num_attention_heads,
        model.intermediate_size,
    ) == (
        128,
        2,
        2,
        512,
    )
    assert model.hidden_dropout_prob == model.attention_probs_dropout_prob == 0.0
    paper = PretrainConfig(out=Path("p"), data=Path("d")).resolved()
    assert (paper.model_config, paper.batch_size, paper.max_steps, paper.lr) == ("base", 8192, 500_000, 6e-4)
    assert paper.seq_len is None  # the model's maximum, 512 for base


def test_dataloader_workers_feed_the_same_batches(tmp_path, pretrain_data, no_dropout_config):
    kwargs = dict(model_config=str(no_dropout_config), max_steps=4, eval_every=0, save_every=4)
    pretrain(_config(tmp_path / "inline", pretrain_data, num_workers=0, **kwargs))
    pretrain(_config(tmp_path / "workers", pretrain_data, num_workers=2, **kwargs))
    assert _train_losses(tmp_path / "workers") == _train_losses(tmp_path / "inline")
