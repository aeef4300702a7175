"""pretrain's flags end to end, through `pretrain()` as the CLI calls it: --compile, --init-from, --eval-data,
--whole-word-mask, --masking static, bf16 and fp16. Each test looks at what the run really did (its losses, its
held-out records, or the batches the training loop received)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rtoolkit.data.corpus import preprocess
from rtoolkit.model import IGNORE_INDEX
from rtoolkit.tokenizer import Tokenizer
from rtoolkit.train import pretrain as pretrain_module
from rtoolkit.train.loop import read_metrics
from rtoolkit.train.pretrain import PretrainConfig, pretrain
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, tokenizer_dir) -> Path:
    """About 40 blocks of 64 tokens from a real book (a few steps make an epoch), all in the train split."""
    book = shared_data("corpus", "gutenberg", "nltk", "chesterton-brown.txt")
    text = book.read_text(encoding="utf-8")[20_000:30_000]
    source = tmp_path_factory.mktemp("small-text") / "slice.txt"
    source.write_text(text, encoding="utf-8")
    out = tmp_path_factory.mktemp("small") / "data"
    preprocess([source], tokenizer_dir=tokenizer_dir, out_dir=out, valid_fraction=0.0)
    return out


def _config(out, data, model_config, **overrides) -> PretrainConfig:
    model_config = None if model_config is None else str(model_config)
    base = dict(
        out=out, data=data, model_config=model_config, seq_len=64, batch_size=8, micro_batch_size=4, max_steps=3,
        warmup_steps=1, lr=1e-3, eval_every=0, save_every=0, eval_max_blocks=16, log_every=1, progress=False,
    )  # fmt: skip
    return PretrainConfig(**{**base, **overrides})


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "eval" not in r]


def _evals(out: Path, name: str = "valid") -> list[dict]:
    return [r for r in read_metrics(out / "metrics.jsonl") if r.get("eval") == name]


def _record_batches(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Every micro-batch the training loop is given, as it is given."""
    seen: list[dict[str, torch.Tensor]] = []
    real = pretrain_module.train_step

    def recording(model, micro_batches, **kwargs):
        seen.extend({k: v.clone() for k, v in b.items()} for b in micro_batches)
        return real(model, micro_batches, **kwargs)

    monkeypatch.setattr(pretrain_module, "train_step", recording)
    return seen


def test_compile_gives_the_eager_losses(tmp_path, pretrain_data, no_dropout_config):
    """--compile (torch.compile of every encoder layer, CPU inductor) trains to the eager run's losses."""
    from torch._dynamo.utils import counters

    pretrain(_config(tmp_path / "eager", pretrain_data, no_dropout_config, eval_max_blocks=0))
    torch._dynamo.reset()  # compile afresh, so the counters see this run
    counters.clear()
    pretrain(
        _config(tmp_path / "compiled", pretrain_data, no_dropout_config, eval_max_blocks=0, compile=True)
    )
    assert counters["stats"]["unique_graphs"] >= 1  # the layers really went through torch.compile
    eager, compiled = _losses(tmp_path / "eager"), _losses(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 3
    for a, b in zip(compiled, eager, strict=True):
        assert abs(a - b) <= 1e-4 * abs(b), (compiled, eager)


def test_init_from_continues_from_the_model_folder(tmp_path, pretrain_data, no_dropout_config):
    """A run started --init-from another run's final/ begins exactly where that model is: its held-out loss at step 0
    equals the finished run's last held-out loss (same weights, same fixed masks)."""
    first = tmp_path / "first"
    final = pretrain(_config(first, pretrain_data, no_dropout_config, max_steps=4))
    second = tmp_path / "second"
    pretrain(_config(second, pretrain_data, None, init_from=final, max_steps=1))
    assert _evals(second)[0]["step"] == 0
    assert _evals(second)[0]["loss"] == pytest.approx(_evals(first)[-1]["loss"], abs=1e-6)
    fresh = tmp_path / "fresh"
    pretrain(_config(fresh, pretrain_data, no_dropout_config, max_steps=1))
    assert _evals(fresh)[0]["loss"] > _evals(second)[0]["loss"] + 0.05  # not merely a new model


def test_eval_data_is_evaluated_and_recorded(
    tmp_path, pretrain_data, small_data, no_dropout_config, tokenizer_dir
):
    other = tmp_path / "wiki"
    wiki = shared_data("corpus", "wikitext2", "wiki.valid.tokens")
    source = tmp_path / "wiki.txt"
    source.write_text(wiki.read_text(encoding="utf-8")[:40_000], encoding="utf-8")
    preprocess([source], tokenizer_dir=tokenizer_dir, out_dir=other, valid_fraction=1.0)
    out = tmp_path / "run"
    pretrain(_config(out, pretrain_data, no_dropout_config, eval_data=(other,), max_steps=2))
    records = _evals(out, "wiki")
    assert [r["step"] for r in records] == [0, 2]
    assert all(r["count"] > 0 and r["loss"] > 0 for r in records)
    assert records[0]["loss"] != _evals(out)[0]["loss"]  # its own text, not the training folder's


def _partially_masked_words(batch: dict[str, torch.Tensor], starts: torch.Tensor, specials: set[int]) -> int:
    """Words (a 'Ġ' piece and the pieces after it) of which some pieces are masked and others not."""
    labels = batch["labels"]
    original = torch.where(labels != IGNORE_INDEX, labels, batch["input_ids"])
    partial = 0
    for row in range(original.shape[0]):
        word: list[bool] = []
        for token, masked in zip(original[row].tolist(), (labels[row] != IGNORE_INDEX).tolist(), strict=True):
            if token in specials or (starts[token] and word):
                partial += int(0 < sum(word) < len(word))
                word = []
            if token not in specials:
                word.append(masked)
        partial += int(0 < sum(word) < len(word))
    return partial


def test_whole_word_mask_masks_whole_words_in_the_batches_the_loop_sees(
    tmp_path, small_data, no_dropout_config, tokenizer_dir, monkeypatch
):
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    starts, specials = tokenizer.word_starts(), set(tokenizer.special_ids)
    seen = _record_batches(monkeypatch)
    pretrain(_config(tmp_path / "wwm", small_data, no_dropout_config, whole_word_mask=True, mask_prob=0.3))
    assert len(seen) == 6 and sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in seen) > 100
    assert sum(_partially_masked_words(b, starts, specials) for b in seen) == 0
    seen.clear()
    pretrain(_config(tmp_path / "pieces", small_data, no_dropout_config, mask_prob=0.3))
    assert sum(_partially_masked_words(b, starts, specials) for b in seen) > 10  # token masking splits words


def _masks_by_row(seen: list[dict[str, torch.Tensor]]) -> dict[tuple[int, ...], list[tuple[int, ...]]]:
    """The label pattern each distinct block (by its original tokens) was trained with, in order."""
    patterns: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for batch in seen:
        labels = batch["labels"]
        original = torch.where(labels != IGNORE_INDEX, labels, batch["input_ids"])
        for row in range(original.shape[0]):
            patterns.setdefault(tuple(original[row].tolist()), []).append(tuple(labels[row].tolist()))
    return patterns


@pytest.mark.parametrize("masking", ["static", "dynamic"])
def test_static_masking_repeats_a_blocks_mask_and_dynamic_does_not(
    tmp_path, small_data, no_dropout_config, monkeypatch, masking
):
    """Three epochs of the small corpus (one static copy): static masking feeds every block with one mask each time,
    dynamic with a new one each epoch."""
    from rtoolkit.data.corpus import BlockDataset, TokenSplit

    blocks = len(BlockDataset(TokenSplit.open(small_data, "train"), seq_len=64, format="full-sentences"))
    per_epoch = blocks // 8
    seen = _record_batches(monkeypatch)
    cfg = _config(tmp_path / masking, small_data, no_dropout_config, masking=masking, static_copies=1,
                  max_steps=3 * per_epoch)  # fmt: skip
    pretrain(cfg)
    repeated = [masks for masks in _masks_by_row(seen).values() if len(masks) == 3]
    assert len(repeated) >= 8 * per_epoch - 8  # every block seen in each of the three epochs
    if masking == "static":
        assert all(len(set(masks)) == 1 for masks in repeated)
    else:
        assert all(len(set(masks)) == 3 for masks in repeated)


@pytest.mark.parametrize(("precision", "tolerance"), [("bf16", 1e-3), ("fp16", 1e-4)])
def test_mixed_precision_pretraining_tracks_fp32(
    tmp_path, pretrain_data, no_dropout_config, precision, tolerance
):
    """bf16 autocast, and fp16 with its GradScaler, through the whole pretraining loop: the losses of fp32 within a
    stated relative tolerance (measured on CPU below 1e-4 and 1e-5), and the scaler's state in the checkpoint."""
    pretrain(_config(tmp_path / "fp32", pretrain_data, no_dropout_config))
    pretrain(_config(tmp_path / precision, pretrain_data, no_dropout_config, precision=precision))
    reference, mixed = _losses(tmp_path / "fp32"), _losses(tmp_path / precision)
    assert mixed != reference
    for a, b in zip(mixed, reference, strict=True):
        assert abs(a - b) <= tolerance * abs(b), (mixed, reference)
    state = torch.load(
        tmp_path / precision / "checkpoints" / "step-000003" / "train_state.pt", weights_only=True
    )
    assert (state["scaler"] is not None) == (precision == "fp16")
