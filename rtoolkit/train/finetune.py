"""Finetune a RoBERTa encoder on a GLUE task or on custom CSV / TSV / JSONL data, and evaluate finetuned models.

    config = FinetuneConfig(model="runs/pretrain/final", task="sst2", data_dir="../shared/data/sst2", out="runs/sst2")
    results = finetune(config)            # OUT/{checkpoints/step-N, best, final, metrics.jsonl, eval_results.json}
    evaluate_model("runs/sst2/best", task="sst2", data_dir="../shared/data/sst2")   # {"dev/accuracy": ...}

The recipe is fairseq's (see `rtoolkit.data.glue.GLUE_TASKS`): AdamW (0.9, 0.98, eps 1e-6), weight decay 0.1,
6% linear warmup then linear decay, no clipping, 10 epochs, per-task learning rate and batch size; every value can
be overridden. The loop is below, top to bottom; the step, evaluation, checkpoint, resume, metrics and progress
helpers are the ones pretraining uses (`rtoolkit.train.loop`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtoolkit.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    load_state_dict,
    load_weights,
    resolve_model_dir,
    save_model,
)
from rtoolkit.config import RobertaConfig
from rtoolkit.data.batching import drop_unneeded_mask, length_grouped_batches, random_batches
from rtoolkit.data.glue import (
    DataError,
    GlueTask,
    LabelSpace,
    TextDataset,
    encode_rows,
    get_task,
    infer_label_space,
    read_glue,
    read_rows,
    write_glue_submission,
    write_predictions,
)
from rtoolkit.model import RobertaForSequenceClassification
from rtoolkit.tokenizer import Tokenizer
from rtoolkit.train.distributed import (
    DistInfo,
    barrier,
    cleanup_distributed,
    init_distributed,
    shard,
    unwrap_model,
    wrap_model,
)
from rtoolkit.train.loop import (
    PRECISIONS,
    MetricsWriter,
    TrainingDiverged,
    autocast,
    clear_run,
    earlier_run,
    evaluate,
    latest_checkpoint,
    make_grad_scaler,
    progress_bar,
    recover_run_folder,
    resume,
    save_checkpoint,
    save_final,
    train_step,
    write_run_config,
)
from rtoolkit.train.metrics import REGRESSION_METRICS, compute_metrics
from rtoolkit.train.optim import build_optimizer, linear_schedule, warmup_from_ratio

logger = logging.getLogger(__name__)

BEST_DIR = "best"
EVAL_RESULTS_NAME = "eval_results.json"
PREDICTIONS_DIR = "predictions"
# Custom data: the small-task settings of the fairseq recipe (RTE, STS-B).
CUSTOM_DEFAULTS = {"lr": 2e-5, "batch_size": 16, "epochs": 10, "warmup_ratio": 0.06}


# ------------------------------------------------------------------------------------------------- config
@dataclass
class FinetuneConfig:
    """Every setting of a finetuning run; None for lr / batch_size / epochs / warmup_ratio means the task preset."""

    model: str
    """Model folder: from `rtoolkit pretrain`, a Hugging Face RoBERTa folder, or a finetuned model."""
    out: str
    """Run folder: checkpoints/step-N/, best/, final/, metrics.jsonl, eval_results.json."""
    task: str | None = None
    """GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli); None for custom data."""
    data_dir: str | None = None
    """Folder with the task's GLUE files (or the GLUE root holding e.g. SST-2/)."""
    train_file: str | None = None
    """Custom training data (.csv, .tsv or .jsonl)."""
    validation_file: str | None = None
    """Custom validation data, same columns as the training data."""
    test_file: str | None = None
    """Custom data to predict with --predict (the label column may be absent)."""
    text_column: str = "text"
    """Custom data: column of the text."""
    text_pair_column: str | None = None
    """Custom data: column of the second text of a pair (None: single texts)."""
    label_column: str = "label"
    """Custom data: column of the label (strings, integers, or floats for regression)."""
    regression: bool = False
    """Custom data: treat the labels as numbers to regress on, even when they are integers."""
    data_format: str | None = None
    """Custom data: csv, tsv or jsonl (None: from the file suffix)."""
    tokenizer: str | None = None
    """Tokenizer folder (None: the model folder's own tokenizer)."""
    lr: float | None = None
    """Peak learning rate (None: the task preset)."""
    batch_size: int | None = None
    """Sentences per optimizer step, over all processes (None: the task preset)."""
    epochs: int | None = None
    """Passes over the training data (None: the task preset, 10)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides epochs for the schedule length)."""
    warmup_ratio: float | None = None
    """Share of the steps spent in linear warmup (None: the task preset, 0.06)."""
    weight_decay: float = 0.1
    """Decoupled weight decay (biases and LayerNorm weights exempt)."""
    adam_betas: tuple[float, float] = (0.9, 0.98)
    """Adam beta1, beta2."""
    adam_eps: float = 1e-6
    """Adam epsilon."""
    clip_norm: float = 0.0
    """Gradient-norm clipping (0: off, as in fairseq's GLUE recipe)."""
    max_length: int = 512
    """Longest input in tokens, <s> and </s> included (also capped by the model's position table)."""
    micro_batch_size: int | None = None
    """Sentences per forward/backward on each process; gradients accumulate to batch_size (None: no split)."""
    group_by_length: bool = True
    """Batch rows of similar length together (fairseq's order: little or no padding, several times fewer tokens
    per step on short sentences); False: random batches, each padded to its longest row."""
    eval_batch_size: int = 64
    """Sentences per evaluation batch."""
    eval_every: int = 0
    """Also evaluate every N steps (0: only at the end of each epoch)."""
    save_every: int = 0
    """Also write a resumable checkpoint every N steps (0: at each evaluation)."""
    keep_last: int = 1
    """Resumable checkpoints to keep under OUT/checkpoints (best/ and final/ are kept apart)."""
    log_every: int = 10
    """Write the training loss to metrics.jsonl every N steps."""
    seed: int = 1
    """Seed of the classifier initialisation, the data order and dropout."""
    precision: str = "auto"
    """fp32, bf16, fp16, or auto (bf16 on a GPU that supports it, else fp32)."""
    device: str | None = None
    """cpu, cuda, cuda:1 ... (None: cuda when available)."""
    max_train_samples: int | None = None
    """Use only the first N training rows (quick runs)."""
    max_eval_samples: int | None = None
    """Evaluate on only the first N rows of each evaluation split."""
    main_metric: str | None = None
    """The metric that picks best/ (None: the task's; accuracy or pearson for custom data)."""
    predict: bool = False
    """After training, write test-set predictions from best/ (GLUE submission format for GLUE tasks)."""
    resume: bool = False
    """Continue the run in OUT from its latest checkpoint."""
    overwrite: bool = False
    """Start again in an OUT that holds an earlier run (its checkpoints, best/, final/, metrics are deleted first)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.task is None and self.train_file is None:
            raise ValueError(
                "give a GLUE task (task + data_dir) or custom data (train_file + validation_file)"
            )
        if self.task is not None and (self.train_file or self.validation_file):
            raise ValueError("give either a GLUE task or custom train/validation files, not both")
        if self.task is not None:
            get_task(self.task)  # unknown names fail here
            if self.data_dir is None:
                raise ValueError(f"task {self.task} needs data_dir (the folder with its GLUE .tsv files)")
        if self.train_file is not None and self.validation_file is None:
            raise ValueError("custom data needs a validation file too")
        for name in (
            "batch_size",
            "epochs",
            "max_steps",
            "micro_batch_size",
            "eval_batch_size",
            "max_length",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name in ("eval_every", "save_every", "log_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {self.keep_last}")
        if self.precision not in ("auto", *PRECISIONS):
            raise ValueError(f"precision must be auto or one of {PRECISIONS}, got {self.precision!r}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.resume and self.overwrite:
            raise ValueError("resume continues the run in out and overwrite starts it again: choose one")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio}")

    def resolved(self) -> FinetuneConfig:
        """A copy with lr / batch_size / epochs / warmup_ratio filled from the task preset."""
        preset: dict[str, Any] = dict(CUSTOM_DEFAULTS)
        if self.task is not None:
            t = get_task(self.task)
            preset = {
                "lr": t.lr,
                "batch_size": t.batch_size,
                "epochs": t.epochs,
                "warmup_ratio": t.warmup_ratio,
            }
        values = {k: getattr(self, k) if getattr(self, k) is not None else v for k, v in preset.items()}
        return dataclasses.replace(self, **values)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 on a CUDA device that supports it, fp32 otherwise."""
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


# --------------------------------------------------------------------------------------------------- data
@dataclass
class FinetuneData:
    """Training rows, the labelled evaluation splits, the test splits and how to score them."""

    train: TextDataset | None
    evals: dict[str, TextDataset]
    tests: dict[str, TextDataset]
    space: LabelSpace
    metrics: tuple[str, ...]
    main_metric: str
    task: GlueTask | None = None

    @property
    def main_key(self) -> str:
        """metrics.jsonl key of the metric that picks best/, e.g. `dev/accuracy`."""
        return f"{next(iter(self.evals))}/{self.main_metric}"


def _head(data: TextDataset, n: int | None) -> TextDataset:
    if n is None or n >= len(data):
        return data
    return TextDataset(
        texts=data.texts[:n],
        pairs=data.pairs[:n] if data.pairs is not None else None,
        labels=data.labels[:n] if data.labels is not None else None,
        ids=data.ids[:n],
        lines=data.lines[:n],
        source=data.source,
    )


def _custom_metrics(space: LabelSpace) -> tuple[str, ...]:
    if space.is_regression:
        return REGRESSION_METRICS
    return ("accuracy", "f1") if space.num_labels == 2 else ("accuracy", "mcc")


def load_finetune_data(config: FinetuneConfig, *, train: bool = True) -> FinetuneData:
    """Read the task's (or the custom files') training, evaluation and, with `config.predict`, test data."""
    if config.task is not None:
        task = get_task(config.task)
        train_data = read_glue(task, config.data_dir, "train") if train else None
        evals = {s: read_glue(task, config.data_dir, s) for s in task.eval_splits}
        tests = {s: read_glue(task, config.data_dir, s) for s in task.test_splits} if config.predict else {}
        space, metrics, main = task.label_space(), task.metrics, task.main_metric
    else:
        task = None
        columns = dict(
            text_column=config.text_column,
            text_pair_column=config.text_pair_column,
            label_column=config.label_column,
            fmt=config.data_format,
        )
        train_rows = read_rows(config.train_file, **columns)
        space = infer_label_space(train_rows, regression=True if config.regression else None)
        train_data = encode_rows(train_rows, space) if train else None
        evals = {"dev": encode_rows(read_rows(config.validation_file, **columns), space)}
        tests = {}
        if config.predict:
            if config.test_file is None:
                raise ValueError("--predict with custom data needs a test file")
            tests = {"test": encode_rows(read_rows(config.test_file, require_label=False, **columns), space)}
        metrics = _custom_metrics(space)
        main = metrics[0]
    if config.main_metric is not None:
        if config.main_metric not in metrics:
            raise ValueError(
                f"main metric {config.main_metric!r} is not reported here; choose one of {metrics}"
            )
        main = config.main_metric
    if train_data is not None:
        train_data = _head(train_data, config.max_train_samples)
    evals = {k: _head(v, config.max_eval_samples) for k, v in evals.items()}
    return FinetuneData(train_data, evals, tests, space, tuple(metrics), main, task)


def encode(tokenizer: Tokenizer, data: TextDataset, max_length: int) -> list[list[int]]:
    """Token ids of every row (`<s> A </s>` or `<s> A </s></s> B </s>`), truncated to `max_length`."""
    return tokenizer.encode_batch(data.texts, data.pairs, max_length=max_length)


def collate(
    tokenizer: Tokenizer, ids: Sequence[Sequence[int]], labels: Sequence[float] | Sequence[int] | None
) -> dict[str, torch.Tensor]:
    """Pad to the longest row: {"input_ids": (B, T), "attention_mask": (B, T), "labels": (B,) long or float};
    a batch whose rows have one length carries no attention_mask (no padding: flash-eligible attention)."""
    batch = drop_unneeded_mask(tokenizer.pad(ids))
    if labels is not None:
        dtype = torch.float32 if labels and isinstance(labels[0], float) else torch.long
        batch["labels"] = torch.tensor(list(labels), dtype=dtype)
    return batch


def eval_batches(
    tokenizer: Tokenizer, ids: list[list[int]], labels: Sequence[Any] | None, batch_size: int
) -> tuple[list[int], Iterator[dict[str, torch.Tensor]]]:
    """Batches of rows sorted by length (little padding); returns the row order and the batch iterator."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))

    def batches() -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            yield collate(tokenizer, [ids[i] for i in rows], [labels[i] for i in rows] if labels else None)

    return order, batches()


def predictions_from_logits(logits: torch.Tensor, space: LabelSpace) -> np.ndarray:
    """(N, C) logits -> (N,) label ids, or (N, 1) -> (N,) floats for regression."""
    return logits[:, 0].numpy() if space.is_regression else logits.argmax(dim=-1).numpy()


# ----------------------------------------------------------------------------------------------- scoring
def score_split(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    data: TextDataset,
    *,
    space: LabelSpace,
    metrics: Sequence[str],
    max_length: int,
    batch_size: int = 64,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Loss and metrics of `model` on a labelled split: {"loss": ..., "accuracy": ..., ...}."""
    if data.labels is None:
        raise DataError(f"{data.source}: has no labels to evaluate against")
    ids = encode(tokenizer, data, max_length)
    _, batches = eval_batches(tokenizer, ids, data.labels, batch_size)
    result = evaluate(model, batches, precision=precision, device=device, return_logits=True)
    preds = predictions_from_logits(result.logits, space)
    gold = result.labels.numpy()
    return {"loss": result.loss, **compute_metrics(metrics, preds, gold)}


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    data: TextDataset,
    *,
    space: LabelSpace,
    max_length: int,
    batch_size: int = 64,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Predictions for every row of `data`, in its order: (N,) label ids, or floats for regression."""
    ids = encode(tokenizer, data, max_length)
    order, batches = eval_batches(tokenizer, ids, None, batch_size)
    model.eval()
    chunks = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(precision, device):
            chunks.append(model(**batch).logits.float().cpu())
    preds = predictions_from_logits(torch.cat(chunks), space)
    out = np.empty_like(preds)
    out[np.asarray(order)] = preds
    return out


# ------------------------------------------------------------------------------------------------- model
def load_classifier(
    model_dir: str | os.PathLike, space: LabelSpace, *, dropout: float | None = None
) -> RobertaForSequenceClassification:
    """A sequence classifier for `space` on the encoder in `model_dir`.

    The classifier head is kept when the folder has one of the same shape (continued finetuning) and freshly
    initialised otherwise (a pretrained encoder, or a head trained for another label set).
    """
    folder = resolve_model_dir(model_dir)
    base = RobertaConfig.from_pretrained(folder)
    data = base.to_dict()
    for key in ("id2label", "label2id", "architectures"):
        data.pop(key, None)
    data.update(
        num_labels=space.num_labels,
        problem_type="regression" if space.is_regression else "single_label_classification",
    )
    if space.id2label is not None:
        data["id2label"] = space.id2label
    if dropout is not None:
        data.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    config = RobertaConfig.from_dict(data)
    model = RobertaForSequenceClassification(config)
    state = load_state_dict(folder)
    own = model.state_dict()
    stale = [
        k for k, v in state.items() if k.startswith("classifier.") and k in own and own[k].shape != v.shape
    ]
    if stale:
        logger.info("%s: classifier head has another label count; starting a new head", folder)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    fresh = load_weights(model, state, source=str(folder))
    if fresh:
        logger.info("new classification head with %d outputs", space.num_labels)
    return model


def load_tokenizer(model_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None) -> Tokenizer:
    folder = Path(tokenizer_dir) if tokenizer_dir is not None else resolve_model_dir(model_dir)
    try:
        return Tokenizer.from_pretrained(folder)
    except ValueError as exc:
        if tokenizer_dir is None:
            raise CheckpointError(f"{exc}; pass the tokenizer folder explicitly (--tokenizer)") from None
        raise


# --------------------------------------------------------------------------------------------------- loop
def epoch_plan(
    lengths: Sequence[int],
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    group_by_length: bool,
    min_rows: int = 1,
) -> list[list[int]]:
    """The training batches (row indices) of one epoch, a pure function of its arguments so resume is exact."""
    if group_by_length:
        return length_grouped_batches(
            lengths, batch_size=batch_size, seed=seed, epoch=epoch, min_rows=min_rows
        )
    return random_batches(len(lengths), batch_size=batch_size, seed=seed, epoch=epoch, min_rows=min_rows)


# What a run writes into OUT: an OUT holding any of them holds an earlier run.
RUN_FILES = (
    "checkpoints",
    "final",
    BEST_DIR,
    "metrics.jsonl",
    "run_config.json",
    EVAL_RESULTS_NAME,
    PREDICTIONS_DIR,
)


def _check_out_dir(out: Path, resume_run: bool, overwrite: bool) -> Path | None:
    """The checkpoint to resume from; refuses to write over an earlier run unless resuming it or told to start again
    (which happens later, once every check has passed)."""
    checkpoint = latest_checkpoint(out)
    if resume_run:
        if checkpoint is None:
            raise FileNotFoundError(f"nothing to resume: {out} has no checkpoint under checkpoints/")
        return checkpoint
    leftovers = earlier_run(out, RUN_FILES)
    if leftovers and not overwrite:
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(leftovers)}); pass --resume to continue it, --overwrite to start "
            f"again (deleting those), or choose another --out"
        )
    return None


def finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Train, evaluate each epoch (and every `eval_every` steps), keep best/ and final/; returns eval_results."""
    cfg = config.resolved()
    out = Path(cfg.out)
    info = init_distributed(cfg.device)
    try:
        return _finetune(cfg, out, info)
    finally:
        cleanup_distributed(info)


def _finetune(cfg: FinetuneConfig, out: Path, info: DistInfo) -> dict[str, Any]:
    device = info.device
    precision = resolve_precision(cfg.precision, device)
    if info.is_main:
        recover_run_folder(out, folders=("final", BEST_DIR))
    barrier(info)
    start_from = _check_out_dir(out, cfg.resume, cfg.overwrite)
    data = load_finetune_data(cfg)
    assert data.train is not None
    tokenizer = load_tokenizer(cfg.model, cfg.tokenizer)
    torch.manual_seed(cfg.seed)
    model = load_classifier(cfg.model, data.space)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(
            f"tokenizer has {tokenizer.vocab_size} ids but the model only {model.config.vocab_size} embeddings"
        )
    max_length = min(cfg.max_length, model.config.max_tokens)
    train_ids = encode(tokenizer, data.train, max_length)
    train_labels = data.train.labels

    batch_size = cfg.batch_size
    n = len(train_ids)
    lengths = [len(ids) for ids in train_ids]
    steps_per_epoch = math.ceil(n / batch_size)
    if info.distributed and n % batch_size and n % batch_size < info.world_size:
        steps_per_epoch -= 1  # a last batch too small to split over the processes is dropped
    plans: dict[int, list[list[int]]] = {}  # epoch -> its batches, made once

    def batch_rows(epoch: int, index: int) -> list[int]:
        if epoch not in plans:
            plans.clear()
            plans[epoch] = epoch_plan(
                lengths, batch_size=batch_size, seed=cfg.seed, epoch=epoch,
                group_by_length=cfg.group_by_length, min_rows=info.world_size,
            )  # fmt: skip
        return plans[epoch][index]

    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    warmup = warmup_from_ratio(total_steps, cfg.warmup_ratio)

    model = wrap_model(model.to(device), info)
    plain = unwrap_model(model)
    optimizer = build_optimizer(
        model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps
    )
    scheduler = linear_schedule(optimizer, warmup_steps=warmup, total_steps=total_steps)
    scaler = make_grad_scaler(precision, device)

    step, best = 0, {"step": None, "value": -math.inf, "metrics": None}
    if start_from is not None:
        state = resume(start_from, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        step, best = state["step"], state.get("best", best)
    if info.is_main:
        if cfg.overwrite and start_from is None:
            clear_run(out, RUN_FILES)  # every check has passed: only now is the earlier run deleted
        write_run_config(out, {**dataclasses.asdict(cfg), "precision": precision, "total_steps": total_steps})
    metrics_log = MetricsWriter(out / "metrics.jsonl", truncate_after_step=step) if info.is_main else None
    logger.info(
        "finetuning %s on %d rows: %d steps (%d per epoch), batch %d, lr %g, warmup %d, %s on %s",
        cfg.task or "custom data",
        n,
        total_steps,
        steps_per_epoch,
        batch_size,
        cfg.lr,
        warmup,
        precision,
        device,
    )

    def run_eval(epoch: float, *, log: bool = True) -> dict[str, float]:
        record: dict[str, float] = {}
        for split, split_data in data.evals.items():
            scores = score_split(
                plain, tokenizer, split_data, space=data.space, metrics=data.metrics, max_length=max_length,
                batch_size=cfg.eval_batch_size, precision=precision, device=device,
            )  # fmt: skip
            record.update({f"{split}/{k}": v for k, v in scores.items()})
        if log and metrics_log is not None:
            metrics_log.write({"step": step, "epoch": round(epoch, 4), **record})
        return record

    def checkpoint() -> None:
        save_checkpoint(
            out, step=step, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
            tokenizer=tokenizer, extra={"best": best}, keep_last=cfg.keep_last, dist_info=info,
        )  # fmt: skip

    bar = progress_bar(total_steps, initial=step, desc="finetune", enabled=cfg.progress and info.is_main)
    last_eval: dict[str, float] | None = None
    try:
        while step < total_steps:
            epoch, index = divmod(step, steps_per_epoch)
            rows = list(shard(batch_rows(epoch, index), info))
            size = cfg.micro_batch_size or len(rows)
            micro = [rows[i : i + size] for i in range(0, len(rows), size)]
            batches = [
                collate(tokenizer, [train_ids[r] for r in m], [train_labels[r] for r in m]) for m in micro
            ]
            result = train_step(
                model, batches, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                precision=precision, clip_norm=cfg.clip_norm, device=device, dist_info=info,
            )  # fmt: skip
            if not result.finite:
                last = latest_checkpoint(out)
                raise TrainingDiverged(
                    f"step {step + 1}: loss or gradients are not finite (loss {result.loss}); "
                    f"lower --lr or use fp32. Last good checkpoint: {last or 'none'}"
                )
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{result.lr:.2e}")
            if metrics_log is not None and cfg.log_every and (step % cfg.log_every == 0 or step == 1):
                metrics_log.write(
                    {"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": result.loss,
                     "lr": result.lr, "grad_norm": result.grad_norm}
                )  # fmt: skip
            end_of_epoch = step % steps_per_epoch == 0
            due = end_of_epoch or step == total_steps or (cfg.eval_every and step % cfg.eval_every == 0)
            if due:
                last_eval = run_eval(step / steps_per_epoch)
                value = last_eval[data.main_key]
                if value > best["value"]:
                    best = {"step": step, "value": value, "metrics": last_eval}
                    if info.is_main:
                        save_model(plain, out / BEST_DIR, tokenizer=tokenizer)
                    barrier(info)
                logger.info(
                    "step %d: %s (best %.4f at step %s)", step, _fmt(last_eval), best["value"], best["step"]
                )
            if due or (cfg.save_every and step % cfg.save_every == 0):
                checkpoint()
    finally:
        bar.close()
        if metrics_log is not None:
            metrics_log.close()
    final_dir = save_final(out, model, tokenizer=tokenizer, dist_info=info)
    if last_eval is None:  # resumed a run that had already finished
        last_eval = run_eval(step / steps_per_epoch, log=False)
    results = {
        "task": cfg.task or "custom",
        "main_metric": data.main_key,
        "steps": step,
        "final": {"step": step, **last_eval},
        "best": {"step": best["step"], **(best["metrics"] or {})},
        "best_dir": str(out / BEST_DIR),
        "final_dir": str(final_dir),
    }
    if cfg.predict and info.is_main:
        best_model = load_classifier(out / BEST_DIR, data.space).to(device)
        results["predictions"] = write_test_predictions(
            best_model, tokenizer, data, out / PREDICTIONS_DIR, max_length=max_length,
            batch_size=cfg.eval_batch_size, precision=precision, device=device,
        )  # fmt: skip
    if info.is_main:
        atomic_write_bytes(out / EVAL_RESULTS_NAME, (json.dumps(results, indent=2) + "\n").encode("utf-8"))
    barrier(info)
    return results


def _fmt(record: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in record.items())


def write_test_predictions(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    data: FinetuneData,
    out_dir: Path,
    *,
    max_length: int,
    batch_size: int = 64,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
) -> list[str]:
    """Predict every test split: GLUE submission files (SST-2.tsv, MNLI-m.tsv, ...) or test_predictions.tsv."""
    written = []
    for split, split_data in data.tests.items():
        preds = predict(
            model, tokenizer, split_data, space=data.space, max_length=max_length, batch_size=batch_size,
            precision=precision, device=device,
        )  # fmt: skip
        if data.task is not None:
            path = write_glue_submission(data.task, split, split_data.ids, preds.tolist(), out_dir)
        else:
            path = write_predictions(out_dir / "test_predictions.tsv", split_data, preds.tolist(), data.space)
        logger.info("wrote %d predictions to %s", len(preds), path)
        written.append(str(path))
    return written


# --------------------------------------------------------------------------------------------- evaluation
def _model_space(model: RobertaForSequenceClassification) -> LabelSpace:
    config = model.config
    if config.is_regression:
        return LabelSpace(None)
    names = config.id2label or {i: f"LABEL_{i}" for i in range(config.num_labels)}
    return LabelSpace(tuple(names[i] for i in range(config.num_labels)))


def _task_permutation(model_space: LabelSpace, task: GlueTask) -> list[int] | None:
    """Model label id -> task label id when the model names the task's labels in another order (else None)."""
    if model_space.names is None or task.label_names is None:
        return None
    lowered = [n.lower() for n in model_space.names]
    if sorted(lowered) != sorted(task.label_names) or lowered == list(task.label_names):
        return None
    return [task.label_names.index(n) for n in lowered]


def _check_label_names(folder: Path, space: LabelSpace, task: GlueTask) -> None:
    """A classifier that names its labels must name the task's (in any order); generic LABEL_i names are taken
    to be in the task's order."""
    if space.names is None or task.label_names is None:
        return
    lowered = sorted(n.lower() for n in space.names)
    generic = all(n.upper() == f"LABEL_{i}" for i, n in enumerate(space.names))
    if not generic and lowered != sorted(task.label_names):
        raise ValueError(
            f"{folder} predicts {list(space.names)}, but {task.name} labels are {list(task.label_names)}: it was "
            f"trained for another task; evaluate a model finetuned on {task.name}"
        )


def evaluate_model(
    model: str | os.PathLike,
    *,
    task: str | None = None,
    data_dir: str | os.PathLike | None = None,
    split: str = "dev",
    validation_file: str | os.PathLike | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    data_format: str | None = None,
    tokenizer: str | os.PathLike | None = None,
    max_length: int = 512,
    batch_size: int = 64,
    max_samples: int | None = None,
    precision: str = "auto",
    device: str | None = None,
) -> dict[str, float]:
    """Metrics of a finetuned model: {"dev/accuracy": ..., "dev/loss": ...} (MNLI: dev_matched/..., dev_mismatched/...)."""
    if (task is None) == (validation_file is None):
        raise ValueError("give either a GLUE task (with data_dir) or a validation file")
    for name, value, least in (
        ("batch_size", batch_size, 1),
        ("max_length", max_length, 4),
        ("max_samples", max_samples, 1),
    ):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise ValueError(f"{name} must be an integer of at least {least}, got {value!r}")
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(precision, dev)
    folder = resolve_model_dir(model)
    if not any(k.startswith("classifier.") for k in load_state_dict(folder)):
        raise CheckpointError(
            f"{folder} has no trained classification head (no classifier.* weights), so a random one would be "
            f"scored; finetune it first (`rtoolkit finetune --model {folder} ...`) and evaluate that run's best/"
        )
    net = RobertaForSequenceClassification.from_pretrained(folder).to(dev)
    tok = load_tokenizer(model, tokenizer)
    if tok.vocab_size > net.config.vocab_size:
        raise CheckpointError(
            f"the tokenizer has {tok.vocab_size} ids but {folder} only {net.config.vocab_size} embedding rows; "
            f"they do not belong together"
        )
    space = _model_space(net)
    if task is not None:
        if data_dir is None:
            raise ValueError(f"task {task} needs data_dir (the folder with its GLUE .tsv files)")
        spec = get_task(task)
        if spec.num_labels != space.num_labels or spec.is_regression != space.is_regression:
            raise ValueError(
                f"{model} predicts {space.num_labels} label(s)"
                f"{' (regression)' if space.is_regression else ''}; {spec.name} needs {spec.num_labels}"
            )
        splits = spec.eval_splits if split == "dev" else (split,)
        metrics, sets = spec.metrics, {s: read_glue(spec, data_dir, s) for s in splits}
        _check_label_names(folder, space, spec)
        permutation = _task_permutation(space, spec)
        if permutation is not None:  # score the model in its own label ids
            inverse = {t: m for m, t in enumerate(permutation)}
            for s in sets.values():
                s.labels = [inverse[y] for y in s.labels]
    else:
        rows = read_rows(
            validation_file, text_column=text_column, text_pair_column=text_pair_column,
            label_column=label_column, fmt=data_format,
        )  # fmt: skip
        sets = {"dev": encode_rows(rows, space, known_from=f"the labels of {model}")}
        metrics = _custom_metrics(space)
    results: dict[str, float] = {}
    for name, split_data in sets.items():
        split_data = _head(split_data, max_samples)
        scores = score_split(
            net, tok, split_data, space=space, metrics=metrics, max_length=min(max_length, net.config.max_tokens),
            batch_size=batch_size, precision=precision, device=dev,
        )  # fmt: skip
        results.update({f"{name}/{k}": v for k, v in scores.items()})
        results[f"{name}/examples"] = len(split_data)
    return results


__all__ = [
    "FinetuneConfig",
    "FinetuneData",
    "finetune",
    "evaluate_model",
    "load_classifier",
    "load_finetune_data",
    "load_tokenizer",
    "predict",
    "score_split",
    "write_test_predictions",
]
