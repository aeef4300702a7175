"""The training machinery shared by pretraining and finetuning: plain functions, the loop stays in the caller.

Functions
    autocast(precision, device)          context manager: fp32 (no-op) | bf16 | fp16 autocast
    make_grad_scaler(precision, device)  a GradScaler for fp16, None otherwise
    to_device(batch, device)             move a dict of tensors
    batch_count(batch)                   what a batch's loss is averaged over (labels != -100)
    batch_tokens(batch)                  real (non-padding) tokens in a batch
    train_step(model, micro_batches, ...)  one optimizer step: gradient accumulation over micro-batches (weighted
                                         by their label counts, exact under DDP), clipping (0 = off), NaN/inf
                                         detection, optimizer + scheduler step -> StepResult(loss, grad_norm, ...)
    evaluate(model, batches, ...)        count-weighted mean loss over batches (+ logits/labels on request)
    save_checkpoint(out_dir, ...)        OUT/checkpoints/step-000100/ = HF model folder + train_state.pt, atomic,
                                         keep the last K
    latest_checkpoint(out_dir)           the newest complete checkpoint folder, or None
    resume(checkpoint, ...)              restore weights, optimizer, scheduler, scaler and RNG; returns the state
    save_final(out_dir, model, ...)      OUT/final/: the finished HF model folder with its tokenizer
    rng_state() / set_rng_state(state)   python, torch CPU and CUDA generators
    MetricsWriter(path)                  append-only metrics.jsonl (one JSON object per line)
    progress_bar(total, ...)             a tqdm bar on rank 0 (loss, tokens/s, ETA)

A training script uses them like this (the whole loop is visible in rtoolkit/train/pretrain.py and finetune.py):

    info = init_distributed()                                   # rtoolkit.train.distributed
    model = wrap_model(model.to(info.device), info)
    optimizer = build_optimizer(model, lr=..., weight_decay=...)  # rtoolkit.train.optim
    scheduler = linear_schedule(optimizer, warmup_steps=..., total_steps=...)
    scaler = make_grad_scaler(precision, info.device)
    step, state = 0, {}
    if (ckpt := latest_checkpoint(out)) is not None:
        state = resume(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        step = state["step"]
    metrics = MetricsWriter(out / "metrics.jsonl", truncate_after_step=step) if info.is_main else None
    while step < max_steps:
        micro_batches = ...                                     # this rank's share of one global batch
        result = train_step(model, micro_batches, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                            precision=precision, clip_norm=clip, dist_info=info)
        step += 1
        ...  # log result.loss / result.grad_norm, evaluate(...), save_checkpoint(...)
    save_final(out, model, tokenizer=tokenizer, dist_info=info)

Checkpoint layout: OUT/checkpoints/step-000100/{config.json, model.safetensors, tokenizer files, train_state.pt},
OUT/final/ (HF model folder), OUT/metrics.jsonl, OUT/run_config.json.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import shutil
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from rtoolkit.checkpoint import (
    CheckpointError,
    atomic_directory,
    load_state_dict,
    load_train_state,
    load_weights,
    recover_directory,
    save_model,
    save_train_state,
)
from rtoolkit.model import IGNORE_INDEX
from rtoolkit.train.distributed import (
    DistInfo,
    all_reduce_max,
    all_reduce_sum,
    barrier,
    ddp_module,
    is_fsdp,
    unwrap_model,
)

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
TRAIN_STATE_NAME = "train_state.pt"
METRICS_NAME = "metrics.jsonl"
RUN_CONFIG_NAME = "run_config.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class TrainingDiverged(RuntimeError):
    """The loss or the gradients became NaN/inf; the message says where the last good checkpoint is."""


# ------------------------------------------------------------------------------------------------ precision
def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast context for `precision`: fp32 -> no-op, bf16/fp16 -> torch.autocast on `device`'s type."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def make_grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A dynamic loss scaler for fp16 (initial scale 2**16, halved on overflow); None for fp32 and bf16."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def to_device(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Move every tensor of a batch dict to `device` (non-blocking from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def batch_count(batch: dict[str, torch.Tensor]) -> int:
    """How many targets a batch's mean loss averages over: labels != -100 (masked tokens for MLM, rows for
    classification/regression and multiple choice, labelled words for token classification); a batch whose targets
    are not `labels` (question answering's start and end positions) has a loss averaged over its rows."""
    labels = batch.get("labels")
    if labels is None:
        return int(batch["input_ids"].shape[0])
    return int(labels.ne(IGNORE_INDEX).sum())


# ------------------------------------------------------------------------------------------------- stepping
@dataclass
class StepResult:
    """What one optimizer step did. `loss` is the mean over all targets of the global batch (all ranks)."""

    loss: float
    grad_norm: float  # before clipping; nan when not finite
    count: int  # targets in the global batch (masked tokens for MLM)
    finite: bool  # False: NaN/inf loss or gradients, the update was not applied
    overflow: bool = False  # fp16 loss-scale overflow: GradScaler skipped the update (normal, not an error)
    lr: float = 0.0  # learning rate the update used


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real (non-padding) tokens in a batch; a batch without `attention_mask` has no padding."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def _sync_context(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on all but the last micro-batch (DDP no_sync / FSDP2 requires_gradient_sync).

    DDP is found under an outer torch.compile wrapper too, so accumulation never all-reduces per micro-batch.
    """
    ddp = ddp_module(model)
    if ddp is not None:
        return ddp.no_sync() if not sync else contextlib.nullcontext()
    plain = unwrap_model(model)
    if hasattr(plain, "set_requires_gradient_sync"):
        plain.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def train_step(
    model: nn.Module,
    micro_batches: Sequence[dict[str, torch.Tensor]],
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    precision: str = "fp32",
    clip_norm: float = 0.0,
    device: torch.device | str | None = None,
    dist_info: DistInfo | None = None,
) -> StepResult:
    """One optimizer step over this rank's micro-batches (gradient accumulation).

    Each micro-batch is a dict passed as `model(**batch)` whose output has a `.loss` that is a mean over
    `batch_count(batch)` targets. Micro-batch losses are weighted by their counts over the global count (summed over
    ranks), so the gradient equals that of one big batch, on one process or many. Ranks may hold different numbers
    of micro-batches (doc-sentences, a batch that does not split evenly): they agree on the largest number, and a
    rank with fewer runs its last micro-batch again with weight 0, so every rank makes the same forward/backward
    passes (FSDP all-gathers in every one) and the padding passes add nothing to the gradient, loss or count.
    `clip_norm` 0 disables clipping. A NaN/inf loss or gradient leaves the weights untouched and returns
    `finite=False` (the caller decides to stop or skip); an fp16 overflow is handled by the GradScaler
    (`overflow=True`). The scheduler is stepped whenever the step counts (applied or overflowed), so the schedule
    follows the step number.
    """
    info = dist_info or DistInfo()
    device = torch.device(device) if device is not None else info.device
    if not micro_batches:
        raise ValueError("train_step needs at least one micro-batch")
    counts = [batch_count(b) for b in micro_batches]
    if info.distributed:
        total = all_reduce_sum(torch.tensor(float(sum(counts)), dtype=torch.float64, device=device), info)
        global_count = float(total.item())
    else:
        global_count = float(sum(counts))  # host arithmetic: no device sync
    passes = all_reduce_max(len(micro_batches), info)
    # DDP/FSDP average gradients over ranks; scaling by world_size turns that average back into a sum.
    denominator = max(global_count, 1.0) / info.world_size
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for i in range(passes):
        real = i < len(micro_batches)
        batch = to_device(micro_batches[i] if real else micro_batches[-1], device)
        count = counts[i] if real else 0
        with _sync_context(model, sync=i == passes - 1):
            with autocast(precision, device):
                out = model(**batch)
            loss = out.loss.float() * (count / denominator)
            (scaler.scale(loss) if scaler is not None else loss).backward()
        if real:
            loss_sum += out.loss.detach().double() * count
    loss_sum = all_reduce_sum(loss_sum, info)
    mean_loss = float(loss_sum.item()) / max(global_count, 1.0)
    lr = optimizer.param_groups[0]["lr"]
    if not math.isfinite(mean_loss):
        optimizer.zero_grad(set_to_none=True)
        return StepResult(
            loss=mean_loss, grad_norm=float("nan"), count=int(global_count), finite=False, lr=lr
        )
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = clip_norm if clip_norm > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, error_if_nonfinite=False)
    if hasattr(norm, "full_tensor"):  # FSDP2 DTensor
        norm = norm.full_tensor()
    grad_norm = float(norm.item())
    if scaler is not None:
        scale_before = scaler.get_scale()
        scaler.step(optimizer)  # skipped internally on inf/nan gradients
        scaler.update()
        overflow = scaler.get_scale() < scale_before
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        return StepResult(mean_loss, grad_norm, int(global_count), finite=True, overflow=overflow, lr=lr)
    if not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return StepResult(mean_loss, grad_norm, int(global_count), finite=False, lr=lr)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return StepResult(mean_loss, grad_norm, int(global_count), finite=True, lr=lr)


# ----------------------------------------------------------------------------------------------- evaluation
@dataclass
class EvalResult:
    """Count-weighted mean loss over an evaluation set (all ranks)."""

    loss: float
    count: int
    logits: torch.Tensor | None = None  # (N, ...) on CPU, this rank's rows, with return_logits=True
    labels: torch.Tensor | None = None  # (N, ...) matching `logits`

    @property
    def perplexity(self) -> float:
        """exp(loss) (natural log), capped to avoid overflow."""
        return math.exp(min(self.loss, 50.0))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    precision: str = "fp32",
    device: torch.device | str | None = None,
    dist_info: DistInfo | None = None,
    return_logits: bool = False,
) -> EvalResult:
    """Mean loss of `model(**batch).loss` over `batches`, weighted by `batch_count`, in eval mode
    (no dropout); the model's train/eval mode is restored afterwards.

    With `return_logits`, the logits and labels of every batch are concatenated (on CPU) for metrics such as
    accuracy; for MLM batches the logits are (N_masked, V).
    """
    info = dist_info or DistInfo()
    device = torch.device(device) if device is not None else info.device
    passes: int | None = None
    if info.distributed:  # every rank must run as many forward passes (FSDP all-gathers in each)
        batches = list(batches)
        passes = all_reduce_max(len(batches), info)
        if passes and not batches:
            raise ValueError(
                f"rank {info.rank} has no evaluation batch while another rank has {passes}; give every rank at "
                f"least one"
            )
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    all_logits, all_labels = [], []
    for batch in batches:
        batch = to_device(batch, device)
        n = batch_count(batch)
        with autocast(precision, device):
            out = model(**batch)
        loss_sum += out.loss.detach().double() * n
        count += n
        if return_logits:
            all_logits.append(out.logits.float().cpu())
            labels = batch["labels"]
            all_labels.append((labels[labels.ne(IGNORE_INDEX)] if labels.dim() > 1 else labels).cpu())
    if passes is not None:
        for _ in range(passes - len(batches)):  # padding passes: outputs discarded
            with autocast(precision, device):
                model(**to_device(batches[-1], device))
    all_reduce_sum(loss_sum, info)
    all_reduce_sum(count, info)
    if was_training:
        model.train()
    n_total = int(count.item())
    return EvalResult(
        loss=float(loss_sum.item()) / max(n_total, 1),
        count=n_total,
        logits=torch.cat(all_logits) if all_logits else None,
        labels=torch.cat(all_labels) if all_labels else None,
    )


# ------------------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """The global generators a training step consumes (dropout): python, torch CPU and every CUDA device."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------ checkpoints
def checkpoint_dir(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS_DIR / f"step-{step:06d}"


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders (with a train_state.pt) under OUT/checkpoints, oldest first."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / TRAIN_STATE_NAME).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under OUT/checkpoints (temp folders of an interrupted save are ignored)."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def _full_model_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """FSDP2: gather the full state dict (a collective: every rank must call it); None otherwise."""
    if not is_fsdp(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    if not is_fsdp(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def _plain_copy(model: nn.Module, state: dict[str, torch.Tensor] | None) -> nn.Module:
    """The model to write: the unwrapped module, or for FSDP a CPU copy holding the gathered full weights."""
    plain = unwrap_model(model)
    if state is None:
        return plain
    copy = type(plain)(plain.config)
    load_weights(copy, state, source="gathered FSDP state", strict=True)
    return copy


def save_checkpoint(
    out_dir: str | os.PathLike,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    tokenizer=None,
    extra: dict[str, Any] | None = None,
    keep_last: int | None = 3,
    dist_info: DistInfo | None = None,
) -> Path:
    """Write OUT/checkpoints/step-{step:06d}/ atomically: an HF model folder plus train_state.pt.

    train_state.pt holds {"step", "optimizer", "scheduler", "scaler", "rng", **extra} (`extra` carries e.g. the data
    position). The folder appears in one rename, so a crash mid-save leaves the previous checkpoints intact. Only
    rank 0 writes; all ranks must call (FSDP gathers the weights collectively). Older checkpoints beyond
    `keep_last` are deleted (None keeps all).
    """
    info = dist_info or DistInfo()
    target = checkpoint_dir(out_dir, step)
    full_state = _full_model_state(model)
    optim_state = _optimizer_state(model, optimizer)
    if info.is_main:
        state = {
            "step": step,
            "optimizer": optim_state,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_state(),
            **(extra or {}),
        }
        with atomic_directory(target) as tmp:
            save_model(_plain_copy(model, full_state), tmp, tokenizer=tokenizer)
            save_train_state(tmp / TRAIN_STATE_NAME, state)
        if keep_last is not None:
            for old in list_checkpoints(out_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        logger.info("saved checkpoint %s", target)
    barrier(info)
    return target


def resume(
    checkpoint: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler, scaler and RNG from a checkpoint folder; returns its train state.

    The returned dict has "step" and whatever `extra` was saved (e.g. the data position).
    """
    folder = Path(checkpoint)
    state = load_train_state(folder / TRAIN_STATE_NAME)
    weights = load_state_dict(folder)
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        plain = _plain_copy(model, None)
        load_weights(type(plain)(plain.config), weights, source=str(folder), strict=True)  # validate keys
        options = StateDictOptions(full_state_dict=True)
        full = {k: v for k, v in weights.items()}
        if "lm_head.decoder.weight" in dict(model.named_parameters(remove_duplicate=False)):
            full.setdefault("lm_head.decoder.weight", weights["roberta.embeddings.word_embeddings.weight"])
            full.setdefault("lm_head.decoder.bias", weights["lm_head.bias"])
        set_state_dict(
            model,
            optimizer if optimizer is not None else [],
            model_state_dict=full,
            optim_state_dict=state["optimizer"] if optimizer is not None else {},
            options=options,
        )
    else:
        load_weights(unwrap_model(model), weights, source=str(folder), strict=True)
        if optimizer is not None:
            try:
                optimizer.load_state_dict(state["optimizer"])
            except (ValueError, KeyError) as exc:
                raise CheckpointError(
                    f"{folder / TRAIN_STATE_NAME}: optimizer state does not fit this model ({exc})"
                ) from None
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if restore_rng and "rng" in state:
        set_rng_state(state["rng"])
    logger.info("resumed from %s (step %d)", folder, state["step"])
    return state


def save_final(
    out_dir: str | os.PathLike, model: nn.Module, *, tokenizer=None, dist_info: DistInfo | None = None
) -> Path:
    """Write OUT/final/: the finished model as an HF folder with its tokenizer (rank 0; all ranks call)."""
    info = dist_info or DistInfo()
    target = Path(out_dir) / FINAL_DIR
    full_state = _full_model_state(model)
    if info.is_main:
        save_model(_plain_copy(model, full_state), target, tokenizer=tokenizer)
    barrier(info)
    return target


def recover_run_folder(out_dir: str | os.PathLike, *, folders: Sequence[str] = (FINAL_DIR,)) -> None:
    """Repair what an interrupted save left in a run folder: `folders` (final/, ...) and every checkpoint whose
    write or replacement was cut short (half-written temporary folders are deleted, a replaced one restored)."""
    out = Path(out_dir)
    for name in folders:
        recover_directory(out / name)
    root = out / CHECKPOINTS_DIR
    if root.is_dir():
        for leftover in root.glob(".step-*"):
            match = re.match(r"^\.(step-\d+)\.(tmp|old)-", leftover.name)
            if match:
                recover_directory(root / match.group(1))


def earlier_run(out_dir: str | os.PathLike, names: Sequence[str]) -> list[str]:
    """Which of `names` (checkpoints, final, metrics.jsonl, ...) an earlier run left in `out_dir`."""
    out = Path(out_dir)
    return [name for name in names if (out / name).exists()]


def claim_run_folder(
    out_dir: str | os.PathLike, names: Sequence[str], *, resume: bool, overwrite: bool
) -> Path | None:
    """The checkpoint a run continues from, by the rules both recipes follow. An OUT holding an earlier run (any of
    `names`) is continued with `resume` (from its latest checkpoint; with none saved yet, from step 0), started again
    with `overwrite` (the caller deletes the earlier run with `clear_run` once every other check has passed) or
    refused; `resume` in an OUT that holds no run at all is an error."""
    out = Path(out_dir)
    earlier = earlier_run(out, names)
    checkpoint = latest_checkpoint(out)
    if resume:
        if checkpoint is None and not earlier:
            raise FileNotFoundError(
                f"nothing to resume: {out} holds no run (no checkpoint under checkpoints/)"
            )
        if checkpoint is None:
            logger.warning(
                "resume: %s holds no checkpoint yet (%s), starting from step 0", out, ", ".join(earlier)
            )
        return checkpoint
    if earlier and not overwrite:
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(earlier)}); pass --resume to continue it, --overwrite to start "
            f"again (deleting those), or choose another --out"
        )
    return None


def clear_run(out_dir: str | os.PathLike, names: Sequence[str]) -> None:
    """--overwrite: delete what an earlier run left under these names (only them: other files stay)."""
    out = Path(out_dir)
    for name in names:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def write_run_config(out_dir: str | os.PathLike, config: dict[str, Any]) -> Path:
    """OUT/run_config.json: every setting of the run, for the record and for --resume checks."""
    path = Path(out_dir) / RUN_CONFIG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------- metrics, bar
class MetricsWriter:
    """Append-only metrics.jsonl: one JSON object per line, flushed at once so a crash loses nothing.

    `truncate_after_step` drops lines of a previous run beyond the step a resumed run restarts from.
    """

    def __init__(self, path: str | os.PathLike, *, truncate_after_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after_step is not None and self.path.is_file():
            kept = [
                line
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= truncate_after_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, in order; a bad line raises ValueError naming the file and line."""
    path = Path(path)
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not a JSON object ({exc.msg})") from None
    return records


def progress_bar(total: int, *, initial: int = 0, desc: str = "train", enabled: bool = True) -> Iterator:
    """A tqdm bar over optimizer steps (ETA included); silent when `enabled` is False (other ranks, tests)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        dynamic_ncols=True,
        disable=not enabled,
        leave=True,
    )


__all__ = [
    "EvalResult",
    "MetricsWriter",
    "StepResult",
    "TrainingDiverged",
    "autocast",
    "batch_count",
    "batch_tokens",
    "clear_run",
    "earlier_run",
    "recover_run_folder",
    "evaluate",
    "latest_checkpoint",
    "list_checkpoints",
    "make_grad_scaler",
    "progress_bar",
    "read_metrics",
    "resume",
    "rng_state",
    "save_checkpoint",
    "save_final",
    "set_rng_state",
    "to_device",
    "train_step",
    "write_run_config",
]
