"""Masked-LM corruption as pure functions: tensors and an explicit `torch.Generator` in, new tensors out.

BERT/RoBERTa recipe: choose `mask_prob` (15%) of the non-special tokens; of those, 80% become `<mask>`, 10% a
random non-special token and 10% stay unchanged; labels hold the original id at chosen positions and -100
elsewhere. As in fairseq, the number chosen per sequence is `floor(mask_prob * n + U[0, 1))` (probabilistic
rounding) and positions are drawn without replacement; unlike fairseq, special tokens (`<s>`, `</s>`, `<pad>`)
are never chosen (as in Hugging Face's collator).

Dynamic masking (RoBERTa) draws a fresh pattern each time a sequence is fed, from a generator seeded with
`sequence_seed(seed, epoch, index)`, so every pattern can be reproduced (a resumed run sees the same masks, and a
sequence gets the same mask whichever process or batch it lands in). Static masking (BERT) uses the copy number in
place of the epoch (see rtoolkit.data.corpus).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rtoolkit.model import IGNORE_INDEX


@dataclass(frozen=True)
class MaskingConfig:
    """How tokens are corrupted for masked-LM training."""

    mask_prob: float = 0.15  # share of non-special tokens (or words) chosen
    random_token_prob: float = 0.1  # share of chosen tokens replaced by a random non-special token
    leave_unmasked_prob: float = 0.1  # share of chosen tokens left as they are
    whole_word: bool = False  # choose whole words (a word starts at a token beginning with 'Ġ')

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in [0, 1], got {self.mask_prob}")
        for name in ("random_token_prob", "leave_unmasked_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.random_token_prob + self.leave_unmasked_prob > 1.0:
            raise ValueError(
                f"random_token_prob + leave_unmasked_prob must be <= 1 (the rest become <mask>), got "
                f"{self.random_token_prob} + {self.leave_unmasked_prob}"
            )


def sequence_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed derived from (seed, epoch, index); the same triple always gives the same seed."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    generator: torch.Generator,
    mask_token_id: int,
    special_ids: Sequence[int],
    vocab_size: int,
    config: MaskingConfig = MaskingConfig(),
    word_starts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt a batch for masked-LM training; `input_ids` is not modified.

    Args:
        input_ids: (B, T) or (T,) token ids; padding and specials are never chosen.
        generator: the only source of randomness (CPU generator).
        mask_token_id: id of `<mask>`.
        special_ids: ids never chosen nor drawn as random replacements (`<s>`, `<pad>`, `</s>`, `<unk>`, `<mask>`).
        vocab_size: random replacements are drawn uniformly from the non-special ids below this.
        config: probabilities and whole-word masking.
        word_starts: (V,) bool, True for word-initial ids (`Tokenizer.word_starts()`); needed for whole_word.

    Returns:
        (masked_ids, labels), both shaped like `input_ids`: labels are the original ids at chosen positions and
        -100 elsewhere.
    """
    squeeze = input_ids.dim() == 1
    ids = input_ids.unsqueeze(0) if squeeze else input_ids
    if ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T) or (T,), got shape {tuple(input_ids.shape)}")
    ids = ids.to("cpu", torch.long)
    B, T = ids.shape
    specials = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
    candidate = ~torch.isin(ids, specials)  # (B, T)

    if config.whole_word:
        if word_starts is None:
            raise ValueError("whole-word masking needs word_starts (Tokenizer.word_starts())")
        previous = torch.cat([torch.zeros(B, 1, dtype=torch.bool), candidate[:, :-1]], dim=1)
        # A word begins at a 'Ġ' token or right after a special token (e.g. the first token after <s>).
        unit_start = candidate & (word_starts.to(torch.bool)[ids] | ~previous)  # (B, T)
    else:
        unit_start = candidate
    n_units = unit_start.sum(dim=1)  # (B,)
    n_chosen = torch.floor(
        config.mask_prob * n_units.double() + torch.rand(B, generator=generator, dtype=torch.float64)
    ).long()
    n_chosen = torch.minimum(n_chosen, n_units)
    # Without replacement: rank units by a random score and keep the n_chosen lowest of each row.
    scores = torch.rand(B, T, generator=generator)
    scores = scores.masked_fill(~unit_start, 2.0)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # (B, T) rank of each position within its row
    chosen_start = unit_start & (ranks < n_chosen[:, None])
    if config.whole_word:
        positions = torch.arange(T).expand(B, T)
        start_of = torch.where(unit_start, positions, torch.full_like(positions, -1)).cummax(dim=1).values
        chosen = candidate & chosen_start.gather(1, start_of.clamp(min=0)) & (start_of >= 0)
    else:
        chosen = chosen_start

    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    decision = torch.rand(B, T, generator=generator)
    mask_share = 1.0 - config.random_token_prob - config.leave_unmasked_prob
    to_mask = chosen & (decision < mask_share)
    to_random = chosen & (decision >= mask_share) & (decision < mask_share + config.random_token_prob)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[specials[specials < vocab_size]] = False
    pool = allowed.nonzero().squeeze(1)  # (V - n_special,)
    random_ids = pool[torch.randint(len(pool), (B, T), generator=generator)]
    masked = torch.where(to_mask, torch.full_like(ids, mask_token_id), ids)
    masked = torch.where(to_random, random_ids, masked)
    if squeeze:
        return masked[0], labels[0]
    return masked, labels


def collate_masked(
    sequences: Sequence[torch.Tensor],
    seeds: Sequence[int],
    *,
    pad_token_id: int,
    mask_token_id: int,
    special_ids: Sequence[int],
    vocab_size: int,
    config: MaskingConfig = MaskingConfig(),
    word_starts: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Mask each 1-D sequence with its own seeded generator, then right-pad into a batch.

    Returns {"input_ids": (B, T), "labels": (B, T)} with T the longest sequence, plus "attention_mask": (B, T)
    when the sequences differ in length. A batch without padding carries no mask, so the model passes
    `attn_mask=None` to scaled_dot_product_attention and CUDA may use the flash kernel (decided here, on the host,
    with no device sync).
    """
    if len(sequences) != len(seeds):
        raise ValueError(f"got {len(sequences)} sequences but {len(seeds)} seeds")
    if not sequences:
        raise ValueError("cannot collate an empty batch")
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (seq, seed) in enumerate(zip(sequences, seeds, strict=True)):
        generator = torch.Generator().manual_seed(seed)
        masked, lab = mask_tokens(
            seq,
            generator=generator,
            mask_token_id=mask_token_id,
            special_ids=special_ids,
            vocab_size=vocab_size,
            config=config,
            word_starts=word_starts,
        )
        input_ids[row, : len(seq)] = masked
        labels[row, : len(seq)] = lab
        attention_mask[row, : len(seq)] = 1
    if all(len(s) == width for s in sequences):
        return {"input_ids": input_ids, "labels": labels}
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


__all__ = ["IGNORE_INDEX", "MaskingConfig", "collate_masked", "mask_tokens", "sequence_seed"]
