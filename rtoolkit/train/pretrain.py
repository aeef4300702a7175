"""Masked-LM pretraining with the RoBERTa recipe: the loop, visible top to bottom in `pretrain`.

    cfg = PretrainConfig(out="runs/r1", data="data/books", model_config="base")
    final_dir = pretrain(cfg)          # OUT/final: an HF model folder with its tokenizer

Data: a folder made by `rtoolkit preprocess` (rtoolkit.data.corpus), packed into FULL-SENTENCES or DOC-SENTENCES
blocks of whole sentences (or fixed-size `none` blocks), masked dynamically per (seed, epoch, block) or statically per (seed, copy, block) (rtoolkit.data.masking).
Optimisation: AdamW (0.9, 0.98), eps 1e-6, weight decay 0.01, linear warmup then linear decay to 0, gradient
accumulation from --batch-size / --micro-batch-size, optional clipping, fp32/bf16/fp16 (rtoolkit.train.optim, .loop).
With no data, `prepare_sample` trains a tokenizer on the bundled sample corpus and preprocesses it first.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from rtoolkit.config import MODEL_PRESETS, ConfigError, RobertaConfig
from rtoolkit.data.batching import EVAL_EPOCH, MlmCollator, StepBatches, micro_batches, mlm_eval_batches
from rtoolkit.data.corpus import (
    TOKENIZER_DIR,
    BlockDataset,
    CorpusError,
    Format,
    Item,
    TokenSplit,
    epoch_batches,
    iter_documents,
    load_meta,
    preprocess,
)
from rtoolkit.data.masking import MaskingConfig
from rtoolkit.model import RobertaForMaskedLM
from rtoolkit.tokenizer import Tokenizer
from rtoolkit.train import distributed as dist_utils
from rtoolkit.train.distributed import DistInfo
from rtoolkit.train.loop import (
    METRICS_NAME,
    RUN_CONFIG_NAME,
    MetricsWriter,
    Precision,
    StepResult,
    TrainingDiverged,
    batch_tokens,
    claim_run_folder,
    clear_run,
    evaluate,
    make_grad_scaler,
    progress_bar,
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
from rtoolkit.train.plots import plot_runs
from rtoolkit.train.runconfig import (
    check_choices,
    check_minimum,
    check_resume_or_overwrite,
    check_resume_settings,
    seed_dropout,
    seed_init,
    to_dict,
)

logger = logging.getLogger(__name__)

# What a run writes into OUT: an OUT holding any of them holds an earlier run.
RUN_FILES = ("checkpoints", "final", METRICS_NAME, RUN_CONFIG_NAME)
# What 0 means for the settings where it is allowed.
_ZERO_MEANS = {
    "eval_every": "only at the start and the end",
    "save_every": "only at the end",
    "eval_max_blocks": "no held-out evaluation",
}


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run (conventions: rtoolkit.train.runconfig). None means "the default for this
    run", filled in by `resolved`: the quickstart (a 5-minute CPU run of the mini preset) on the bundled sample, the
    paper's recipe on real data."""

    out: Path
    """Run folder: checkpoints/step-N/, final/, metrics.jsonl, run_config.json."""
    data: Path | None = None
    """Folder from `rtoolkit preprocess`. Default: the bundled sample corpus (prepared under OUT/sample) and the
    quickstart recipe (docs/pretraining.md)."""
    eval_data: tuple[Path, ...] = ()
    """More preprocessed folders whose valid split is evaluated too (e.g. WikiText)."""
    model_config: str | None = None
    """tiny | mini | base | large | a config.json. Default: mini on the sample (the quickstart), else base."""
    init_from: Path | None = None
    """Continue pretraining this model folder (its tokenizer must be the data's)."""
    format: Format = "full-sentences"
    """Block packing (paper §4.2): whole sentences up to seq_len, crossing documents (full-sentences) or not
    (doc-sentences); none: fixed-size blocks cut anywhere (no padding at all: the fastest on GPUs)."""
    masking: Literal["dynamic", "static"] = "dynamic"
    """dynamic: fresh masks every epoch (RoBERTa); static: BERT's fixed masks, the data copied static_copies
    times."""
    static_copies: int = 10
    """Static masking: copies of the data, each with its own masks."""
    mask_prob: float = MaskingConfig.mask_prob
    """Share of tokens chosen for prediction."""
    random_token_prob: float = MaskingConfig.random_token_prob
    """Share of the chosen tokens replaced by a random token."""
    leave_unmasked_prob: float = MaskingConfig.leave_unmasked_prob
    """Share of the chosen tokens left unchanged."""
    whole_word_mask: bool = False
    """Mask whole words (a word starts at a 'Ġ' token) instead of single tokens."""
    seq_len: int | None = None
    """Tokens per block, <s> and </s> included. Default: min(512, the model's maximum); 64 on the sample."""
    batch_size: int | None = None
    """Sequences per optimizer step, over all processes. Default: 8192 (paper); 32 on the sample."""
    micro_batch_size: int | None = None
    """Sequences per forward/backward on each process; gradient accumulation is derived. Default: 16; 32 on the
    sample."""
    max_steps: int | None = None
    """Optimizer steps. Default: 500000 (paper); 5000 on the sample."""
    lr: float | None = None
    """Peak learning rate. Default: 6e-4 (paper, base); 1e-3 on the sample."""
    warmup_steps: int | None = None
    """Linear warmup steps. Default: 4.8% of max_steps, at most 24000 (paper: 24k of 500k)."""
    weight_decay: float = 0.01
    """Decoupled weight decay."""
    decay_all: bool = False
    """Apply weight decay to biases and LayerNorm weights too, as fairseq does (default: they are exempt)."""
    fairseq_warmup: bool = False
    """Warm up as fairseq does: update k (from 1) at max(k - 1, 1) / warmup of the peak instead of k / warmup."""
    adam_betas: tuple[float, float] = (0.9, 0.98)
    """Adam beta1, beta2 (paper: beta2 0.98 for stability with large batches)."""
    adam_eps: float = 1e-6
    """Adam epsilon."""
    clip_norm: float = 0.0
    """Gradient-norm clipping (0: off, as in the paper)."""
    precision: Precision = "fp32"
    """fp32, or bf16 / fp16 autocast (fp16 adds a gradient scaler)."""
    compile: bool = False
    """torch.compile the encoder layers (before DDP/FSDP wrapping)."""
    fsdp: bool = False
    """Shard the model with FSDP (under torchrun)."""
    device: str | None = None
    """cpu | cuda | cuda:N; under torchrun 'cuda' is cuda:LOCAL_RANK. Default: cuda when available."""
    seed: int = 0
    """Seed of the model initialisation, the data order and the masks (dropout: seed + rank)."""
    eval_every: int | None = None
    """Steps between evaluations; 0: only at the start and the end. Default: 1000 (also on the sample)."""
    eval_max_blocks: int = 512
    """Blocks of each held-out set evaluated (evenly spread, fixed masks); 0: no held-out evaluation."""
    save_every: int | None = None
    """Steps between checkpoints; 0: only at the end (always saved). Default: 1000 (also on the sample)."""
    keep_last: int = 3
    """Checkpoints kept under OUT/checkpoints."""
    log_every: int = 10
    """Steps per training record in metrics.jsonl."""
    resume: bool = False
    """Continue the run in OUT from its latest checkpoint."""
    overwrite: bool = False
    """Start again in an OUT that holds an earlier run (its checkpoints, final/ and metrics are deleted first)."""
    on_nonfinite: Literal["stop", "skip"] = "stop"
    """What a NaN/inf loss does: stop the run, or skip (and count) the step."""
    num_workers: int | None = None
    """Processes that mask and collate batches ahead. Default: 0 on CPU, 4 on CUDA."""
    progress: bool = True
    """Show a progress bar (first process only)."""
    sample_vocab_size: int = 2048
    """Ids of the tokenizer trained for the bundled sample corpus (runs without data)."""
    extra_model_config: dict[str, Any] = field(default_factory=dict)
    """Overrides of the model config (e.g. {"hidden_dropout_prob": 0.0})."""

    # Settings that must not change when a run is resumed (the data position would no longer mean anything).
    RESUME_INVARIANTS: ClassVar[tuple[str, ...]] = (
        "data", "seq_len", "batch_size", "format", "masking", "static_copies", "seed",
    )  # fmt: skip

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.data = None if self.data is None else Path(self.data)
        self.init_from = None if self.init_from is None else Path(self.init_from)
        self.eval_data = tuple(Path(p) for p in self.eval_data)

    def resolved(self) -> PretrainConfig:
        """A copy with every None filled in: the quickstart on the sample, the paper's recipe on data."""
        sample = self.data is None
        defaults: dict[str, Any] = (
            dict(batch_size=32, micro_batch_size=32, seq_len=64, max_steps=5000, lr=1e-3, eval_every=1000,
                 save_every=1000)
            if sample
            else dict(batch_size=8192, micro_batch_size=16, max_steps=500_000, lr=6e-4, eval_every=1000,
                      save_every=1000)
        )  # fmt: skip
        defaults["model_config"] = "mini" if sample else "base"
        cfg = dataclasses.replace(
            self, **{name: value for name, value in defaults.items() if getattr(self, name) is None}
        )
        if cfg.micro_batch_size > cfg.batch_size:
            cfg.micro_batch_size = cfg.batch_size
        if cfg.warmup_steps is None:
            cfg.warmup_steps = min(24_000, round(0.048 * cfg.max_steps))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ConfigError for a setting out of range (run before anything is read or written)."""
        check_choices(self)
        check_resume_or_overwrite(self)
        check_minimum(
            self,
            ("batch_size", "micro_batch_size", "max_steps", "static_copies", "keep_last", "log_every"),
            1,
        )
        check_minimum(
            self, ("eval_every", "save_every", "eval_max_blocks", "num_workers", "clip_norm"), 0, _ZERO_MEANS
        )
        if (
            self.warmup_steps is not None
            and self.max_steps is not None
            and self.warmup_steps > self.max_steps
        ):
            raise ConfigError(
                f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps})",
                fields=("warmup_steps", "max_steps"),
            )
        self.masking_config()  # validates the probabilities

    def masking_config(self) -> MaskingConfig:
        return MaskingConfig(
            mask_prob=self.mask_prob,
            random_token_prob=self.random_token_prob,
            leave_unmasked_prob=self.leave_unmasked_prob,
            whole_word=self.whole_word_mask,
        )

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


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


def prepare_sample(
    workdir: str | os.PathLike, *, vocab_size: int = PretrainConfig.sample_vocab_size, progress: bool = False
) -> Path:
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
    elif cfg.model_config in MODEL_PRESETS:
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


# ------------------------------------------------------------------------------------------------- the run
@dataclass
class Progress:
    """Where a run is: saved in every checkpoint, restored by --resume."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # global batches of `epoch` already trained
    elapsed: float = 0.0  # seconds of training so far
    skipped: int = 0  # steps passed over for a non-finite loss


@dataclass
class PretrainRun:
    """What `setup` builds and `fit` trains. `cfg` is final here (data and seq_len filled in); only `progress` and the
    training state change while `fit` runs."""

    cfg: PretrainConfig
    info: DistInfo
    tokenizer: Tokenizer
    model_config: RobertaConfig
    train_blocks: BlockDataset
    collate: MlmCollator
    eval_sets: dict[str, list[dict[str, torch.Tensor]]]
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    progress: Progress
    metrics: MetricsWriter | None

    @property
    def accumulation(self) -> int:
        return math.ceil(self.cfg.batch_size / (self.cfg.micro_batch_size * self.info.world_size))


def pretrain(config: PretrainConfig) -> Path:
    """Run (or resume) a pretraining job; returns OUT/final. Launch under torchrun for DDP/FSDP."""
    cfg = config.resolved()
    info = dist_utils.init_distributed(cfg.device)
    try:
        return fit(setup(cfg, info))
    finally:
        dist_utils.cleanup_distributed(info)


def setup(cfg: PretrainConfig, info: DistInfo) -> PretrainRun:
    """Check OUT, prepare and check the data, build the model, optimizer and schedule, restore a checkpoint."""
    start_from = _claim_out_dir(cfg, info)
    cfg, meta, tokenizer, model_config = _resolve_data(cfg, info)
    masking = cfg.masking_config()
    train_blocks = BlockDataset(TokenSplit.open(cfg.data, "train"), seq_len=cfg.seq_len, format=cfg.format)
    if len(train_blocks) < cfg.batch_size:
        raise ConfigError(
            f"{cfg.data}: the train split makes {len(train_blocks)} blocks of {cfg.seq_len} tokens, fewer than one "
            f"batch of {cfg.batch_size}; use more text, a smaller batch_size or a shorter seq_len",
            fields=("batch_size", "seq_len"),
        )
    collate = MlmCollator(train_blocks, tokenizer, seed=cfg.seed, masking=masking)
    eval_sets = _eval_sets(cfg, info, tokenizer, meta)
    seed_init(cfg.seed)
    if cfg.init_from is not None:
        model = RobertaForMaskedLM.from_pretrained(cfg.init_from, **cfg.extra_model_config)
    else:
        model = RobertaForMaskedLM(model_config)
    model.to(info.device).train()
    model = dist_utils.wrap_model(model, info, fsdp=cfg.fsdp, compile=cfg.compile)
    optimizer = build_optimizer(
        model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
        decay_all=cfg.decay_all,
    )  # fmt: skip
    scheduler = linear_schedule(
        optimizer, warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps, fairseq_warmup=cfg.fairseq_warmup
    )
    scaler = make_grad_scaler(cfg.precision, info.device)
    seed_dropout(cfg.seed, info.rank)
    run = PretrainRun(
        cfg, info, tokenizer, model_config, train_blocks, collate, eval_sets, model, optimizer, scheduler, scaler,
        Progress(), None,
    )  # fmt: skip
    _restore(run, start_from)
    if info.is_main:
        write_run_config(
            cfg.out,
            {
                **cfg.to_dict(),
                "model": model_config.to_dict(),
                "world_size": info.world_size,
                "accumulation": run.accumulation,
                "data_meta": {k: meta[k] for k in ("tokenizer_fingerprint", "vocab_size", "splits")},
            },
        )
        run.metrics = MetricsWriter(cfg.out / METRICS_NAME, truncate_after_step=run.progress.step)
    logger.info(
        "pretraining %s (%s params) on %s: %d train blocks of %d, batch %d = %d x micro %d x %d process(es)",
        cfg.model_config, f"{dist_utils.unwrap_model(model).num_parameters() / 1e6:.2f}M", cfg.data,
        len(train_blocks), cfg.seq_len, cfg.batch_size, run.accumulation, cfg.micro_batch_size, info.world_size,
    )  # fmt: skip
    return run


def _claim_out_dir(cfg: PretrainConfig, info: DistInfo) -> Path | None:
    """The checkpoint to continue from: an earlier run in OUT is continued (resume), started again (overwrite,
    later) or refused (rtoolkit.train.loop.claim_run_folder)."""
    if info.is_main:
        recover_run_folder(cfg.out)
    dist_utils.barrier(info)
    return claim_run_folder(cfg.out, RUN_FILES, resume=cfg.resume, overwrite=cfg.overwrite)


def _resolve_data(
    cfg: PretrainConfig, info: DistInfo
) -> tuple[PretrainConfig, dict, Tokenizer, RobertaConfig]:
    """The data folder (the bundled sample prepared when none is given), its tokenizer, the model config and the
    block length; returns the final config with `data` and `seq_len` filled in."""
    data = cfg.data
    if data is None:
        if info.is_main:
            prepare_sample(cfg.out / "sample", vocab_size=cfg.sample_vocab_size, progress=cfg.progress)
        dist_utils.barrier(info)
        data = cfg.out / "sample" / "data"
    meta = load_meta(data)
    tokenizer = Tokenizer.from_pretrained(data / TOKENIZER_DIR)
    if cfg.init_from is not None:
        init_tok = Tokenizer.from_pretrained(cfg.init_from)
        if init_tok.fingerprint() != meta["tokenizer_fingerprint"]:
            raise CorpusError(
                f"{data} was tokenized with another tokenizer than {cfg.init_from}'s; preprocess it with "
                f"--tokenizer {cfg.init_from}"
            )
    model_config = build_model_config(cfg, tokenizer)
    seq_len = cfg.seq_len if cfg.seq_len is not None else min(512, model_config.max_tokens)
    if seq_len > model_config.max_tokens:
        raise ConfigError(
            f"seq_len {seq_len} is longer than the model allows ({model_config.max_tokens} tokens, from "
            f"max_position_embeddings={model_config.max_position_embeddings})",
            fields=("seq_len",),
        )
    if cfg.batch_size % info.world_size:
        raise ConfigError(
            f"batch_size {cfg.batch_size} must be divisible by the {info.world_size} processes",
            fields=("batch_size",),
        )
    return dataclasses.replace(cfg, data=data, seq_len=seq_len), meta, tokenizer, model_config


def _eval_sets(cfg: PretrainConfig, info: DistInfo, tokenizer: Tokenizer, meta: dict) -> dict[str, list]:
    """The fixed held-out batches of the data's valid split and of each --eval-data folder."""
    sets: dict[str, list[dict[str, torch.Tensor]]] = {}
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
        batches = mlm_eval_batches(
            blocks, MlmCollator(blocks, tokenizer, seed=cfg.seed, masking=cfg.masking_config()),
            max_blocks=cfg.eval_max_blocks, micro_batch_size=cfg.micro_batch_size, rank=info.rank,
            world_size=info.world_size,
        )  # fmt: skip
        if batches:  # none with --eval-max-blocks 0, or fewer blocks than processes: nothing to report
            sets[name] = batches
    return sets


def _restore(run: PretrainRun, checkpoint: Path | None) -> None:
    """resume: weights, optimizer, schedule, scaler, RNG and data position from `checkpoint` (the settings that
    place the data must be those recorded); overwrite: delete the earlier run now that every check has passed."""
    cfg, info = run.cfg, run.info
    if not cfg.resume:
        if cfg.overwrite and info.is_main:
            clear_run(cfg.out, RUN_FILES)
        return
    check_resume_settings(cfg.out / RUN_CONFIG_NAME, cfg.to_dict(), cfg.RESUME_INVARIANTS)
    if checkpoint is None:
        return
    state = resume(
        checkpoint, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, scaler=run.scaler
    )
    run.progress = Progress(
        step=state["step"], epoch=state["data"]["epoch"], position=state["data"]["batch"],
        elapsed=state.get("elapsed", 0.0), skipped=state.get("skipped", 0),
    )  # fmt: skip
    if "rng_ranks" in state and info.rank < len(state["rng_ranks"]):
        set_rng_state(state["rng_ranks"][info.rank])


def run_evaluation(run: PretrainRun) -> None:
    """Held-out loss and perplexity of every eval set at the current step, into metrics.jsonl."""
    for name, batches in run.eval_sets.items():
        result = evaluate(
            run.model, batches, precision=run.cfg.precision, device=run.info.device, dist_info=run.info
        )
        if run.metrics is not None:
            run.metrics.write(
                {"step": run.progress.step, "eval": name, "loss": result.loss, "perplexity": result.perplexity,
                 "count": result.count}
            )  # fmt: skip
        logger.info(
            "step %d %s: loss %.4f perplexity %.2f", run.progress.step, name, result.loss, result.perplexity
        )


def save(run: PretrainRun) -> Path:
    """A resumable checkpoint of the run at its current step (all ranks call: FSDP gathers, RNGs are collected)."""
    ranks = [rng_state()]
    if run.info.distributed:
        ranks = [None] * run.info.world_size
        torch.distributed.all_gather_object(ranks, rng_state())
    p = run.progress
    return save_checkpoint(
        run.cfg.out, step=p.step, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler,
        scaler=run.scaler, tokenizer=run.tokenizer, keep_last=run.cfg.keep_last, dist_info=run.info,
        extra={"data": {"epoch": p.epoch, "batch": p.position}, "elapsed": p.elapsed, "skipped": p.skipped,
               "rng_ranks": ranks},
    )  # fmt: skip


def epoch_plan(run: PretrainRun, epoch: int) -> list[list[Item]]:
    """The global batches of one epoch (deterministic in seed and epoch)."""
    cfg = run.cfg
    plan = epoch_batches(
        run.train_blocks.lengths, epoch=epoch, seed=cfg.seed, batch_size=cfg.batch_size, seq_len=cfg.seq_len,
        format=cfg.format, masking=cfg.masking, static_copies=cfg.static_copies,
    )  # fmt: skip
    if not plan:
        raise CorpusError(f"{cfg.data}: not enough blocks for one batch of {cfg.batch_size}")
    return plan


def training_batches(run: PretrainRun) -> Iterator[tuple[int, int, list[dict[str, torch.Tensor]]]]:
    """Yield (epoch, position after this batch, this rank's micro-batches) from the run's position on, epoch after
    epoch; DataLoader workers mask and collate ahead."""
    cfg, device = run.cfg, run.info.device
    workers = cfg.num_workers if cfg.num_workers is not None else (0 if device.type == "cpu" else 4)
    epoch, position = run.progress.epoch, run.progress.position
    while True:
        steps = StepBatches(
            epoch_plan(run, epoch)[position:], run.collate, run.train_blocks.lengths, rank=run.info.rank,
            world_size=run.info.world_size, micro_batch_size=cfg.micro_batch_size, seq_len=cfg.seq_len,
        )  # fmt: skip
        loader = (
            torch.utils.data.DataLoader(
                steps,
                batch_size=None,
                num_workers=workers,
                prefetch_factor=4,
                pin_memory=device.type == "cuda",
            )
            if workers
            else steps
        )
        for micro in loader:
            position += 1
            yield epoch, position, micro
        epoch, position = epoch + 1, 0


@dataclass
class _Window:
    """What the training records average over: the steps since the last record."""

    loss: float = 0.0
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0


def _record(run: PretrainRun, window: _Window, result: StepResult, bar) -> None:
    """Write the window's training record (tokens summed over ranks) and show it on the bar."""
    tokens = int(
        dist_utils.all_reduce_sum(torch.tensor(window.tokens, device=run.info.device), run.info).item()
    )
    p = run.progress
    record = {
        "step": p.step,
        "epoch": p.epoch,
        "loss": window.loss / max(window.steps, 1),
        "lr": result.lr,
        "grad_norm": result.grad_norm,
        "tokens_per_s": tokens / max(window.seconds, 1e-9),
        "elapsed_s": round(p.elapsed, 3),
        "skipped": p.skipped,
    }
    if run.metrics is not None:
        run.metrics.write(record)
    bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")


def fit(run: PretrainRun) -> Path:
    """The training loop, top to bottom: step, log, evaluate, save; then the final evaluation and OUT/final."""
    cfg, info, p = run.cfg, run.info, run.progress
    if p.step == 0:
        run_evaluation(run)
    stream = training_batches(run)
    bar = progress_bar(cfg.max_steps, initial=p.step, desc="pretrain", enabled=cfg.progress and info.is_main)
    window = _Window()
    try:
        t0 = time.perf_counter()
        while p.step < cfg.max_steps:
            p.epoch, p.position, micro = next(stream)
            result = train_step(
                run.model, micro, optimizer=run.optimizer, scheduler=run.scheduler, scaler=run.scaler,
                precision=cfg.precision, clip_norm=cfg.clip_norm, device=info.device, dist_info=info,
            )  # fmt: skip
            if not result.finite:
                if cfg.on_nonfinite == "stop":
                    saved = save(
                        run
                    )  # the weights are still those before the bad batch, which is passed over
                    raise TrainingDiverged(
                        f"non-finite loss/gradient ({result.loss}) at step {p.step + 1}; training stopped. The last "
                        f"good state is saved in {saved}. Lower lr, add clip_norm or use bf16 precision, then resume "
                        f"(or let on_nonfinite='skip' pass over such steps: --skip-nonfinite)"
                    )
                p.skipped += 1
                run.scheduler.step()
                logger.warning("step %d: non-finite loss, update skipped (%d so far)", p.step + 1, p.skipped)
            p.step += 1
            if info.device.type == "cuda":
                torch.cuda.synchronize(info.device)
            seconds = time.perf_counter() - t0
            p.elapsed += seconds
            if result.finite:
                window.loss += result.loss
                window.steps += 1
            window.tokens += sum(batch_tokens(b) for b in micro)  # this rank's, counted on the host
            window.seconds += seconds
            bar.update(1)
            if p.step % cfg.log_every == 0 or p.step == cfg.max_steps:
                _record(run, window, result, bar)
                window = _Window()
            if cfg.eval_every and p.step % cfg.eval_every == 0 and p.step != cfg.max_steps:
                run_evaluation(run)
            if (cfg.save_every and p.step % cfg.save_every == 0) or p.step == cfg.max_steps:
                save(run)
            t0 = time.perf_counter()
        run_evaluation(run)
        final = save_final(cfg.out, run.model, tokenizer=run.tokenizer, dist_info=info)
    finally:
        stream.close()
        bar.close()
        if run.metrics is not None:
            run.metrics.close()
    logger.info("finished %d steps; model in %s", p.step, final)
    return final


Collator = MlmCollator  # the older name
eval_batches = mlm_eval_batches  # the older name

__all__ = [
    "EVAL_EPOCH",
    "PretrainConfig",
    "PretrainRun",
    "Progress",
    "fit",
    "micro_batches",
    "plot_runs",
    "prepare_sample",
    "pretrain",
    "sample_files",
    "setup",
]
