"""Batch plans and collators: how examples become the batches a training step gets.

Masked-LM pretraining: `MlmCollator` masks and pads blocks (rtoolkit.data.masking), `StepBatches` gives each
process its share of a global batch as micro-batches (`shard`, `micro_batches`), `mlm_eval_batches` fixes the
held-out batches. Finetuning: `length_grouped_batches` / `random_batches` plan an epoch, `collate_classification`
pads rows of token ids.

    plan = length_grouped_batches(lengths, batch_size=32, seed=1, epoch=0)   # [[row, ...], ...] one per step
    batch = drop_unneeded_mask(tokenizer.pad([ids[r] for r in plan[0]]))   # no attention_mask: no padding

Random batches of short sentences are mostly padding: SST-2's training sentences average 13 tokens and reach 66, so a
batch of 32 drawn at random is padded to about 50 tokens and three quarters of the compute is spent on padding.
fairseq orders a sentence-level task by length (with a random tie break) before cutting batches and then shuffles the
batches; `length_grouped_batches` does the same. Every batch still holds `batch_size` rows (the recipe's batch
size is unchanged), but the rows of a batch have (nearly always exactly) the same length, so there is little or
no padding. A batch without padding needs no attention mask, and `drop_unneeded_mask` removes it: the model then
calls scaled_dot_product_attention with `attn_mask=None`, which lets CUDA use the flash kernel.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from rtoolkit.data.corpus import BlockDataset, Item
from rtoolkit.data.masking import MaskingConfig, collate_masked, sequence_seed
from rtoolkit.tokenizer import Tokenizer

T = TypeVar("T")
EVAL_EPOCH = -1  # mask key of the fixed evaluation masks (never an epoch)


def length_grouped_batches(
    lengths: Sequence[int] | np.ndarray,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    min_rows: int = 1,
) -> list[list[int]]:
    """The batches (lists of row indices) of one epoch, rows of similar length together, a pure function of
    (lengths, batch_size, seed, epoch) so a resumed run sees the same batches.

    Rows are shuffled, stably sorted by length (so rows of one length come in random order), cut into batches of
    `batch_size`, and the batches are shuffled. One batch may hold fewer rows (n % batch_size); it is dropped when
    it holds fewer than `min_rows` (e.g. fewer rows than processes to split it over).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    generator = _generator(seed, epoch)
    order = torch.randperm(len(lengths), generator=generator).numpy()
    order = order[np.argsort(lengths[order], kind="stable")]  # by length; ties keep their random order
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    batches = [b for b in batches if len(b) >= min_rows]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def random_batches(n: int, *, batch_size: int, seed: int, epoch: int, min_rows: int = 1) -> list[list[int]]:
    """The batches of one epoch in plain random order (each padded to its longest row): the baseline plan."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n, generator=_generator(seed, epoch))
    batches = [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
    return [b for b in batches if len(b) >= min_rows]


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def padding_fraction(lengths: Sequence[int] | np.ndarray, batches: Sequence[Sequence[int]]) -> float:
    """Share of the token slots of `batches` (each padded to its longest row) that are padding."""
    lengths = np.asarray(lengths, dtype=np.int64)
    slots = sum(len(b) * int(lengths[list(b)].max()) for b in batches if len(b))
    real = sum(int(lengths[list(b)].sum()) for b in batches)
    return 1.0 - real / slots if slots else 0.0


def drop_unneeded_mask(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without its attention_mask when the mask is all ones (checked on the host, before any copy to a
    device): the model then runs attention with no mask, which CUDA's flash kernel requires."""
    mask = batch.get("attention_mask")
    if mask is not None and mask.device.type == "cpu" and bool(mask.all()):
        return {k: v for k, v in batch.items() if k != "attention_mask"}
    return batch


def collate_classification(
    tokenizer: Tokenizer, ids: Sequence[Sequence[int]], labels: Sequence[float] | Sequence[int] | None
) -> dict[str, torch.Tensor]:
    """Pad to the longest row: {"input_ids": (B, T), "attention_mask": (B, T), "labels": (B,) long or float};
    a batch whose rows have one length carries no attention_mask (no padding: flash-eligible attention)."""
    batch = drop_unneeded_mask(tokenizer.pad(ids))
    if labels is not None:
        dtype = torch.float32 if labels and isinstance(labels[0], float) else torch.long
        batch["labels"] = torch.tensor(list(labels), dtype=dtype)
    return batch


def sorted_batches(
    tokenizer: Tokenizer, ids: list[list[int]], labels: Sequence[Any] | None, batch_size: int
) -> tuple[list[int], Iterator[dict[str, torch.Tensor]]]:
    """Batches of rows sorted by length (little padding); returns the row order and the batch iterator."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))

    def batches() -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            yield collate_classification(
                tokenizer, [ids[i] for i in rows], [labels[i] for i in rows] if labels else None
            )

    return order, batches()


def epoch_plan(
    lengths: Sequence[int],
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    group_by_length: bool,
    min_rows: int = 1,
) -> list[list[int]]:
    """The training batches (row indices) of one finetuning epoch, a pure function of its arguments (exact resume)."""
    if group_by_length:
        return length_grouped_batches(
            lengths, batch_size=batch_size, seed=seed, epoch=epoch, min_rows=min_rows
        )
    return random_batches(len(lengths), batch_size=batch_size, seed=seed, epoch=epoch, min_rows=min_rows)


# ------------------------------------------------------------------------------------------ masked-LM batches
def shard(items: Sequence[T], rank: int, world_size: int) -> Sequence[T]:
    """Process `rank`'s contiguous slice of a global batch (sizes differ by at most one between processes)."""
    n = len(items)
    if n < world_size:
        raise ValueError(
            f"a global batch of {n} sequences cannot be split over {world_size} processes; "
            f"use a batch size of at least {world_size}"
        )
    return items[rank * n // world_size : (rank + 1) * n // world_size]


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


class MlmCollator:
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
        collate: MlmCollator,
        lengths: np.ndarray,
        *,
        rank: int,
        world_size: int,
        micro_batch_size: int,
        seq_len: int,
    ):
        self.plan, self.collate, self.lengths = plan, collate, lengths
        self.rank, self.world_size = rank, world_size
        self.micro_batch_size, self.seq_len = micro_batch_size, seq_len

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> list[dict[str, Any]]:
        mine = list(shard(self.plan[i], self.rank, self.world_size))
        parts = micro_batches(
            mine, self.lengths, micro_batch_size=self.micro_batch_size, seq_len=self.seq_len
        )
        return [self.collate(items) for items in parts]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def mlm_eval_batches(
    blocks: BlockDataset,
    collate: MlmCollator,
    *,
    max_blocks: int,
    micro_batch_size: int,
    rank: int,
    world_size: int,
) -> list[dict[str, torch.Tensor]]:
    """Fixed held-out batches: up to max_blocks blocks spread evenly, masks keyed on EVAL_EPOCH (never change)."""
    n = len(blocks)
    picks = np.unique(np.linspace(0, n - 1, num=min(n, max_blocks)).round().astype(np.int64)) if n else []
    items = [Item(block=int(b), mask_key=EVAL_EPOCH) for b in picks]
    if len(items) < world_size:
        return []
    mine = list(shard(items, rank, world_size))
    return [collate(mine[i : i + micro_batch_size]) for i in range(0, len(mine), micro_batch_size)]


__all__ = [
    "EVAL_EPOCH",
    "MlmCollator",
    "StepBatches",
    "collate_classification",
    "epoch_plan",
    "sorted_batches",
    "drop_unneeded_mask",
    "length_grouped_batches",
    "micro_batches",
    "mlm_eval_batches",
    "padding_fraction",
    "random_batches",
    "shard",
]
