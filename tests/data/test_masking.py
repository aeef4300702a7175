"""Masking statistics, specials and padding, determinism, whole words, and the dynamic/static seeding."""

from __future__ import annotations

import pytest
import torch

from rtoolkit.data.masking import MaskingConfig, collate_masked, mask_tokens, sequence_seed

V, MASK = 1000, 999
SPECIALS = (0, 1, 2, 3, MASK)


def _batch(rows=64, length=512, pad_from=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, MASK, (rows, length), generator=g)
    ids[:, 0] = 0
    ids[:, pad_from - 1] = 2
    ids[:, pad_from:] = 1
    return ids


def _mask(ids, seed=0, **config):
    return mask_tokens(
        ids,
        generator=torch.Generator().manual_seed(seed),
        mask_token_id=MASK,
        special_ids=SPECIALS,
        vocab_size=V,
        config=MaskingConfig(**config),
    )


def test_80_10_10_split_and_15_percent():
    ids = _batch()
    masked, labels = _mask(ids)
    chosen = labels.ne(-100)
    n_candidates = (~torch.isin(ids, torch.tensor(SPECIALS))).sum(dim=1)
    # Probabilistic rounding: each row has floor or ceil of 15% of its candidates.
    per_row = chosen.sum(dim=1).double()
    assert torch.all((per_row - 0.15 * n_candidates).abs() < 1.0)
    total = chosen.sum().item()
    as_mask = (masked.eq(MASK) & chosen).sum().item() / total
    unchanged = (masked.eq(ids) & chosen).sum().item() / total
    replaced = (masked.ne(ids) & masked.ne(MASK) & chosen).sum().item() / total
    assert as_mask == pytest.approx(0.8, abs=0.02)
    # A random replacement equals the original 1 time in ~995; count those as "unchanged".
    assert unchanged == pytest.approx(0.1, abs=0.015)
    assert replaced == pytest.approx(0.1, abs=0.015)
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])  # nothing outside the chosen positions moves


def test_specials_and_padding_never_chosen_nor_drawn():
    ids = _batch()
    masked, labels = _mask(ids, seed=3, mask_prob=0.9)
    special = torch.isin(ids, torch.tensor(SPECIALS))
    assert labels[special].eq(-100).all()
    assert torch.equal(masked[special], ids[special])
    random_replacements = masked[labels.ne(-100) & masked.ne(MASK) & masked.ne(ids)]
    assert not torch.isin(random_replacements, torch.tensor(SPECIALS)).any()
    assert ids.eq(_batch()).all()  # input untouched


def test_same_seed_same_pattern_other_seed_other_pattern():
    ids = _batch(rows=4)
    a, la = _mask(ids, seed=7)
    b, lb = _mask(ids, seed=7)
    c, lc = _mask(ids, seed=8)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(la, lc)


def test_dynamic_differs_across_epochs_static_repeats():
    seq = _batch(rows=1)[0]
    kwargs = dict(pad_token_id=1, mask_token_id=MASK, special_ids=SPECIALS, vocab_size=V)
    dynamic = [collate_masked([seq], [sequence_seed(0, epoch, 5)], **kwargs)["labels"] for epoch in range(3)]
    assert not torch.equal(dynamic[0], dynamic[1]) and not torch.equal(dynamic[1], dynamic[2])
    # Static masking keys the seed on the copy, not the epoch: every epoch sees the same pattern.
    static = [collate_masked([seq], [sequence_seed(0, 0, 5)], **kwargs)["labels"] for _ in range(3)]
    assert torch.equal(static[0], static[1]) and torch.equal(static[1], static[2])
    assert sequence_seed(0, 1, 2) != sequence_seed(0, 2, 1)


def test_collate_pads_and_masks_each_sequence_independently():
    seqs = [torch.tensor([0, 10, 11, 12, 13, 2]), torch.tensor([0, 20, 21, 2])]
    kwargs = dict(
        pad_token_id=1,
        mask_token_id=MASK,
        special_ids=SPECIALS,
        vocab_size=V,
        config=MaskingConfig(mask_prob=0.5),
    )
    batch = collate_masked(seqs, [11, 12], **kwargs)
    assert batch["input_ids"].shape == (2, 6)
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    assert batch["input_ids"][1, 4:].tolist() == [1, 1]
    assert batch["labels"][1, 4:].tolist() == [-100, -100]
    alone = collate_masked([seqs[1]], [12], **kwargs)
    assert torch.equal(alone["labels"][0], batch["labels"][1, :4])  # independent of its batch-mates
    assert "attention_mask" not in alone  # no padding: no mask, so attention may use the flash kernel
    assert set(collate_masked([seqs[0], seqs[0]], [1, 2], **kwargs)) == {"input_ids", "labels"}


def test_whole_word_masking_takes_every_piece_of_a_word(tokenizer):
    text = "Unquestionably the extraordinarily melancholic whalemen circumnavigated archipelagos. " * 8
    ids = torch.tensor(tokenizer.encode(text, max_length=None))
    starts = tokenizer.word_starts()
    masked, labels = mask_tokens(
        ids,
        generator=torch.Generator().manual_seed(0),
        mask_token_id=tokenizer.mask_token_id,
        special_ids=tokenizer.special_ids,
        vocab_size=tokenizer.vocab_size,
        config=MaskingConfig(whole_word=True, mask_prob=0.3),
        word_starts=starts,
    )
    chosen = labels.ne(-100).tolist()
    words, current = [], []
    for pos, token in enumerate(ids.tolist()):
        if token in tokenizer.special_ids:
            continue
        if (starts[token] or not current) and current:
            words.append(current)
            current = []
        current.append(pos)
    words.append(current)
    assert any(len(w) > 1 for w in words)
    picked = 0
    for word in words:
        states = {chosen[p] for p in word}
        assert len(states) == 1, f"word at {word} partly masked"
        picked += states.pop()
    assert 0 < picked < len(words)
    with pytest.raises(ValueError, match="word_starts"):
        _mask(ids, whole_word=True)


def test_bad_probabilities_raise():
    with pytest.raises(ValueError, match="mask_prob"):
        MaskingConfig(mask_prob=1.5)
    with pytest.raises(ValueError, match="<= 1"):
        MaskingConfig(random_token_prob=0.6, leave_unmasked_prob=0.6)
