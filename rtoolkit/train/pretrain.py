"""Masked-LM pretraining with the RoBERTa recipe: the loop, visible top to bottom in `pretrain`.

    cfg = PretrainConfig(out="runs/r1", data="data/books", model_config="base")
    final_dir = pretrain(cfg)          # OUT/final: an HF model folder with its tokenizer

Data: a folder made by `rtoolkit preprocess` (rtoolkit.data.corpus), packed into FULL-SENTENCES or DOC-SENTENCES
blocks, masked dynamically per (seed, epoch, block) or statically per (seed, copy, block) (rtoolkit.data.masking).
Optimisation: AdamW (0.9, 0.98), eps 1e-6, weight decay 0.01, linear warmup then linear decay to 0, gradient
accumulation from --batch-size / --micro-batch-size, optional clipping, fp32/bf16/fp16 (rtoolkit.train.optim, .loop).
With no data, `prepare_sample` trains a tokenizer on the bundled sample corpus and preprocesses it first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtoolkit.config import ConfigError, RobertaConfig
from rtoolkit.data.corpus import (
    FORMATS,
    TOKENIZER_DIR,
    BlockDataset,
    CorpusError,
    Item,
    TokenSplit,
    epoch_batches,
    iter_documents,
    load_meta,
    preprocess,
)
from rtoolkit.data.masking import MaskingConfig, collate_masked, sequence_seed
from rtoolkit.model import RobertaForMaskedLM
from rtoolkit.tokenizer import Tokenizer
from rtoolkit.train import distributed as dist_utils
from rtoolkit.train.distributed import DistInfo
from rtoolkit.train.loop import (
    METRICS_NAME,
    RUN_CONFIG_NAME,
    MetricsWriter,
    TrainingDiverged,
    batch_tokens,
    clear_run,
    earlier_run,
    evaluate,
    latest_checkpoint,
    make_grad_scaler,
    progress_bar,
    read_metrics,
    recover_run_folder,
    resume,
    rng_state,
    save_checkpoint,
    save_final,
    set_rng_state,
    train_step,
    write_run_config,
)
from rtoolkit.train.optim import build_optimizer, linear_schedule

logger = logging.getLogger(__name__)

EVAL_EPOCH = -1  # mask key of the fixed evaluation masks
# What a run writes into OUT: an OUT holding any of them holds an earlier run.
RUN_FILES = ("checkpoints", "final", METRICS_NAME, RUN_CONFIG_NAME)
# Settings that must not change when a run is resumed (the data position would no longer mean anything).
_ZERO_MEANS = {
    "eval_every": "only at the start and the end",
    "save_every": "only at the end",
    "eval_max_blocks": "no held-out evaluation",
}
_RESUME_INVARIANTS = ("data", "seq_len", "batch_size", "format", "masking", "static_copies", "seed")


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run. None means "the default for this run" (see `resolved`)."""

    out: Path  # run folder: checkpoints/, final/, metrics.jsonl, run_config.json
    data: Path | None = (
        None  # preprocessed folder; None: the bundled sample corpus (prepared under OUT/sample)
    )
    eval_data: tuple[
        Path, ...
    ] = ()  # more preprocessed folders whose valid split is evaluated (e.g. WikiText)
    model_config: str | None = (
        None  # tiny | base | large | a config.json; default tiny on the sample, else base
    )
    init_from: Path | None = (
        None  # continue pretraining this model folder (its tokenizer must match the data's)
    )
    format: str = "full-sentences"  # full-sentences | doc-sentences (paper §4.2)
    masking: str = (
        "dynamic"  # dynamic (RoBERTa) | static (BERT: masks fixed, data duplicated static_copies times)
    )
    static_copies: int = 10  # copies of the data for static masking
    mask_prob: float = 0.15  # share of tokens chosen for prediction
    random_token_prob: float = 0.1  # share of chosen tokens replaced by a random token
    leave_unmasked_prob: float = 0.1  # share of chosen tokens left unchanged
    whole_word_mask: bool = False  # choose whole words instead of single tokens
    seq_len: int | None = None  # tokens per block incl. <s> and </s>; default min(512, model max)
    batch_size: int | None = None  # sequences per optimizer step (all processes); paper: 8192
    micro_batch_size: int | None = None  # sequences per forward/backward; accumulation is derived
    max_steps: int | None = None  # optimizer steps; paper: 500k
    lr: float | None = None  # peak learning rate; paper (base): 6e-4
    warmup_steps: int | None = None  # linear warmup; paper: 24k of 500k (4.8%), scaled with max_steps
    weight_decay: float = 0.01  # decoupled, not on biases and LayerNorm
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-6
    clip_norm: float = 0.0  # gradient clipping max norm; 0 = off (paper)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 adds a GradScaler)
    compile: bool = False  # torch.compile the model
    fsdp: bool = False  # shard the model with FSDP2 under torchrun
    device: str | None = None  # None/auto: cuda when available, else cpu
    seed: int = 0  # model init, data order and masks
    eval_every: int | None = None  # steps between evaluations (0: only at the start and the end)
    eval_max_blocks: int = 512  # blocks of each held-out set evaluated (evenly spread, fixed masks)
    save_every: int | None = None  # steps between checkpoints (0: only at the end, which is always saved)
    keep_last: int = 3  # checkpoints kept
    log_every: int = 10  # steps per metrics.jsonl training record
    resume: bool = False  # continue from the latest checkpoint in OUT
    overwrite: bool = False  # start again in an OUT holding an earlier run (its run files are deleted first)
    on_nonfinite: str = "stop"  # stop | skip: what a NaN/inf loss does
    num_workers: int | None = None  # processes that mask and collate ahead; default 0 on CPU, 4 on CUDA
    progress: bool = True  # show a progress bar (rank 0)
    sample_vocab_size: int = 8192  # tokenizer size for the bundled sample corpus
    extra_model_config: dict[str, Any] = field(
        default_factory=dict
    )  # overrides of the model config (dropout...)

    def resolved(self) -> PretrainConfig:
        """Fill every None with its default: a short tiny-model run on the sample, the paper's recipe on data."""
        sample = self.data is None
        cfg = dataclasses.replace(self)
        cfg.out = Path(cfg.out)
        cfg.eval_data = tuple(Path(p) for p in cfg.eval_data)
        if cfg.model_config is None:
            cfg.model_config = "tiny" if sample else "base"
        defaults = (
            dict(batch_size=16, micro_batch_size=16, max_steps=600, lr=1e-3, eval_every=100, save_every=200)
            if sample
            else dict(
                batch_size=8192,
                micro_batch_size=16,
                max_steps=500_000,
                lr=6e-4,
                eval_every=1000,
                save_every=1000,
            )
        )
        for name, value in defaults.items():
            if getattr(cfg, name) is None:
                setattr(cfg, name, value)
        if cfg.micro_batch_size > cfg.batch_size:
            cfg.micro_batch_size = cfg.batch_size
        if cfg.warmup_steps is None:
            cfg.warmup_steps = min(24_000, round(0.048 * cfg.max_steps))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"--format must be one of {FORMATS}, got {self.format!r}")
        if self.masking not in ("dynamic", "static"):
            raise ConfigError(f"--masking must be 'dynamic' or 'static', got {self.masking!r}")
        if self.resume and self.overwrite:
            raise ConfigError(
                "--resume continues the run in --out and --overwrite starts it again: choose one"
            )
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"on_nonfinite must be 'stop' or 'skip', got {self.on_nonfinite!r}")
        for name in (
            "batch_size",
            "micro_batch_size",
            "max_steps",
            "static_copies",
            "keep_last",
            "log_every",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if (
            self.warmup_steps is not None
            and self.max_steps is not None
            and self.warmup_steps > self.max_steps
        ):
            raise ConfigError(f"--warmup-steps ({self.warmup_steps}) exceeds --max-steps ({self.max_steps})")
        for name in ("eval_every", "save_every", "eval_max_blocks"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be >= 0 (0: {_ZERO_MEANS[name]}), got {value}"
                )
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"--num-workers must be >= 0, got {self.num_workers}")
        if self.clip_norm < 0:
            raise ConfigError(f"--clip-norm must be >= 0 (0 = off), got {self.clip_norm}")
        self.masking_config()  # validates the probabilities

    def masking_config(self) -> MaskingConfig:
        return MaskingConfig(
            mask_prob=self.mask_prob,
            random_token_prob=self.random_token_prob,
            leave_unmasked_prob=self.leave_unmasked_prob,
            whole_word=self.whole_word_mask,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


# ----------------------------------------------------------------------------------------------- sample data
def sample_files() -> list[Path]:
    """The bundled public-domain sample books (rtoolkit/assets/sample-*.txt)."""
    folder = resources.files("rtoolkit") / "assets"
    files = sorted(
        Path(str(p)) for p in folder.iterdir() if p.name.startswith("sample-") and p.name.endswith(".txt")
    )
    if not files:
        raise FileNotFoundError(f"the bundled sample corpus is missing from {folder}; reinstall rtoolkit")
    return files


def prepare_sample(workdir: str | os.PathLike, *, vocab_size: int = 8192, progress: bool = False) -> Path:
    """Train a byte-level BPE on the sample books and preprocess them into WORKDIR/data (no-op when done)."""
    workdir = Path(workdir)
    tokenizer_dir = workdir / "tokenizer"
    files = sample_files()
    if not (tokenizer_dir / "tokenizer.json").is_file():
        logger.info("training a %d-id tokenizer on the sample corpus", vocab_size)
        documents = (text for f in files for text, _ in iter_documents(f))  # the text as preprocess sees it
        Tokenizer.train_from_iterator(documents, vocab_size=vocab_size).save_pretrained(tokenizer_dir)
    data = workdir / "data"
    preprocess(files, tokenizer_dir=tokenizer_dir, out_dir=data, valid_fraction=0.05, progress=progress)
    return data


# ------------------------------------------------------------------------------------------------ the model
def build_model_config(cfg: PretrainConfig, tokenizer: Tokenizer) -> RobertaConfig:
    """The preset or config.json, sized to the tokenizer, checked against seq_len."""
    overrides = dict(cfg.extra_model_config)
    if cfg.init_from is not None:
        config = RobertaConfig.from_pretrained(cfg.init_from)
        if overrides:
            config = RobertaConfig.from_dict({**config.to_dict(), **overrides})
    elif cfg.model_config in ("tiny", "base", "large"):
        config = RobertaConfig.preset(cfg.model_config, vocab_size=tokenizer.vocab_size, **overrides)
    else:
        config = RobertaConfig.from_json_file(cfg.model_config)
        if overrides:
            config = RobertaConfig.from_dict({**config.to_dict(), **overrides})
    if config.vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            f"the model has {config.vocab_size} embedding rows but the data's tokenizer has "
            f"{tokenizer.vocab_size} ids; use a config with vocab_size >= {tokenizer.vocab_size}"
        )
    return config


# ------------------------------------------------------------------------------------------------- batching
def micro_batches(
    items: list[Item], lengths: np.ndarray, *, micro_batch_size: int, seq_len: int
) -> list[list[Item]]:
    """Split this rank's items into micro-batches of at most micro_batch_size * seq_len padded tokens."""
    budget = micro_batch_size * seq_len
    out: list[list[Item]] = []
    current: list[Item] = []
    longest = 0
    for item in items:
        length = int(lengths[item.block])
        if current and (len(current) + 1) * max(longest, length) > budget:
            out.append(current)
            current, longest = [], 0
        current.append(item)
        longest = max(longest, length)
    if current:
        out.append(current)
    return out


class Collator:
    """Blocks + per-sequence seeds -> a masked, padded batch dict (see rtoolkit.data.masking.collate_masked)."""

    def __init__(self, blocks: BlockDataset, tokenizer: Tokenizer, *, seed: int, masking: MaskingConfig):
        self.blocks, self.seed, self.masking = blocks, seed, masking
        self.pad, self.mask, self.specials = (
            tokenizer.pad_token_id,
            tokenizer.mask_token_id,
            tokenizer.special_ids,
        )
        self.vocab_size = tokenizer.vocab_size
        self.word_starts = tokenizer.word_starts() if masking.whole_word else None

    def __call__(self, items: list[Item]) -> dict[str, torch.Tensor]:
        return collate_masked(
            [self.blocks[it.block] for it in items],
            [sequence_seed(self.seed, it.mask_key, it.block) for it in items],
            pad_token_id=self.pad,
            mask_token_id=self.mask,
            special_ids=self.specials,
            vocab_size=self.vocab_size,
            config=self.masking,
            word_starts=self.word_starts,
        )


class StepBatches(torch.utils.data.Dataset):
    """Global batch i -> this rank's masked micro-batches; a map-style dataset so DataLoader workers can prefetch."""

    def __init__(
        self,
        plan: list[list[Item]],
        collate: Collator,
        lengths: np.ndarray,
        *,
        info: DistInfo,
        micro_batch_size: int,
        seq_len: int,
    ):
        self.plan, self.collate, self.lengths = plan, collate, lengths
        self.info, self.micro_batch_size, self.seq_len = info, micro_batch_size, seq_len

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> list[dict[str, torch.Tensor]]:
        mine = list(dist_utils.shard(self.plan[i], self.info))
        parts = micro_batches(
            mine, self.lengths, micro_batch_size=self.micro_batch_size, seq_len=self.seq_len
        )
        return [self.collate(items) for items in parts]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def eval_batches(
    blocks: BlockDataset, collate: Collator, *, max_blocks: int, micro_batch_size: int, info: DistInfo
) -> list[dict[str, torch.Tensor]]:
    """Fixed held-out batches: up to max_blocks blocks spread evenly, masks keyed on EVAL_EPOCH (never change)."""
    n = len(blocks)
    picks = np.unique(np.linspace(0, n - 1, num=min(n, max_blocks)).round().astype(np.int64)) if n else []
    items = [Item(block=int(b), mask_key=EVAL_EPOCH) for b in picks]
    if len(items) < info.world_size:
        return []
    mine = list(dist_utils.shard(items, info))
    return [collate(mine[i : i + micro_batch_size]) for i in range(0, len(mine), micro_batch_size)]


# ------------------------------------------------------------------------------------------------- the run
def _check_resume_config(out: Path, cfg: PretrainConfig) -> None:
    path = out / RUN_CONFIG_NAME
    if not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    new = cfg.to_dict()
    changed = [k for k in _RESUME_INVARIANTS if k in old and old[k] != new[k]]
    if changed:
        details = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed)
        raise ConfigError(
            f"--resume with settings that differ from {path} ({details}); keep them as they were"
        )


def pretrain(config: PretrainConfig) -> Path:
    """Run (or resume) a pretraining job; returns OUT/final. Launch under torchrun for DDP/FSDP."""
    cfg = config.resolved()
    info = dist_utils.init_distributed(cfg.device)
    try:
        return _pretrain(cfg, info)
    finally:
        dist_utils.cleanup_distributed(info)


def _pretrain(cfg: PretrainConfig, info: DistInfo) -> Path:
    out = cfg.out
    device = info.device
    show = cfg.progress and info.is_main
    # ---- an earlier run in OUT is continued (--resume), started again (--overwrite) or refused
    if info.is_main:
        recover_run_folder(out)
    dist_utils.barrier(info)
    earlier = earlier_run(out, RUN_FILES)
    if earlier and not (cfg.resume or cfg.overwrite):
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(earlier)}); pass --resume to continue it, --overwrite to start "
            f"again (deleting those), or choose another --out"
        )
    # ---- data
    if cfg.data is None:
        if info.is_main:
            prepare_sample(out / "sample", vocab_size=cfg.sample_vocab_size, progress=show)
        dist_utils.barrier(info)
        cfg.data = out / "sample" / "data"
    meta = load_meta(cfg.data)
    tokenizer = Tokenizer.from_pretrained(cfg.data / TOKENIZER_DIR)
    if cfg.init_from is not None:
        init_tok = Tokenizer.from_pretrained(cfg.init_from)
        if init_tok.fingerprint() != meta["tokenizer_fingerprint"]:
            raise CorpusError(
                f"{cfg.data} was tokenized with another tokenizer than {cfg.init_from}'s; preprocess it with "
                f"--tokenizer {cfg.init_from}"
            )
    model_config = build_model_config(cfg, tokenizer)
    if cfg.seq_len is None:
        cfg.seq_len = min(512, model_config.max_tokens)
    if cfg.seq_len > model_config.max_tokens:
        raise ConfigError(
            f"--seq-len {cfg.seq_len} is longer than the model allows ({model_config.max_tokens} tokens, from "
            f"max_position_embeddings={model_config.max_position_embeddings})"
        )
    if cfg.batch_size % info.world_size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} must be divisible by the {info.world_size} processes"
        )
    masking = cfg.masking_config()
    train_blocks = BlockDataset(TokenSplit.open(cfg.data, "train"), seq_len=cfg.seq_len, format=cfg.format)
    if len(train_blocks) < cfg.batch_size:
        raise CorpusError(
            f"{cfg.data}: the train split makes {len(train_blocks)} blocks of {cfg.seq_len} tokens, fewer than one "
            f"batch of {cfg.batch_size}; use more text, a smaller --batch-size or a shorter --seq-len"
        )
    collate = Collator(train_blocks, tokenizer, seed=cfg.seed, masking=masking)
    eval_sets: dict[str, list[dict[str, torch.Tensor]]] = {}
    for name, folder in [("valid", cfg.data)] + [(Path(p).name, Path(p)) for p in cfg.eval_data]:
        eval_meta = load_meta(folder)
        if eval_meta["tokenizer_fingerprint"] != meta["tokenizer_fingerprint"]:
            raise CorpusError(
                f"{folder} was tokenized with another tokenizer than {cfg.data}; preprocess it again"
            )
        if eval_meta["splits"]["valid"]["tokens"] == 0:
            if name != "valid":
                logger.warning("%s has an empty valid split; not evaluated", folder)
            continue
        blocks = BlockDataset(TokenSplit.open(folder, "valid"), seq_len=cfg.seq_len, format=cfg.format)
        eval_collate = Collator(blocks, tokenizer, seed=cfg.seed, masking=masking)
        batches = eval_batches(
            blocks,
            eval_collate,
            max_blocks=cfg.eval_max_blocks,
            micro_batch_size=cfg.micro_batch_size,
            info=info,
        )
        if batches:  # none with --eval-max-blocks 0, or fewer blocks than processes: nothing to report
            eval_sets[name] = batches

    # ---- model, optimizer, schedule
    torch.manual_seed(cfg.seed)
    if cfg.init_from is not None:
        model = RobertaForMaskedLM.from_pretrained(cfg.init_from, **cfg.extra_model_config)
    else:
        model = RobertaForMaskedLM(model_config)
    model.to(device).train()
    model = dist_utils.wrap_model(model, info, fsdp=cfg.fsdp, compile=cfg.compile)
    optimizer = build_optimizer(
        model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps
    )
    scheduler = linear_schedule(optimizer, warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps)
    scaler = make_grad_scaler(cfg.precision, device)
    torch.manual_seed(cfg.seed + info.rank)  # dropout differs between ranks

    # ---- resume
    step, epoch, position, elapsed, skipped = 0, 0, 0, 0.0, 0
    checkpoint = latest_checkpoint(out) if cfg.resume else None
    if cfg.resume:
        _check_resume_config(out, cfg)
    elif cfg.overwrite and info.is_main:  # every check has passed: only now is the earlier run deleted
        clear_run(out, RUN_FILES)
    if checkpoint is not None:
        state = resume(checkpoint, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        step, elapsed, skipped = state["step"], state.get("elapsed", 0.0), state.get("skipped", 0)
        epoch, position = state["data"]["epoch"], state["data"]["batch"]
        if "rng_ranks" in state and info.rank < len(state["rng_ranks"]):
            set_rng_state(state["rng_ranks"][info.rank])
    elif cfg.resume:
        logger.warning("--resume: no checkpoint in %s, starting from step 0", out)
    if info.is_main:
        run = {
            **cfg.to_dict(),
            "model": model_config.to_dict(),
            "world_size": info.world_size,
            "accumulation": math.ceil(cfg.batch_size / (cfg.micro_batch_size * info.world_size)),
            "data_meta": {k: meta[k] for k in ("tokenizer_fingerprint", "vocab_size", "splits")},
        }
        write_run_config(out, run)
    metrics = MetricsWriter(out / METRICS_NAME, truncate_after_step=step) if info.is_main else None
    logger.info(
        "pretraining %s (%s params) on %s: %d train blocks of %d, batch %d = %d x micro %d x %d process(es)",
        cfg.model_config,
        f"{dist_utils.unwrap_model(model).num_parameters() / 1e6:.2f}M",
        cfg.data,
        len(train_blocks),
        cfg.seq_len,
        cfg.batch_size,
        math.ceil(cfg.batch_size / (cfg.micro_batch_size * info.world_size)),
        cfg.micro_batch_size,
        info.world_size,
    )

    def run_eval() -> None:
        for name, batches in eval_sets.items():
            result = evaluate(model, batches, precision=cfg.precision, device=device, dist_info=info)
            if metrics is not None:
                metrics.write(
                    {
                        "step": step,
                        "eval": name,
                        "loss": result.loss,
                        "perplexity": result.perplexity,
                        "count": result.count,
                    }
                )
            logger.info("step %d %s: loss %.4f perplexity %.2f", step, name, result.loss, result.perplexity)

    def save() -> Path:
        ranks = [rng_state()]
        if info.distributed:
            ranks = [None] * info.world_size
            torch.distributed.all_gather_object(ranks, rng_state())
        return save_checkpoint(
            out,
            step=step,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            tokenizer=tokenizer,
            keep_last=cfg.keep_last,
            dist_info=info,
            extra={
                "data": {"epoch": epoch, "batch": position},
                "elapsed": elapsed,
                "skipped": skipped,
                "rng_ranks": ranks,
            },
        )

    if step == 0:
        run_eval()

    def epoch_plan(epoch: int) -> list[list[Item]]:
        plan = epoch_batches(
            train_blocks.lengths,
            epoch=epoch,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            seq_len=cfg.seq_len,
            format=cfg.format,
            masking=cfg.masking,
            static_copies=cfg.static_copies,
        )
        if not plan:
            raise CorpusError(f"{cfg.data}: not enough blocks for one batch of {cfg.batch_size}")
        return plan

    def training_batches(epoch: int, position: int):
        """Yield (epoch, position after this batch, this rank's micro-batches), epoch after epoch."""
        while True:
            plan = StepBatches(
                epoch_plan(epoch)[position:],
                collate,
                train_blocks.lengths,
                info=info,
                micro_batch_size=cfg.micro_batch_size,
                seq_len=cfg.seq_len,
            )
            loader = (
                torch.utils.data.DataLoader(
                    plan,
                    batch_size=None,
                    num_workers=num_workers,
                    prefetch_factor=4,
                    pin_memory=device.type == "cuda",
                )
                if num_workers
                else plan
            )
            for micro in loader:
                position += 1
                yield epoch, position, micro
            epoch, position = epoch + 1, 0

    num_workers = cfg.num_workers if cfg.num_workers is not None else (0 if device.type == "cpu" else 4)
    stream = training_batches(epoch, position)
    bar = progress_bar(cfg.max_steps, initial=step, desc="pretrain", enabled=show)
    window_loss, window_steps, window_tokens, window_time = 0.0, 0, 0, 0.0
    try:
        t0 = time.perf_counter()
        while step < cfg.max_steps:
            epoch, position, micro = next(stream)
            result = train_step(
                model,
                micro,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                precision=cfg.precision,
                clip_norm=cfg.clip_norm,
                device=device,
                dist_info=info,
            )
            if not result.finite:
                if cfg.on_nonfinite == "stop":
                    saved = save()  # the weights are still those before the bad batch, which is passed over
                    raise TrainingDiverged(
                        f"non-finite loss/gradient ({result.loss}) at step {step + 1}; training stopped. The last "
                        f"good state is saved in {saved}. Lower --lr, add --clip-norm or use --precision bf16, then "
                        f"--resume (or pass --skip-nonfinite to skip such steps)"
                    )
                skipped += 1
                scheduler.step()
                logger.warning("step %d: non-finite loss, update skipped (%d so far)", step + 1, skipped)
            step += 1
            tokens = sum(batch_tokens(b) for b in micro)  # this rank's, counted on the host
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            elapsed += seconds
            if result.finite:
                window_loss += result.loss
                window_steps += 1
            window_tokens += tokens
            window_time += seconds
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                window_tokens = int(
                    dist_utils.all_reduce_sum(torch.tensor(window_tokens, device=device), info).item()
                )
                record = {
                    "step": step,
                    "epoch": epoch,
                    "loss": window_loss / max(window_steps, 1),
                    "lr": result.lr,
                    "grad_norm": result.grad_norm,
                    "tokens_per_s": window_tokens / max(window_time, 1e-9),
                    "elapsed_s": round(elapsed, 3),
                    "skipped": skipped,
                }
                if metrics is not None:
                    metrics.write(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
                window_loss, window_steps, window_tokens, window_time = 0.0, 0, 0, 0.0
            if cfg.eval_every and step % cfg.eval_every == 0 and step != cfg.max_steps:
                run_eval()
            if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.max_steps:
                save()
            t0 = time.perf_counter()
        run_eval()
        final = save_final(out, model, tokenizer=tokenizer, dist_info=info)
    finally:
        stream.close()
        bar.close()
        if metrics is not None:
            metrics.close()
    logger.info("finished %d steps; model in %s", step, final)
    return final


# --------------------------------------------------------------------------------------------------- plots
def plot_runs(
    run_dirs: list[str | os.PathLike], out_png: str | os.PathLike, *, labels: list[str] | None = None
) -> Path:
    """Draw training and held-out MLM loss against step for one or more runs into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or [Path(d).name for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"got {len(run_dirs)} runs but {len(labels)} labels")
    out_png = Path(out_png)
    if out_png.is_dir():
        raise ValueError(
            f"--out {out_png} is a folder; give the PNG file's path (e.g. {out_png / 'loss.png'})"
        )
    runs = []
    for run in run_dirs:
        path = Path(run) / METRICS_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {run} a pretraining run folder?")
        records = read_metrics(path)
        if not any("tokens_per_s" in r for r in records):
            raise ValueError(
                f"{path} holds no pretraining records (a finetuning run's, or empty); nothing to plot"
            )
        runs.append(records)
    fig, (ax_train, ax_eval) = plt.subplots(1, 2, figsize=(13, 4))
    for records, label in zip(runs, labels, strict=True):
        train = [r for r in records if "eval" not in r]
        line = ax_train.plot([r["step"] for r in train], [r["loss"] for r in train], label=label)[0]
        for i, name in enumerate(sorted({r["eval"] for r in records if "eval" in r})):
            points = [r for r in records if r.get("eval") == name]
            ax_eval.plot(
                [r["step"] for r in points],
                [r["loss"] for r in points],
                marker="o",
                markersize=3,
                color=line.get_color(),
                linestyle=["-", "--", ":"][i % 3],
                label=f"{label}: {name}",
            )
    ax_train.set(title="training MLM loss", xlabel="step", ylabel="loss (nats)")
    ax_eval.set(title="held-out MLM loss (fixed masks)", xlabel="step", ylabel="loss (nats)")
    for ax in (ax_train, ax_eval):
        ax.grid(alpha=0.3)
    ax_train.legend(fontsize=8)
    ax_eval.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


__all__ = ["PretrainConfig", "plot_runs", "prepare_sample", "pretrain", "sample_files"]
