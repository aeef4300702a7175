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
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

import torch

from rtoolkit import tasks
from rtoolkit.checkpoint import CheckpointError, atomic_write_bytes, save_model
from rtoolkit.data.batching import collate_classification, epoch_plan, sorted_batches
from rtoolkit.data.glue import DataFormat
from rtoolkit.tasks import FamilyName
from rtoolkit.tasks.common import Features, TaskData
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
from rtoolkit.train.evaluation import (
    evaluate_model,
    load_classifier,
    load_tokenizer,
    predict,
    predictions_from_logits,
    resolve_precision,
    score_examples,
    score_split,
    write_test_predictions,
)
from rtoolkit.train.loop import (
    RUN_CONFIG_NAME,
    MetricsWriter,
    Precision,
    TrainingDiverged,
    claim_run_folder,
    clear_run,
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
from rtoolkit.train.optim import build_optimizer, linear_schedule, warmup_from_ratio
from rtoolkit.train.runconfig import (
    ConfigError,
    check_choices,
    check_minimum,
    check_resume_or_overwrite,
    check_resume_settings,
    seed_dropout,
    seed_init,
    to_dict,
)

logger = logging.getLogger(__name__)

BEST_DIR = "best"
EVAL_RESULTS_NAME = "eval_results.json"
PREDICTIONS_DIR = "predictions"
# Custom data: the small-task settings of the fairseq recipe (RTE, STS-B).
# The settings a named task's preset (or, for custom data, the family's CUSTOM preset) fills when left unset.
PRESET_FIELDS = ("lr", "batch_size", "epochs", "warmup_ratio", "weight_decay", "classifier_dropout")


# ------------------------------------------------------------------------------------------------- config
@dataclass
class FinetuneConfig:
    """Every setting of a finetuning run (conventions: rtoolkit.train.runconfig). None for lr, batch_size, epochs,
    warmup_ratio and classifier_dropout means the task's fairseq preset, filled in by `resolved`."""

    model: Path
    """Model folder: from `rtoolkit pretrain`, a Hugging Face RoBERTa folder (roberta-base), or a finetuned model."""
    out: Path
    """Run folder: checkpoints/step-N/, best/, final/, metrics.jsonl, eval_results.json."""
    task: str | None = None
    """Named task: a GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli), squad, race or conll2003.
    Default: none (custom data of the kind `family` says)."""
    family: FamilyName = "classification"
    """Custom data: what the head learns (classification: CSV/TSV/JSONL rows; question-answering: SQuAD JSON;
    multiple-choice: RACE JSON lines; token-classification: CoNLL columns). A named task sets it."""
    data_dir: Path | None = None
    """Folder with the named task's files (GLUE .tsv files, or the GLUE root holding e.g. SST-2/; squad1/, race/,
    conll2003/)."""
    train_file: Path | None = None
    """Custom training data (.csv, .tsv or .jsonl)."""
    validation_file: Path | None = None
    """Custom validation data, with the training data's columns."""
    test_file: Path | None = None
    """Custom data labelled after training when predict is on (the label column may be absent)."""
    text_column: str = "text"
    """Custom data: column of the text."""
    text_pair_column: str | None = None
    """Custom data: column of the second text of a pair. Default: none (single texts)."""
    label_column: str = "label"
    """Custom data: column of the label (strings, integers, or floats for regression)."""
    regression: bool = False
    """Custom data: regress on the labels, even when they are integers."""
    data_format: DataFormat | None = None
    """Custom data format. Default: from the file suffix."""
    tokenizer: Path | None = None
    """Tokenizer folder. Default: the model folder's own tokenizer."""
    lr: float | None = None
    """Peak learning rate. Default: the task preset (1e-5; 2e-5 for RTE, STS-B and custom data)."""
    batch_size: int | None = None
    """Sentences per optimizer step, over all processes. Default: the task preset (16 or 32)."""
    epochs: int | None = None
    """Passes over the training data. Default: the task preset, 10."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (they set the schedule's length instead of epochs)."""
    warmup_ratio: float | None = None
    """Share of the steps spent in linear warmup. Default: the task preset, 0.06."""
    weight_decay: float | None = None
    """Decoupled weight decay. Default: the task preset (0.1; SQuAD: 0.01)."""
    decay_all: bool = False
    """Apply weight decay to biases and LayerNorm weights too, as fairseq does (default: they are exempt)."""
    fairseq_warmup: bool = False
    """Warm up as fairseq does: update k (from 1) at max(k - 1, 1) / warmup of the peak instead of k / warmup."""
    adam_betas: tuple[float, float] = (0.9, 0.98)
    """Adam beta1, beta2."""
    adam_eps: float = 1e-6
    """Adam epsilon."""
    clip_norm: float = 0.0
    """Gradient-norm clipping (0: off, as in fairseq's GLUE recipe)."""
    classifier_dropout: float | None = None
    """Dropout in the classification head. Default: the task preset, 0.0 (fairseq's pooler_dropout)."""
    max_length: int = 512
    """Longest input in tokens, <s> and </s> included (also capped by the model's position table)."""
    stride: int | None = None
    """Question answering: tokens shared by consecutive windows over a context longer than max_length. Default:
    128, at most a quarter of max_length."""
    micro_batch_size: int | None = None
    """Sentences per forward/backward on each process; gradients accumulate to batch_size. Default: no split."""
    group_by_length: bool = True
    """Batch rows of similar length together (fairseq's order: little or no padding, several times fewer tokens
    per step on short sentences); off: random batches, each padded to its longest row."""
    eval_batch_size: int = 64
    """Sentences per evaluation batch."""
    eval_every: int = 0
    """Also evaluate every N steps (0: only at the end of each epoch)."""
    save_every: int = 0
    """Also write a resumable checkpoint every N steps (0: at each evaluation)."""
    keep_last: int = 1
    """Resumable checkpoints kept under OUT/checkpoints (best/ and final/ are kept apart)."""
    log_every: int = 10
    """Steps per training-loss record in metrics.jsonl."""
    seed: int = 1
    """Seed of the classifier initialisation and the data order (dropout: seed + rank)."""
    precision: Literal["auto", Precision] = "auto"
    """fp32, bf16, fp16, or auto (bf16 on a GPU that supports it, else fp32)."""
    device: str | None = None
    """cpu | cuda | cuda:N; under torchrun 'cuda' is cuda:LOCAL_RANK. Default: cuda when available."""
    max_train_samples: int | None = None
    """Train on the first N rows only (quick runs)."""
    max_eval_samples: int | None = None
    """Evaluate on the first N rows of each evaluation split only."""
    main_metric: str | None = None
    """The metric that picks best/. Default: the task's; accuracy or pearson for custom data."""
    predict: bool = False
    """After training, write test-set predictions from best/ (GLUE submission format for GLUE tasks)."""
    resume: bool = False
    """Continue the run in OUT from its latest checkpoint."""
    overwrite: bool = False
    """Start again in an OUT that holds an earlier run (its checkpoints, best/, final/ and metrics are deleted
    first)."""
    progress: bool = True
    """Show a progress bar (first process only)."""

    # Settings that must not change when a run is resumed (the step would no longer mean the same data).
    RESUME_INVARIANTS: ClassVar[tuple[str, ...]] = (
        "task", "data_dir", "train_file", "max_train_samples", "batch_size", "group_by_length", "seed",
    )  # fmt: skip

    def __post_init__(self) -> None:
        for name in ("model", "out", "data_dir", "train_file", "validation_file", "test_file", "tokenizer"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for missing data or a setting out of range (before anything is read or written)."""
        if self.task is None and self.train_file is None:
            raise ConfigError(
                "give a GLUE task (task + data_dir) or custom data (train_file + validation_file)"
            )
        if self.task is not None and (self.train_file or self.validation_file):
            raise ConfigError("give either a GLUE task or custom train/validation files, not both")
        if self.task is not None:
            self.family = tasks.task_family(self.task).NAME  # unknown names fail here
            if self.data_dir is None:
                raise ConfigError(f"task {self.task} needs data_dir (the folder with its data files)")
        if self.train_file is not None and self.validation_file is None:
            raise ConfigError("custom data needs a validation file too", fields=("validation_file",))
        check_choices(self)
        check_resume_or_overwrite(self)
        names = ("batch_size", "epochs", "max_steps", "micro_batch_size", "eval_batch_size", "max_length")
        check_minimum(self, (*names, "keep_last", "stride"), 1)
        check_minimum(self, ("eval_every", "save_every", "log_every"), 0)
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}", fields=("lr",))
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(
                f"warmup_ratio must be in [0, 1], got {self.warmup_ratio}", fields=("warmup_ratio",)
            )
        if self.classifier_dropout is not None and not 0 <= self.classifier_dropout < 1:
            raise ConfigError(
                f"classifier_dropout must be in [0, 1), got {self.classifier_dropout}",
                fields=("classifier_dropout",),
            )

    def resolved(self) -> FinetuneConfig:
        """A copy with the settings of PRESET_FIELDS left unset filled from the task's preset (custom data: the
        family's CUSTOM preset)."""
        fam = tasks.family(self.family)
        preset = fam.PRESETS[self.task] if self.task is not None else fam.CUSTOM
        values = {k: getattr(preset, k) for k in PRESET_FIELDS if getattr(self, k) is None}
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


# --------------------------------------------------------------------------------------------------- data
def load_finetune_data(config: FinetuneConfig, *, train: bool = True) -> TaskData:
    """The task's (or the custom files') training, evaluation and, with `config.predict`, test examples."""
    return tasks.family(config.family).load_data(config, train=train)


collate = collate_classification  # the older names
eval_batches = sorted_batches


# --------------------------------------------------------------------------------------------------- the run
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


@dataclass
class FinetuneRun:
    """What `setup` builds and `fit` trains; `step` and `best` are the progress a checkpoint saves."""

    cfg: FinetuneConfig
    info: DistInfo
    out: Path
    precision: str
    data: TaskData
    tokenizer: Tokenizer
    max_length: int
    family: ModuleType
    features: Features
    steps_per_epoch: int
    total_steps: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    step: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"step": None, "value": -math.inf, "metrics": None})
    metrics: MetricsWriter | None = None
    plans: dict[int, list[list[int]]] = field(default_factory=dict)  # epoch -> its batches, made once

    @property
    def plain(self) -> torch.nn.Module:
        return unwrap_model(self.model)


def finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Train, evaluate each epoch (and every `eval_every` steps), keep best/ and final/; returns eval_results."""
    cfg = config.resolved()
    info = init_distributed(cfg.device)
    try:
        return fit(setup(cfg, info))
    finally:
        cleanup_distributed(info)


def setup(cfg: FinetuneConfig, info: DistInfo) -> FinetuneRun:
    """Check OUT, read and encode the data, build the classifier, optimizer and schedule, restore a checkpoint."""
    out, device = cfg.out, info.device
    precision = resolve_precision(cfg.precision, device)
    if info.is_main:
        recover_run_folder(out, folders=("final", BEST_DIR))
    barrier(info)
    start_from = claim_run_folder(out, RUN_FILES, resume=cfg.resume, overwrite=cfg.overwrite)
    if cfg.resume:
        check_resume_settings(out / RUN_CONFIG_NAME, cfg.to_dict(), cfg.RESUME_INVARIANTS)
    fam = tasks.family(cfg.family)
    data = fam.load_data(cfg)
    assert data.train is not None
    tokenizer = load_tokenizer(cfg.model, cfg.tokenizer)
    seed_init(cfg.seed)
    model = fam.build_model(cfg.model, data.labels, classifier_dropout=cfg.classifier_dropout)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(
            f"tokenizer has {tokenizer.vocab_size} ids but the model only {model.config.vocab_size} embeddings"
        )
    max_length = min(cfg.max_length, model.config.max_tokens)
    features = fam.encode(tokenizer, data.train, max_length=max_length, stride=cfg.stride)
    n = len(features)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    if info.distributed and n % cfg.batch_size and n % cfg.batch_size < info.world_size:
        steps_per_epoch -= 1  # a last batch too small to split over the processes is dropped
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    warmup = warmup_from_ratio(total_steps, cfg.warmup_ratio)
    model = wrap_model(model.to(device), info)
    seed_dropout(cfg.seed, info.rank)
    optimizer = build_optimizer(
        model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
        decay_all=cfg.decay_all,
    )  # fmt: skip
    scheduler = linear_schedule(
        optimizer, warmup_steps=warmup, total_steps=total_steps, fairseq_warmup=cfg.fairseq_warmup
    )
    run = FinetuneRun(
        cfg, info, out, precision, data, tokenizer, max_length, fam, features, steps_per_epoch, total_steps, model,
        optimizer, scheduler, make_grad_scaler(precision, device),
    )  # fmt: skip
    if start_from is not None:
        state = resume(start_from, model=model, optimizer=optimizer, scheduler=scheduler, scaler=run.scaler)
        run.step, run.best = state["step"], state.get("best", run.best)
    if info.is_main:
        if cfg.overwrite and start_from is None:
            clear_run(out, RUN_FILES)  # every check has passed: only now is the earlier run deleted
        write_run_config(out, {**cfg.to_dict(), "precision": precision, "total_steps": total_steps})
        run.metrics = MetricsWriter(out / "metrics.jsonl", truncate_after_step=run.step)
    logger.info(
        "finetuning %s on %d rows: %d steps (%d per epoch), batch %d, lr %g, warmup %d, %s on %s",
        cfg.task or "custom data", n, total_steps, steps_per_epoch, cfg.batch_size, cfg.lr, warmup, precision,
        device,
    )  # fmt: skip
    return run


def batch_rows(run: FinetuneRun, epoch: int, index: int) -> list[int]:
    """The rows (all processes) of step `index` of `epoch`."""
    if epoch not in run.plans:
        run.plans.clear()
        run.plans[epoch] = epoch_plan(
            run.features.lengths, batch_size=run.cfg.batch_size, seed=run.cfg.seed, epoch=epoch,
            group_by_length=run.cfg.group_by_length, min_rows=run.info.world_size,
        )  # fmt: skip
    return run.plans[epoch][index]


def run_evaluation(run: FinetuneRun, *, log: bool = True) -> dict[str, float]:
    """Loss and metrics on every evaluation split at the current step (into metrics.jsonl with `log`)."""
    record: dict[str, float] = {}
    for split, examples in run.data.evals.items():
        scores = score_examples(
            run.plain, run.family, run.tokenizer, examples, run.data, max_length=run.max_length,
            stride=run.cfg.stride, batch_size=run.cfg.eval_batch_size, precision=run.precision,
            device=run.info.device,
        )  # fmt: skip
        record.update({f"{split}/{k}": v for k, v in scores.items()})
    if log and run.metrics is not None:
        run.metrics.write({"step": run.step, "epoch": round(run.step / run.steps_per_epoch, 4), **record})
    return record


def save(run: FinetuneRun) -> None:
    """A resumable checkpoint at the current step (with the best so far)."""
    save_checkpoint(
        run.out, step=run.step, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, scaler=run.scaler,
        tokenizer=run.tokenizer, extra={"best": run.best}, keep_last=run.cfg.keep_last, dist_info=run.info,
    )  # fmt: skip


def _keep_if_best(run: FinetuneRun, record: dict[str, float]) -> None:
    value = record[run.data.main_key]
    if value > run.best["value"]:
        run.best = {"step": run.step, "value": value, "metrics": record}
        if run.info.is_main:
            save_model(run.plain, run.out / BEST_DIR, tokenizer=run.tokenizer)
        barrier(run.info)
    logger.info(
        "step %d: %s (best %.4f at step %s)", run.step, _fmt(record), run.best["value"], run.best["step"]
    )


def fit(run: FinetuneRun) -> dict[str, Any]:
    """The training loop, top to bottom: step, log, evaluate (keeping best/), save; then final/ and the results."""
    cfg, info = run.cfg, run.info
    bar = progress_bar(
        run.total_steps, initial=run.step, desc="finetune", enabled=cfg.progress and info.is_main
    )
    last_eval: dict[str, float] | None = None
    try:
        while run.step < run.total_steps:
            rows = list(shard(batch_rows(run, *divmod(run.step, run.steps_per_epoch)), info))
            size = cfg.micro_batch_size or len(rows)
            batches = [
                run.family.collate(run.tokenizer, run.features, part)
                for part in (rows[i : i + size] for i in range(0, len(rows), size))
            ]
            result = train_step(
                run.model, batches, optimizer=run.optimizer, scheduler=run.scheduler, scaler=run.scaler,
                precision=run.precision, clip_norm=cfg.clip_norm, device=info.device, dist_info=info,
            )  # fmt: skip
            if not result.finite:
                raise TrainingDiverged(
                    f"step {run.step + 1}: loss or gradients are not finite (loss {result.loss}); lower --lr or use "
                    f"fp32. Last good checkpoint: {latest_checkpoint(run.out) or 'none'}"
                )
            run.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{result.lr:.2e}")
            if run.metrics is not None and cfg.log_every and (run.step % cfg.log_every == 0 or run.step == 1):
                run.metrics.write(
                    {"step": run.step, "epoch": round(run.step / run.steps_per_epoch, 4), "loss": result.loss,
                     "lr": result.lr, "grad_norm": result.grad_norm}
                )  # fmt: skip
            due = (
                run.step % run.steps_per_epoch == 0
                or run.step == run.total_steps
                or (cfg.eval_every and run.step % cfg.eval_every == 0)
            )
            if due:
                last_eval = run_evaluation(run)
                _keep_if_best(run, last_eval)
            if due or (cfg.save_every and run.step % cfg.save_every == 0):
                save(run)
    finally:
        bar.close()
        if run.metrics is not None:
            run.metrics.close()
    final_dir = save_final(run.out, run.model, tokenizer=run.tokenizer, dist_info=info)
    if last_eval is None:  # resumed a run that had already finished
        last_eval = run_evaluation(run, log=False)
    return _results(run, last_eval, final_dir)


def _results(run: FinetuneRun, last_eval: dict[str, float], final_dir: Path) -> dict[str, Any]:
    """eval_results.json (written by rank 0), with --predict's files."""
    cfg, info = run.cfg, run.info
    results = {
        "task": cfg.task or "custom",
        "main_metric": run.data.main_key,
        "steps": run.step,
        "final": {"step": run.step, **last_eval},
        "best": {"step": run.best["step"], **(run.best["metrics"] or {})},
        "best_dir": str(run.out / BEST_DIR),
        "final_dir": str(final_dir),
    }
    if cfg.predict and info.is_main:
        best_model = run.family.HEAD.from_pretrained(run.out / BEST_DIR).to(info.device)
        results["predictions"] = write_test_predictions(
            best_model, run.tokenizer, run.data, run.out / PREDICTIONS_DIR, max_length=run.max_length,
            stride=cfg.stride, batch_size=cfg.eval_batch_size, precision=run.precision, device=info.device,
            fam=run.family,
        )  # fmt: skip
    if info.is_main:
        atomic_write_bytes(
            run.out / EVAL_RESULTS_NAME, (json.dumps(results, indent=2) + "\n").encode("utf-8")
        )
    barrier(info)
    return results


def _fmt(record: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in record.items())


__all__ = [
    "FinetuneConfig",
    "FinetuneRun",
    "evaluate_model",
    "finetune",
    "fit",
    "load_classifier",
    "load_finetune_data",
    "load_tokenizer",
    "predict",
    "predictions_from_logits",
    "score_split",
    "setup",
    "write_test_predictions",
]
