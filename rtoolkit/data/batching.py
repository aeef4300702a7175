"""Batch plans that keep padding out of the hot path, and the collation that drops a mask nobody needs.

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

from collections.abc import Sequence

import numpy as np
import torch


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


__all__ = ["drop_unneeded_mask", "length_grouped_batches", "padding_fraction", "random_batches"]
