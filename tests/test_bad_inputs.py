"""Bad input, everywhere a user can give it: every case ends in a typed, one-line error that names the offending
file, field or value (never a traceback), and no failing run changes a byte of an earlier good output.

The CLI cases run `rtoolkit ...` in process; the Python cases call the public API. Each asserts the exit code (or the
exception type) AND the words that point the user at what to fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from rtoolkit.cli import main
from tests.conftest import REPO, shared_data

# ----------------------------------------------------------------------------------------------- fixtures


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def _model_variant(
    src: Path, dst: Path, *, config: dict | None = None, raw_config: str | None = None
) -> Path:
    """A copy of a model folder with its config.json changed (merged keys, or replaced by raw text)."""
    shutil.copytree(src, dst)
    if raw_config is not None:
        _write(dst / "config.json", raw_config)
    elif config is not None:
        data = json.loads((dst / "config.json").read_text())
        data.update(config)
        _write(dst / "config.json", json.dumps(data))
    return dst


@pytest.fixture(scope="module")
def env(tmp_path_factory, tokenizer_dir, trained_mlm_dir, classifier_dir) -> SimpleNamespace:
    """Good and bad inputs of every kind, made once for the module."""
    root = tmp_path_factory.mktemp("bad-inputs")
    books = [shared_data("corpus", "gutenberg", "nltk", "chesterton-brown.txt")]
    e = SimpleNamespace(root=root, tok=tokenizer_dir, mlm=trained_mlm_dir, clf=classifier_dir, books=books[0])
    e.binary = _write(root / "files" / "binary.txt", b"some text\x00\x01\x02 and more")
    e.latin1 = _write(root / "files" / "latin1.txt", "caf\xe9 au lait, na\xefve".encode("latin-1"))
    e.blank = _write(root / "files" / "blank.txt", "   \n\n \t\n")
    e.good_text = _write(
        root / "files" / "good.txt", "The old man looked at the sea.\n\nA second document here.\n"
    )
    e.no_txt = root / "files" / "empty-folder"
    e.no_txt.mkdir()
    _write(e.no_txt / "notes.md", "not a text corpus file")
    e.a_file = _write(root / "files" / "a-file.txt", "just a file")
    # Model folders with one thing wrong.
    e.no_config = root / "models" / "no-config"
    e.no_config.mkdir(parents=True)
    _write(e.no_config / "model.safetensors", b"")
    e.bad_json = _model_variant(
        trained_mlm_dir, root / "models" / "bad-json", raw_config='{"vocab_size": 1000,'
    )
    e.list_json = _model_variant(trained_mlm_dir, root / "models" / "list-json", raw_config="[1, 2]")
    configs = {
        "float-int": {"max_position_embeddings": 130.0},
        "null-dropout": {"hidden_dropout_prob": None},
        "list-labels": {"id2label": ["negative", "positive"]},
        "string-id": {"pad_token_id": "1"},
        "bert": {"model_type": "bert"},
        "heads": {"num_attention_heads": 5},
        "act": {"hidden_act": "mish"},
        "negative-vocab": {"vocab_size": -5},
        "label-keys": {"id2label": {"first": "negative"}},
    }
    e.cfg = {
        name: _model_variant(trained_mlm_dir, root / "models" / name, config=c) for name, c in configs.items()
    }
    e.corrupt = _model_variant(trained_mlm_dir, root / "models" / "corrupt")
    _write(e.corrupt / "model.safetensors", b"\x00\x01 this is not a safetensors file")
    e.no_weights = _model_variant(trained_mlm_dir, root / "models" / "no-weights")
    (e.no_weights / "model.safetensors").unlink()
    e.nan = _model_variant(trained_mlm_dir, root / "models" / "nan")
    state = load_file(str(e.nan / "model.safetensors"))
    state["roberta.encoder.layer.0.output.dense.weight"][0, 0] = float("nan")
    save_file(state, str(e.nan / "model.safetensors"))
    e.small_vocab = _model_variant(trained_mlm_dir, root / "models" / "small-vocab")
    state = load_file(str(e.small_vocab / "model.safetensors"))
    state = {
        k: (v[:500] if k.endswith(("word_embeddings.weight", "lm_head.bias")) else v)
        for k, v in state.items()
    }
    save_file(state, str(e.small_vocab / "model.safetensors"))
    data = json.loads((e.small_vocab / "config.json").read_text())
    _write(e.small_vocab / "config.json", json.dumps({**data, "vocab_size": 500}))
    e.wrong_labels = _model_variant(classifier_dir, root / "models" / "wrong-labels")
    data = json.loads((e.wrong_labels / "config.json").read_text())
    data.update(id2label={"0": "cat", "1": "dog"}, label2id={"cat": 0, "dog": 1})
    _write(e.wrong_labels / "config.json", json.dumps(data))
    # A preprocessed corpus, and damaged copies of it.
    from rtoolkit.data.corpus import preprocess

    e.corpus = root / "corpus"
    preprocess(books, tokenizer_dir=tokenizer_dir, out_dir=e.corpus, valid_fraction=0.05)
    e.bad_meta = shutil.copytree(e.corpus, root / "corpus-bad-meta")
    _write(e.bad_meta / "meta.json", "{not json")
    e.truncated = shutil.copytree(e.corpus, root / "corpus-truncated")
    with open(e.truncated / "train.bin", "r+b") as f:
        f.truncate((e.truncated / "train.bin").stat().st_size - 3)
    e.no_index = shutil.copytree(e.corpus, root / "corpus-no-index")
    (e.no_index / "train.idx").unlink()
    e.other_tok = root / "other-tokenizer"
    from rtoolkit.tokenizer import Tokenizer

    Tokenizer.train([e.good_text, e.books], vocab_size=400).save_pretrained(e.other_tok)
    e.other_corpus = root / "corpus-other-tokenizer"
    preprocess([e.good_text, e.books], tokenizer_dir=e.other_tok, out_dir=e.other_corpus, valid_fraction=0.5)
    # Custom finetuning data.
    rows = [
        {"text": f"a {'good' if i % 2 else 'bad'} film number {i}", "label": "pos" if i % 2 else "neg"}
        for i in range(24)
    ]
    e.train_jsonl = _write(root / "data" / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    e.unseen = _write(root / "data" / "unseen.jsonl", json.dumps({"text": "a film", "label": "meh"}) + "\n")
    e.broken_jsonl = _write(
        root / "data" / "broken.jsonl", '{"text": "a film", "label": "pos"}\n{"text": oops}\n'
    )
    e.no_column = _write(
        root / "data" / "no-column.jsonl", json.dumps({"review": "a film", "label": "pos"}) + "\n"
    )
    e.empty_jsonl = _write(root / "data" / "empty.jsonl", "\n")
    e.stsb_text = _write(
        root / "data" / "regression.jsonl", json.dumps({"text": "a", "label": "high"}) + "\n"
    )
    e.sst2 = shared_data("sst2")
    e.tsv_bad_label = _write(root / "data" / "dev-bad.tsv", "sentence\tlabel\na fine film\t7\n")
    # Earlier results that failing runs must leave alone.
    e.export = root / "export-mlm"
    result = CliRunner().invoke(main, ["export", str(e.mlm), "--out", str(e.export)])
    assert result.exit_code == 0, result.output
    e.run = root / "pretrain-run"
    args = ["pretrain", "--data", str(e.corpus), "--out", str(e.run), "--model-config", "tiny", "--seq-len", "64",
            "--batch-size", "4", "--max-steps", "2", "--warmup-steps", "1", "--eval-every", "0", "--save-every", "0",
            "--eval-max-blocks", "4", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    e.plot_file_run = root / "finetune-like"
    _write(e.plot_file_run / "metrics.jsonl", json.dumps({"step": 1, "loss": 0.5, "lr": 1e-5}) + "\n")
    e.bad_metrics_run = root / "bad-metrics"
    _write(e.bad_metrics_run / "metrics.jsonl", '{"step": 1}\nnot json\n')
    return e


def _cli(args: list[str], stdin: str | bytes | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin)


# ------------------------------------------------------------------------------------------- CLI cases
# (id, args from env, expected exit code, words the message must contain). Exit 1: rtoolkit's one-line "error:";
# exit 2: Click's own usage errors.
# fmt: off
CLI_CASES = [
    ("tok-binary", lambda e: ["train-tokenizer", e.binary, "--out", e.root / "t1"], 1, ["binary.txt", "NUL byte at byte 9"]),
    ("tok-latin1", lambda e: ["train-tokenizer", e.latin1, "--out", e.root / "t2"], 1, ["latin1.txt", "not valid UTF-8 at byte 3"]),
    ("tok-blank", lambda e: ["train-tokenizer", e.blank, "--out", e.root / "t3"], 1, ["blank.txt", "no text to train on"]),
    ("tok-vocab-small", lambda e: ["train-tokenizer", e.good_text, "--vocab-size", "100", "--out", e.root / "t4"], 1, ["vocab_size must be at least", "100"]),
    ("tok-min-freq", lambda e: ["train-tokenizer", e.good_text, "--min-frequency", "0", "--out", e.root / "t5"], 1, ["min_frequency must be >= 1", "0"]),
    ("tok-out-model", lambda e: ["train-tokenizer", e.good_text, "--out", e.mlm], 1, ["holds a model", "config.json"]),
    ("tok-out-tokenizer", lambda e: ["train-tokenizer", e.good_text, "--out", e.tok], 1, ["already holds a tokenizer", "--overwrite"]),
    ("tok-out-file", lambda e: ["train-tokenizer", e.good_text, "--out", e.a_file], 1, ["a-file.txt", "is a file"]),
    ("tok-folder-no-txt", lambda e: ["train-tokenizer", e.no_txt, "--out", e.root / "t6"], 1, ["empty-folder", "no .txt"]),
    ("tok-missing-input", lambda e: ["train-tokenizer", e.root / "nope.txt", "--out", e.root / "t7"], 2, ["nope.txt", "does not exist"]),
    ("tok-vocab-text", lambda e: ["train-tokenizer", e.good_text, "--vocab-size", "lots", "--out", e.root / "t8"], 2, ["lots", "is not a valid integer"]),
    ("info-no-config", lambda e: ["info", e.no_config], 1, ["no-config", "config.json is missing"]),
    ("info-bad-json", lambda e: ["info", e.bad_json], 1, ["bad-json/config.json", "invalid JSON at line 1"]),
    ("info-list-json", lambda e: ["info", e.list_json], 1, ["list-json/config.json", "expected a JSON object, got list"]),
    ("info-float-int", lambda e: ["info", e.cfg["float-int"]], 1, ["float-int/config.json", "max_position_embeddings must be an integer, got 130.0"]),
    ("info-null-dropout", lambda e: ["info", e.cfg["null-dropout"]], 1, ["null-dropout/config.json", "hidden_dropout_prob must be a number, got None"]),
    ("info-list-labels", lambda e: ["info", e.cfg["list-labels"]], 1, ["list-labels/config.json", "id2label must be a mapping", "got list"]),
    ('info-label-keys', lambda e: ['info', e.cfg['label-keys']], 1, ['label-keys/config.json', 'id2label', "'first'"]),
    ('info-string-id', lambda e: ['info', e.cfg['string-id']], 1, ['string-id/config.json', "pad_token_id must be an integer, got '1'"]),
    ('info-bert', lambda e: ['info', e.cfg['bert']], 1, ['bert/config.json', "model_type 'bert'"]),
    ("info-heads", lambda e: ["info", e.cfg["heads"]], 1, ["heads/config.json", "divisible by num_attention_heads (5)"]),
    ('info-act', lambda e: ['info', e.cfg['act']], 1, ['act/config.json', "hidden_act 'mish'"]),
    ("info-negative-vocab", lambda e: ["info", e.cfg["negative-vocab"]], 1, ["negative-vocab/config.json", "vocab_size must be a positive integer, got -5"]),
    ("info-corrupt", lambda e: ["info", e.corrupt], 1, ["corrupt/model.safetensors", "cannot read weights"]),
    ("info-no-weights", lambda e: ["info", e.no_weights], 1, ["no-weights", "has no weights"]),
    ("info-missing", lambda e: ["info", e.root / "no-such-model"], 1, ["no-such-model", "not found"]),
    ("pre-binary", lambda e: ["preprocess", e.binary, "--tokenizer", e.tok, "--out", e.root / "p1"], 1, ["binary.txt", "NUL byte at byte 9"]),
    ("pre-latin1", lambda e: ["preprocess", e.latin1, "--tokenizer", e.tok, "--out", e.root / "p2"], 1, ["latin1.txt", "not valid UTF-8 at byte 3"]),
    ("pre-blank", lambda e: ["preprocess", e.blank, "--tokenizer", e.tok, "--out", e.root / "p3"], 1, ["no text found", "every document was empty"]),
    ("pre-fraction", lambda e: ["preprocess", e.good_text, "--tokenizer", e.tok, "--out", e.root / "p4", "--valid-fraction", "1.5"], 1, ["valid_fraction must be in [0, 1]", "1.5"]),
    ("pre-workers", lambda e: ["preprocess", e.good_text, "--tokenizer", e.tok, "--out", e.root / "p5", "--workers", "0"], 1, ["workers must be >= 1", "0"]),
    ("pre-out-model", lambda e: ["preprocess", e.good_text, "--tokenizer", e.tok, "--out", e.mlm], 1, ["not a preprocessed corpus folder", "meta.json"]),
    ("pre-out-model-overwrite", lambda e: ["preprocess", e.good_text, "--tokenizer", e.tok, "--out", e.mlm, "--overwrite"], 1, ["not a preprocessed corpus folder"]),
    ("pre-out-file", lambda e: ["preprocess", e.good_text, "--tokenizer", e.tok, "--out", e.a_file], 1, ["a-file.txt", "is a file"]),
    ("pre-other-inputs", lambda e: ["preprocess", e.good_text, "--tokenizer", e.tok, "--out", e.corpus], 1, ["already holds a preprocessed corpus", "--overwrite"]),
    ("pre-no-tokenizer", lambda e: ["preprocess", e.good_text, "--tokenizer", e.no_txt, "--out", e.root / "p6"], 1, ["empty-folder"]),
    ("pre-folder-no-txt", lambda e: ["preprocess", e.no_txt, "--tokenizer", e.tok, "--out", e.root / "p7"], 1, ["empty-folder", "no .txt"]),
    ("pt-not-corpus", lambda e: ["pretrain", "--data", e.no_txt, "--out", e.root / "r1"], 1, ["empty-folder", "not a preprocessed corpus", "meta.json"]),
    ("pt-bad-meta", lambda e: ["pretrain", "--data", e.bad_meta, "--out", e.root / "r2"], 1, ["corpus-bad-meta/meta.json", "not valid JSON"]),
    ("pt-truncated", lambda e: ["pretrain", "--data", e.truncated, "--out", e.root / "r3", "--model-config", "tiny"], 1, ["corpus-truncated/train.bin", "truncated"]),
    ("pt-no-index", lambda e: ["pretrain", "--data", e.no_index, "--out", e.root / "r4", "--model-config", "tiny"], 1, ["corpus-no-index/train.idx", "is missing"]),
    ("pt-save-every", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r5", "--save-every", "-1"], 1, ["--save-every must be >= 0", "-1"]),
    ("pt-eval-every", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r6", "--eval-every", "-2"], 1, ["--eval-every must be >= 0", "-2"]),
    ("pt-log-every", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r7", "--log-every", "0"], 1, ["--log-every must be >= 1", "0"]),
    ("pt-batch", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r8", "--batch-size", "0"], 1, ["--batch-size must be >= 1", "0"]),
    ("pt-micro", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r9", "--micro-batch-size", "0"], 1, ["--micro-batch-size must be >= 1"]),
    ("pt-steps", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r10", "--max-steps", "0"], 1, ["--max-steps must be >= 1"]),
    ("pt-warmup", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r11", "--max-steps", "5", "--warmup-steps", "9"], 1, ["--warmup-steps (9) exceeds --max-steps (5)"]),
    ("pt-clip", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r12", "--clip-norm", "-1"], 1, ["--clip-norm must be >= 0", "-1"]),
    ("pt-mask-prob", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r13", "--mask-prob", "1.5"], 1, ["mask_prob must be in [0, 1]", "1.5"]),
    ("pt-mask-shares", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r14", "--random-token-prob", "0.6", "--leave-unmasked-prob", "0.6"], 1, ["random_token_prob + leave_unmasked_prob must be <= 1"]),
    ("pt-seq-long", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r15", "--model-config", "tiny", "--seq-len", "1000"], 1, ["--seq-len 1000", "128 tokens"]),
    ("pt-seq-short", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r16", "--model-config", "tiny", "--seq-len", "2"], 1, ["seq_len must be at least 3", "2"]),
    ("pt-config-missing", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r17", "--model-config", e.root / "nope.json"], 1, ["nope.json", "not found"]),
    ("pt-config-bad", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r18", "--model-config", e.cfg["float-int"] / "config.json"], 1, ["float-int/config.json", "max_position_embeddings must be an integer"]),
    ("pt-earlier-run", lambda e: ["pretrain", "--data", e.corpus, "--out", e.run], 1, ["already holds a run", "--resume", "--overwrite"]),
    ("pt-resume-overwrite", lambda e: ["pretrain", "--data", e.corpus, "--out", e.run, "--resume", "--overwrite"], 1, ["--resume", "--overwrite", "choose one"]),
    ("pt-too-few-blocks", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r19", "--model-config", "tiny", "--seq-len", "128", "--batch-size", "100000"], 1, ["fewer than one batch of 100000"]),
    ("pt-workers", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r20", "--num-workers", "-1"], 1, ["--num-workers must be >= 0", "-1"]),
    ("pt-eval-blocks", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r21", "--eval-max-blocks", "-1"], 1, ["--eval-max-blocks must be >= 0"]),
    ("pt-small-vocab", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r22", "--model-config", e.small_vocab / "config.json"], 1, ["500 embedding rows", "1000 ids"]),
    ("pt-init-other-tok", lambda e: ["pretrain", "--data", e.other_corpus, "--out", e.root / "r23", "--init-from", e.mlm], 1, ["corpus-other-tokenizer", "another tokenizer"]),
    ("pt-eval-other-tok", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r24", "--model-config", "tiny", "--batch-size", "4", "--eval-data", e.other_corpus], 1, ["corpus-other-tokenizer", "another tokenizer"]),
    ("pt-static-copies", lambda e: ["pretrain", "--data", e.corpus, "--out", e.root / "r25", "--static-copies", "0"], 1, ["--static-copies must be >= 1"]),
    ('pt-format', lambda e: ['pretrain', '--data', e.corpus, '--out', e.root / 'r26', '--format', 'pairs'], 2, ["'pairs' is not one of"]),
    ('pt-precision', lambda e: ['pretrain', '--data', e.corpus, '--out', e.root / 'r27', '--precision', 'fp64'], 2, ["'fp64' is not one of"]),
    ("pt-data-missing", lambda e: ["pretrain", "--data", e.root / "nope", "--out", e.root / "r28"], 2, ["nope", "does not exist"]),
    ("plot-no-metrics", lambda e: ["plot", e.no_txt], 1, ["empty-folder/metrics.jsonl not found"]),
    ("plot-out-folder", lambda e: ["plot", e.run, "--out", e.no_txt], 1, ["--out", "empty-folder", "is a folder"]),
    ("plot-bad-line", lambda e: ["plot", e.bad_metrics_run], 1, ["bad-metrics/metrics.jsonl:2", "not a JSON object"]),
    ("plot-finetune-run", lambda e: ["plot", e.plot_file_run], 1, ["finetune-like/metrics.jsonl", "no pretraining records"]),
    ("plot-labels", lambda e: ["plot", e.run, "--label", "a", "--label", "b"], 1, ["got 1 runs but 2 labels"]),
    ('ft-task', lambda e: ['finetune', '--model', e.mlm, '--task', 'wmt16', '--data-dir', e.sst2, '--out', e.root / 'f1'], 1, ["unknown task 'wmt16'"]),
    ("ft-no-data-dir", lambda e: ["finetune", "--model", e.mlm, "--task", "sst2", "--out", e.root / "f2"], 1, ["sst2", "needs data_dir"]),
    ("ft-data-dir-wrong", lambda e: ["finetune", "--model", e.mlm, "--task", "rte", "--data-dir", e.no_txt, "--out", e.root / "f3"], 1, ["empty-folder"]),
    ("ft-no-validation", lambda e: ["finetune", "--model", e.mlm, "--train", e.train_jsonl, "--out", e.root / "f4"], 1, ["validation file"]),
    ("ft-task-and-files", lambda e: ["finetune", "--model", e.mlm, "--task", "sst2", "--data-dir", e.sst2, "--train", e.train_jsonl, "--validation", e.train_jsonl, "--out", e.root / "f5"], 1, ["either a GLUE task or custom"]),
    ("ft-no-column", lambda e: ["finetune", "--model", e.mlm, "--train", e.no_column, "--validation", e.no_column, "--out", e.root / "f6"], 1, ["no-column.jsonl", "text"]),
    ("ft-broken-jsonl", lambda e: ["finetune", "--model", e.mlm, "--train", e.broken_jsonl, "--validation", e.broken_jsonl, "--out", e.root / "f7"], 1, ["broken.jsonl:2", "invalid JSON"]),
    ("ft-empty", lambda e: ["finetune", "--model", e.mlm, "--train", e.empty_jsonl, "--validation", e.empty_jsonl, "--out", e.root / "f8"], 1, ["empty.jsonl"]),
    ("ft-unseen-label", lambda e: ["finetune", "--model", e.mlm, "--train", e.train_jsonl, "--validation", e.unseen, "--out", e.root / "f9"], 1, ["unseen.jsonl", "meh"]),
    ("ft-batch", lambda e: ["finetune", "--model", e.mlm, "--train", e.train_jsonl, "--validation", e.train_jsonl, "--batch-size", "0", "--out", e.root / "f10"], 1, ["--batch-size must be >= 1", "0"]),
    ("ft-lr", lambda e: ["finetune", "--model", e.mlm, "--train", e.train_jsonl, "--validation", e.train_jsonl, "--lr", "-1", "--out", e.root / "f11"], 1, ["lr must be positive", "-1"]),
    ("ft-warmup", lambda e: ["finetune", "--model", e.mlm, "--train", e.train_jsonl, "--validation", e.train_jsonl, "--warmup-ratio", "2", "--out", e.root / "f12"], 1, ["--warmup-ratio must be in [0, 1]", "2"]),
    ("ft-max-length", lambda e: ["finetune", "--model", e.mlm, "--train", e.train_jsonl, "--validation", e.train_jsonl, "--max-length", "0", "--out", e.root / "f13"], 1, ["--max-length must be >= 1"]),
    ("ft-eval-every", lambda e: ["finetune", "--model", e.mlm, "--train", e.train_jsonl, "--validation", e.train_jsonl, "--eval-every", "-1", "--out", e.root / "f14"], 1, ["--eval-every must be >= 0", "-1"]),
    ("ft-keep-last", lambda e: ["finetune", "--model", e.mlm, "--train", e.train_jsonl, "--validation", e.train_jsonl, "--keep-last", "0", "--out", e.root / "f15"], 1, ["--keep-last must be >= 1"]),
    ('ft-main-metric', lambda e: ['finetune', '--model', e.mlm, '--train', e.train_jsonl, '--validation', e.train_jsonl, '--main-metric', 'bleu', '--out', e.root / 'f16'], 1, ["'bleu'", 'choose one of']),
    ("ft-model-missing", lambda e: ["finetune", "--model", e.root / "nope-model", "--train", e.train_jsonl, "--validation", e.train_jsonl, "--out", e.root / "f17"], 1, ["nope-model", "not found"]),
    ("ft-nan", lambda e: ["finetune", "--model", e.nan, "--train", e.train_jsonl, "--validation", e.train_jsonl, "--out", e.root / "f18"], 1, ["nan", "NaN or inf", "layer.0.output.dense.weight"]),
    ("ft-tokenizer-vocab", lambda e: ["finetune", "--model", e.small_vocab, "--train", e.train_jsonl, "--validation", e.train_jsonl, "--out", e.root / "f19"], 1, ["1000 ids", "500 embeddings"]),
    ("ft-earlier-run", lambda e: ["finetune", "--model", e.mlm, "--train", e.train_jsonl, "--validation", e.train_jsonl, "--out", e.run], 1, ["already holds a run", "--overwrite"]),
    ("ft-resume-nothing", lambda e: ["finetune", "--model", e.mlm, "--train", e.train_jsonl, "--validation", e.train_jsonl, "--resume", "--out", e.root / "f20"], 1, ["nothing to resume", "f20"]),
    ("ft-resume-overwrite", lambda e: ["finetune", "--model", e.mlm, "--train", e.train_jsonl, "--validation", e.train_jsonl, "--resume", "--overwrite", "--out", e.root / "f21"], 1, ["resume", "overwrite", "choose one"]),
    ("ft-predict-no-test", lambda e: ["finetune", "--model", e.mlm, "--train", e.train_jsonl, "--validation", e.train_jsonl, "--predict", "--out", e.root / "f22"], 1, ["--predict", "test file"]),
    ("ft-regression-text", lambda e: ["finetune", "--model", e.mlm, "--train", e.stsb_text, "--validation", e.stsb_text, "--regression", "--out", e.root / "f23"], 1, ["regression.jsonl", "high"]),
    ('ft-precision', lambda e: ['finetune', '--model', e.mlm, '--task', 'sst2', '--data-dir', e.sst2, '--precision', 'fp8', '--out', e.root / 'f24'], 2, ["'fp8' is not one of"]),
    ('ft-format', lambda e: ['finetune', '--model', e.mlm, '--train', e.train_jsonl, '--validation', e.train_jsonl, '--format', 'xml', '--out', e.root / 'f25'], 2, ["'xml' is not one of"]),
    ("ev-no-head", lambda e: ["evaluate", "--model", e.mlm, "--task", "sst2", "--data-dir", e.sst2], 1, ["no trained classification head", "classifier.*"]),
    ('ev-wrong-labels', lambda e: ['evaluate', '--model', e.wrong_labels, '--task', 'sst2', '--data-dir', e.sst2], 1, ["['cat', 'dog']", 'sst2', 'another task']),
    ("ev-batch", lambda e: ["evaluate", "--model", e.clf, "--task", "sst2", "--data-dir", e.sst2, "--batch-size", "0"], 1, ["batch_size must be an integer of at least 1", "0"]),
    ("ev-max-length", lambda e: ["evaluate", "--model", e.clf, "--task", "sst2", "--data-dir", e.sst2, "--max-length", "2"], 1, ["max_length must be an integer of at least 4", "2"]),
    ("ev-max-samples", lambda e: ["evaluate", "--model", e.clf, "--task", "sst2", "--data-dir", e.sst2, "--max-samples", "0"], 1, ["max_samples must be an integer of at least 1"]),
    ("ev-nothing", lambda e: ["evaluate", "--model", e.clf], 1, ["either a GLUE task", "validation file"]),
    ("ev-no-data-dir", lambda e: ["evaluate", "--model", e.clf, "--task", "sst2"], 1, ["sst2", "needs data_dir"]),
    ("ev-unseen", lambda e: ["evaluate", "--model", e.clf, "--validation", e.unseen], 1, ["unseen.jsonl", "meh"]),
    ("ev-task-labels", lambda e: ["evaluate", "--model", e.clf, "--task", "mnli", "--data-dir", e.sst2], 1, ["2 label(s)", "mnli needs 3"]),
    ("ex-out-model", lambda e: ["export", e.mlm, "--out", e.mlm], 1, ["is the model folder itself"]),
    ("ex-out-file", lambda e: ["export", e.mlm, "--out", e.a_file], 1, ["a-file.txt", "is a file"]),
    ("ex-out-foreign", lambda e: ["export", e.mlm, "--out", e.no_txt], 1, ["empty-folder", "not an export folder", "notes.md"]),
    ("ex-opset", lambda e: ["export", e.mlm, "--out", e.root / "x1", "--opset", "5"], 1, ["--opset must be between", "5"]),
    ("ex-seq", lambda e: ["export", e.mlm, "--out", e.root / "x2", "--max-seq-len", "1000"], 1, ["--max-seq-len 1000", "128 tokens"]),
    ("ex-batch", lambda e: ["export", e.mlm, "--out", e.root / "x3", "--max-batch", "0"], 1, ["--max-batch must be a positive integer", "0"]),
    ("ex-per-channel", lambda e: ["export", e.mlm, "--out", e.root / "x4", "--per-channel"], 1, ["--per-channel", "--quantize int8"]),
    ("ex-eval-missing", lambda e: ["export", e.clf, "--out", e.root / "x5", "--eval-data", e.root / "none.tsv"], 1, ["none.tsv", "file not found"]),
    ("ex-eval-mlm", lambda e: ["export", e.mlm, "--out", e.root / "x6", "--eval-data", e.tsv_bad_label], 1, ["--eval-data", "fill-mask export has no labels"]),
    ('ex-task', lambda e: ['export', e.mlm, '--out', e.root / 'x7', '--task', 'translation'], 2, ["'translation' is not one of"]),
    ("ex-no-head", lambda e: ["export", e.mlm, "--out", e.root / "x8", "--task", "classification"], 1, ["no classification head", "classifier.*"]),
    ("ex-trt", lambda e: ["export", e.mlm, "--out", e.root / "x9", "--trt"], 1, ["--trt needs"]),
    ("ex-model-missing", lambda e: ["export", e.root / "nope-model", "--out", e.root / "x10"], 1, ["nope-model", "not found"]),
    ("ex-nan", lambda e: ["export", e.nan, "--out", e.root / "x11"], 1, ["NaN or inf", "layer.0.output.dense.weight"]),
    ("ex-bad-label", lambda e: ["export", e.clf, "--out", e.root / "x12", "--eval-data", e.tsv_bad_label], 1, ["dev-bad.tsv", "7"]),
    ("pr-binary", lambda e: ["predict", "fill-mask", "--model", e.mlm, "--input", e.binary], 1, ["binary.txt", "NUL byte at byte 9"]),
    ("pr-latin1", lambda e: ["predict", "fill-mask", "--model", e.mlm, "--input", e.latin1], 1, ["latin1.txt", "not valid UTF-8 at byte 3"]),
    ("pr-input-missing", lambda e: ["predict", "fill-mask", "--model", e.mlm, "--input", e.root / "none.txt"], 1, ["input file not found", "none.txt"]),
    ("pr-blank-line", lambda e: ["predict", "embed", "--model", e.mlm, "--input", e.good_text], 1, ["good.txt line 2", "empty line"]),
    ("pr-empty-stdin", lambda e: ["predict", "embed", "--model", e.mlm, "--input", "-"], 1, ["stdin holds no text"]),
    ("pr-both", lambda e: ["predict", "embed", "--model", e.mlm, "--input", e.good_text, "hello"], 1, ["not both"]),
    ("pr-no-mask", lambda e: ["predict", "fill-mask", "--model", e.mlm, "A sentence without a mask."], 1, ["has no <mask>"]),
    ("pr-classify-mlm", lambda e: ["predict", "classify", "--model", e.mlm, "A fine film."], 1, ["masked-LM head", "cannot do classify"]),
    ('pr-int8-torch', lambda e: ['predict', 'embed', '--model', e.mlm, '--precision', 'int8', 'A fine film.'], 1, ["'int8'", 'torch backend']),
    ('pr-cuda', lambda e: ['predict', 'embed', '--model', e.mlm, '--device', 'cuda', 'A fine film.'], 1, ["'cuda'", 'no CUDA GPU']),
    ('pr-device', lambda e: ['predict', 'embed', '--model', e.mlm, '--device', 'tpu', 'A fine film.'], 1, ["'tpu'", 'device must be']),
    ("pr-onnx-model", lambda e: ["predict", "embed", "--model", e.mlm, "--backend", "onnx", "A fine film."], 1, ["holds no ONNX model"]),
    ("pr-batch", lambda e: ["predict", "embed", "--model", e.mlm, "--batch-size", "0", "A fine film."], 1, ["batch_size must be a positive integer", "0"]),
    ("pr-max-length", lambda e: ["predict", "embed", "--model", e.mlm, "--max-length", "2", "A fine film."], 1, ["max_length must be an integer >= 4", "2"]),
    ("pr-nan", lambda e: ["predict", "embed", "--model", e.nan, "A fine film."], 1, ["NaN or inf", "layer.0.output.dense.weight"]),
    ("pr-small-vocab", lambda e: ["predict", "embed", "--model", e.small_vocab, "A fine film."], 1, ["1000 ids", "500", "do not belong together"]),
    ("pr-truncation", lambda e: ["predict", "embed", "--model", e.mlm, "--max-length", "8", "--no-truncation", "one two three four five six seven eight nine ten"], 1, ["exceed the 8-token limit"]),
    ("pr-stdin-latin1", lambda e: ["predict", "embed", "--model", e.mlm, "--input", "-"], 1, ["stdin", "not valid UTF-8 at byte 3"]),
    ('pr-export-task', lambda e: ['predict', 'classify', '--model', e.export, 'A fine film.'], 1, ["exported for 'fill-mask'", 'cannot do classify']),
    ("pr-model-missing", lambda e: ["predict", "embed", "--model", e.root / "none-model", "hi"], 1, ["none-model", "not found"]),
    ("demo-port-range", lambda e: ["demo", "--model", e.mlm, "--port", "70000"], 2, ["70000", "not in the range"]),
    ('demo-host', lambda e: ['demo', '--model', e.mlm, '--host', 'no-such-host.invalid'], 1, ["--host 'no-such-host.invalid'"]),
    ("demo-model-missing", lambda e: ["demo", "--model", e.root / "none-model", "--port", "7999"], 1, ["none-model", "not found"]),
    ("demo-task-model-mlm", lambda e: ["demo", "--model", e.mlm, "--task-model", e.mlm, "--port", "7999"], 1, ["no question-answering, multiple-choice or token-classification head"]),
    ("pr-answer-mlm", lambda e: ["predict", "answer", "--model", e.mlm, "--question", "Who?", "--context", "Tom."], 1, ["masked-LM head", "cannot do answer"]),
    ("pr-answer-half", lambda e: ["predict", "answer", "--model", e.mlm, "--question", "Who?"], 1, ["'context' must be a non-empty string"]),
    ("pr-tag-mlm", lambda e: ["predict", "tag", "--model", e.mlm, "Sherlock Holmes."], 1, ["masked-LM head", "cannot do tag"]),
]
# fmt: on

STDIN = {"pr-stdin-latin1": "caf\xe9".encode("latin-1"), "pr-empty-stdin": ""}


@pytest.mark.parametrize(("case", "build", "code", "words"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_clear_line(env, case, build, code, words):
    result = _cli(build(env), stdin=STDIN.get(case))
    output = result.output
    assert result.exit_code == code, output
    assert "Traceback" not in output
    if code == 1:  # one error line, the last (a progress bar may come before it)
        lines = output.strip().splitlines()
        assert [line for line in lines if line.startswith("error: ")] == lines[-1:], output
    for word in words:
        assert word in output, f"{word!r} not in {output!r}"


def test_demo_port_in_use_is_one_line(env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _cli(["demo", "--model", env.mlm, "--port", port])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output and "choose --port" in result.output


# ------------------------------------------------------------------------------------------- Python API
def _api_cases():
    from rtoolkit.export import ExportError, export

    from rtoolkit import Predictor, RobertaConfig, RobertaForMaskedLM, Tokenizer
    from rtoolkit.data.batching import length_grouped_batches
    from rtoolkit.data.corpus import CorpusError, epoch_batches, load_meta
    from rtoolkit.data.masking import MaskingConfig
    from rtoolkit.train.distributed import resolve_device
    from rtoolkit.train.finetune import FinetuneConfig
    from rtoolkit.train.pretrain import PretrainConfig

    def tok(e):
        return Tokenizer.from_pretrained(e.tok)

    def model(e):
        return RobertaForMaskedLM.from_pretrained(e.mlm)

    # fmt: off
    return [
        ("cfg-float", lambda e: RobertaConfig(max_position_embeddings=130.0), ValueError, ["max_position_embeddings", "130.0"]),
        ("cfg-null", lambda e: RobertaConfig(attention_probs_dropout_prob=None), ValueError, ["attention_probs_dropout_prob", "None"]),
        ("cfg-list-labels", lambda e: RobertaConfig(id2label=["a", "b"]), ValueError, ["id2label", "list"]),
        ('cfg-label2id', lambda e: RobertaConfig(label2id={'a': 'zero'}), ValueError, ['label2id', "'zero'"]),
        ('cfg-str-id', lambda e: RobertaConfig(eos_token_id='2'), ValueError, ['eos_token_id', "'2'"]),
        ("cfg-bool", lambda e: RobertaConfig(num_hidden_layers=True), ValueError, ["num_hidden_layers", "True"]),
        ("cfg-heads", lambda e: RobertaConfig(hidden_size=100, num_attention_heads=3), ValueError, ["hidden_size (100)", "(3)"]),
        ("cfg-dropout", lambda e: RobertaConfig(hidden_dropout_prob=1.5), ValueError, ["hidden_dropout_prob", "1.5"]),
        ("cfg-eps", lambda e: RobertaConfig(layer_norm_eps=0), ValueError, ["layer_norm_eps", "0"]),
        ("cfg-nan", lambda e: RobertaConfig(initializer_range=float("nan")), ValueError, ["initializer_range", "nan"]),
        ('cfg-problem', lambda e: RobertaConfig(problem_type='ranking'), ValueError, ['problem_type', "'ranking'"]),
        ("cfg-positions", lambda e: RobertaConfig(max_position_embeddings=2), ValueError, ["max_position_embeddings (2)"]),
        ('cfg-preset', lambda e: RobertaConfig.preset('giant'), ValueError, ["'giant'"]),
        ("cfg-architectures", lambda e: RobertaConfig(architectures="RobertaModel"), ValueError, ["architectures", "RobertaModel"]),
        ("model-id-range", lambda e: model(e)(torch.tensor([[0, 5, 1500, 2]])), ValueError, ["token id 1500", "0 .. 999"]),
        ("model-negative-id", lambda e: model(e)(torch.tensor([[0, -3, 2]])), ValueError, ["token id -3"]),
        ("model-too-long", lambda e: model(e)(torch.full((1, 300), 5)), ValueError, ["300 tokens", "128 tokens"]),
        ("model-1d", lambda e: model(e)(torch.tensor([0, 5, 2])), ValueError, ["(batch, sequence)", "(3,)"]),
        ("tok-surrogate", lambda e: tok(e).encode("broken \ud83d text"), ValueError, ["lone surrogate U+D83D", "character 7"]),
        ("tok-surrogate-batch", lambda e: tok(e).encode_batch(["fine", "bad \udc80"]), ValueError, ["texts[1]", "U+DC80"]),
        ("tok-decode", lambda e: tok(e).decode([0, 5, 4000]), ValueError, ["id 4000", "0 .. 999"]),
        ("tok-decode-negative", lambda e: tok(e).decode([-1]), ValueError, ["id -1"]),
        ("tok-empty-iter", lambda e: Tokenizer.train_from_iterator(["", "  "], vocab_size=300), ValueError, ["no text to train on"]),
        ("tok-no-files", lambda e: Tokenizer.train([], vocab_size=300), ValueError, ["no training files"]),
        ("tok-not-str", lambda e: tok(e).encode(42), ValueError, ["text must be a string", "int"]),
        ("tok-pairs", lambda e: tok(e).encode_batch(["a", "b"], ["c"]), ValueError, ["2 texts but 1 text_pairs"]),
        ("tok-pad-empty", lambda e: tok(e).pad([]), ValueError, ["nothing to pad"]),
        ("tok-binary-file", lambda e: Tokenizer.train([e.binary], vocab_size=300), ValueError, ["binary.txt", "NUL byte at byte 9"]),
        ('pred-backend', lambda e: Predictor.from_pretrained(e.mlm, backend='gpu'), ValueError, ['backend must be one of', "'gpu'"]),
        ('pred-precision', lambda e: Predictor.from_pretrained(e.mlm, precision='int4'), ValueError, ["'int4'"]),
        ('pred-pooling', lambda e: Predictor.from_pretrained(e.mlm).embed('a', pooling='max'), ValueError, ['pooling', "'max'"]),
        ("pred-pairs", lambda e: Predictor.from_pretrained(e.clf).classify(["a", "b"], ["c"]), ValueError, ["2 text(s) but 1 text_pair(s)"]),
        ("pred-top-k", lambda e: Predictor.from_pretrained(e.mlm).fill_mask("A <mask>.", top_k=0), ValueError, ["top_k", "0"]),
        ("pred-surrogate", lambda e: Predictor.from_pretrained(e.mlm).embed("bad \ud800"), ValueError, ["lone surrogate U+D800"]),
        ("pred-not-folder", lambda e: Predictor.from_pretrained(e.no_txt), ValueError, ["empty-folder", "config.json"]),
        ("corpus-meta", lambda e: load_meta(e.bad_meta), CorpusError, ["corpus-bad-meta/meta.json", "not valid JSON"]),
        ('corpus-format', lambda e: epoch_batches(np.full(8, 8), epoch=0, seed=0, batch_size=2, seq_len=8, format='full-sentences', masking='random'), CorpusError, ['masking', "'random'"]),
        ("masking-prob", lambda e: MaskingConfig(mask_prob=2.0), ValueError, ["mask_prob", "2.0"]),
        ("batching-size", lambda e: length_grouped_batches([3, 4], batch_size=0, seed=0, epoch=0), ValueError, ["batch_size must be >= 1", "0"]),
        ("pretrain-resume-overwrite", lambda e: PretrainConfig(out=e.root / "c1", resume=True, overwrite=True).resolved(), ValueError, ["--resume", "--overwrite"]),
        ('pretrain-format', lambda e: PretrainConfig(out=e.root / 'c2', format='pairs').resolved(), ValueError, ['format must be one of', "'pairs'"]),
        ("finetune-no-data", lambda e: FinetuneConfig(model=str(e.mlm), out=str(e.root / "c3"), task="sst2"), ValueError, ["sst2", "data_dir"]),
        ('finetune-precision', lambda e: FinetuneConfig(model=str(e.mlm), out=str(e.root / 'c4'), task='sst2', data_dir='.', precision='fp8'), ValueError, ['precision', "'fp8'"]),
        ('device-name', lambda e: resolve_device('tpu', env={}, cuda_available=False), ValueError, ["'tpu'"]),
        ('export-quantize', lambda e: export(e.mlm, e.root / 'c5', quantize='int4'), ExportError, ["--quantize 'int4'"]),
        ("export-exclude", lambda e: export(e.mlm, e.root / "c6", exclude=["head"]), ExportError, ["--exclude", "--quantize int8"]),
    ]
    # fmt: on


API_CASES = _api_cases()


@pytest.mark.parametrize(("case", "call", "error", "words"), API_CASES, ids=[c[0] for c in API_CASES])
def test_python_bad_input_raises_a_typed_error_naming_it(env, case, call, error, words):
    with pytest.raises(error) as info:
        call(env)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_the_suite_covers_every_command(env):
    commands = {build(env)[0] for _, build, _, _ in CLI_CASES}
    assert commands == {
        "train-tokenizer", "info", "preprocess", "pretrain", "plot", "finetune", "evaluate", "export", "predict", "demo",
    }  # fmt: skip
    assert len(CLI_CASES) + 1 + len(API_CASES) >= 150  # + the port-in-use case


# ------------------------------------------------------------------------------------------- nothing lost
def folder_digest(folder: Path) -> str:
    """sha256 over every file under `folder` (hidden ones too): names, sizes and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_a_failing_export_leaves_the_earlier_export_as_it_was(env, tmp_path):
    good = tmp_path / "sst2-export"
    assert _cli(["export", env.clf, "--out", good, "--quantize", "int8"]).exit_code == 0
    before = folder_digest(good)
    # Validation reads the dev set after the new graph exists: the labels do not fit, so this export fails late.
    result = _cli(["export", env.clf, "--out", good, "--eval-data", env.tsv_bad_label])
    assert result.exit_code == 1 and "dev-bad.tsv" in result.output
    assert folder_digest(good) == before  # model.onnx, model.int8.onnx and the manifest untouched
    assert _leftovers(tmp_path) == []


def test_a_refused_pretrain_leaves_the_earlier_run_as_it_was(env, tmp_path):
    run = shutil.copytree(env.run, tmp_path / "run")
    before = folder_digest(run)
    for extra in (
        [],
        ["--overwrite", "--seq-len", "5000"],
        ["--overwrite", "--warmup-steps", "99", "--max-steps", "2"],
    ):
        result = _cli(["pretrain", "--data", env.corpus, "--out", run, "--model-config", "tiny", *extra])
        assert result.exit_code == 1, result.output
    assert folder_digest(run) == before


def test_overwrite_starts_again_and_keeps_other_files(env, tmp_path):
    run = shutil.copytree(env.run, tmp_path / "run")
    _write(run / "my-notes.txt", "mine")
    args = ["pretrain", "--data", env.corpus, "--out", run, "--model-config", "tiny", "--seq-len", "64",
            "--batch-size", "4", "--max-steps", "1", "--warmup-steps", "1", "--eval-every", "0", "--no-progress",
            "--overwrite"]  # fmt: skip
    assert _cli(args).exit_code == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 1 and (run / "my-notes.txt").read_text() == "mine"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000001"]


def test_a_refused_finetune_leaves_the_earlier_run_as_it_was(env, tmp_path):
    out = tmp_path / "ft"
    base = ["finetune", "--model", env.mlm, "--train", env.train_jsonl, "--validation", env.train_jsonl,
            "--max-steps", "2", "--no-progress", "--out", out]  # fmt: skip
    assert _cli(base).exit_code == 0, _cli(base).output
    before = folder_digest(out)
    assert _cli(base).exit_code == 1
    assert _cli([*base, "--overwrite", "--main-metric", "bleu"]).exit_code == 1
    assert folder_digest(out) == before


def test_train_tokenizer_never_touches_a_model_and_keeps_a_tokenizer_on_failure(env, tmp_path):
    model = shutil.copytree(env.mlm, tmp_path / "model")
    before = folder_digest(model)
    for extra in ([], ["--overwrite"]):
        result = _cli(["train-tokenizer", env.good_text, "--vocab-size", "300", "--out", model, *extra])
        assert result.exit_code == 1 and "holds a model" in result.output
    assert folder_digest(model) == before
    tok = shutil.copytree(env.tok, tmp_path / "tok")
    before = folder_digest(tok)
    result = _cli(["train-tokenizer", env.binary, "--vocab-size", "300", "--out", tok, "--overwrite"])
    assert result.exit_code == 1 and folder_digest(tok) == before


def test_a_failing_preprocess_leaves_the_earlier_corpus_as_it_was(env, tmp_path):
    corpus = shutil.copytree(env.corpus, tmp_path / "corpus")
    before = folder_digest(corpus)
    for extra, inputs in (([], [env.good_text]), (["--overwrite"], [env.good_text, env.latin1])):
        result = _cli(["preprocess", *inputs, "--tokenizer", env.tok, "--out", corpus, *extra])
        assert result.exit_code == 1, result.output
    assert folder_digest(corpus) == before and _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------- folder replacement
_REPLACE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import rtoolkit.checkpoint as ck

    target, when = Path(sys.argv[1]), sys.argv[2]
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    if when == "before-swap":
        ck._exchange = die
        ck.os.replace = die
    elif when == "after-swap":
        ck.shutil.rmtree = die
    else:  # a system without an atomic exchange: killed between the two renames
        ck._exchange = lambda a, b: False
        renames, real = [], os.replace
        ck.os.replace = lambda a, b: die() if renames.append(a) or len(renames) == 2 else real(a, b)
    with ck.atomic_directory(target) as tmp:
        (tmp / "version.txt").write_text("new")
        (tmp / "weights.bin").write_bytes(b"n" * 4096)
    """
)


@pytest.mark.parametrize(
    ("when", "after_recovery"), [("before-swap", "old"), ("after-swap", "new"), ("between-renames", "old")]
)
def test_kill_9_inside_a_folder_replacement_loses_nothing(tmp_path, when, after_recovery):
    """kill -9 inside a replacement: with the atomic exchange the folder is always there, old or new; without it
    (two renames) the next run brings the old folder back. Either way the killed write's leftovers are removed."""
    from rtoolkit.checkpoint import atomic_directory, recover_directory

    target = tmp_path / "final"
    with atomic_directory(target) as tmp:
        (tmp / "version.txt").write_text("old")
        (tmp / "weights.bin").write_bytes(b"o" * 4096)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _REPLACE, str(target), when], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert _leftovers(tmp_path)  # the killed write left a temporary or previous folder behind
    if when != "between-renames":
        assert (target / "version.txt").read_text() == after_recovery  # complete at every moment
    recover_directory(target)  # what the next run does first
    version = (target / "version.txt").read_text()
    assert version == after_recovery and (target / "weights.bin").read_bytes() == version[0].encode() * 4096
    assert _leftovers(tmp_path) == []


def test_outputs_get_the_users_umask(tmp_path):
    from rtoolkit.checkpoint import atomic_directory, atomic_write_bytes

    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "folder") as tmp:
            (tmp / "a.txt").write_text("x")
        atomic_write_bytes(tmp_path / "file.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755  # mkdtemp alone gives 0o700
    assert (tmp_path / "file.bin").stat().st_mode & 0o777 == 0o644  # mkstemp alone gives 0o600
