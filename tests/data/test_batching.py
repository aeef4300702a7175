"""Padding-free finetuning batches: length-grouped plans on real SST-2 sentences, and results equal to the padded path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rtoolkit.config import RobertaConfig
from rtoolkit.data.batching import (
    drop_unneeded_mask,
    length_grouped_batches,
    padding_fraction,
    random_batches,
)
from rtoolkit.data.glue import read_glue
from rtoolkit.model import RobertaForSequenceClassification
from rtoolkit.train.finetune import collate
from rtoolkit.train.loop import train_step
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def sst2(tokenizer):
    """(token ids, labels) of the 67,349 real SST-2 training sentences."""
    data = read_glue("sst2", shared_data("sst2"), "train")
    ids = tokenizer.encode_batch(data.texts, None, max_length=128)
    return ids, data.labels


def test_plan_is_a_deterministic_shuffle_of_every_row(sst2):
    lengths = [len(x) for x in sst2[0]]
    a = length_grouped_batches(lengths, batch_size=32, seed=1, epoch=0)
    assert a == length_grouped_batches(lengths, batch_size=32, seed=1, epoch=0)
    assert a != length_grouped_batches(lengths, batch_size=32, seed=1, epoch=1)
    assert sorted(r for b in a for r in b) == list(range(len(lengths)))
    assert len(a) == -(-len(lengths) // 32) and sorted(len(b) for b in a)[1:] == [32] * (len(a) - 1)
    # Batches come in random order, not sorted by length.
    widths = [max(lengths[r] for r in b) for b in a]
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)
    # A too-small last batch is dropped on request (fewer rows than processes to split it over).
    assert all(
        len(b) == 32
        for b in length_grouped_batches(lengths[:100], batch_size=32, seed=1, epoch=0, min_rows=5)
    )


def test_grouped_batches_are_nearly_free_of_padding_on_sst2(sst2):
    lengths = [len(x) for x in sst2[0]]
    grouped = length_grouped_batches(lengths, batch_size=32, seed=1, epoch=0)
    shuffled = random_batches(len(lengths), batch_size=32, seed=1, epoch=0)
    assert padding_fraction(lengths, shuffled) > 0.5  # most of a random batch is padding (measured 68%)
    assert padding_fraction(lengths, grouped) < 0.01  # measured 0.1%
    no_padding = [b for b in grouped if len({lengths[r] for r in b}) == 1]
    assert len(no_padding) > 0.9 * len(grouped)


def test_a_batch_without_padding_carries_no_mask(tokenizer, sst2):
    ids, labels = sst2
    same = [i for i in range(len(ids)) if len(ids[i]) == len(ids[0])][:4]
    batch = collate(tokenizer, [ids[i] for i in same], [labels[i] for i in same])
    assert set(batch) == {"input_ids", "labels"}
    mixed = collate(tokenizer, [ids[0], ids[0] + ids[0]], [0, 1])
    assert mixed["attention_mask"].tolist()[0].count(0) == len(ids[0])
    gpu_like = {"attention_mask": torch.ones(2, 3, dtype=torch.long, device="meta")}
    assert drop_unneeded_mask(gpu_like) is gpu_like  # never inspects a tensor off the host


def test_grouped_path_equals_the_padded_path(tokenizer, sst2):
    """The same 32 sentences: logits per sentence, the loss and the updated weights agree whether they go as one
    padded batch (the old path) or as unpadded same-length micro-batches (the new one)."""
    ids, labels = sst2
    rows = list(range(32))
    config = RobertaConfig.tiny(
        vocab_size=tokenizer.vocab_size,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    padded_model = RobertaForSequenceClassification(config)
    grouped_model = RobertaForSequenceClassification(config)
    grouped_model.load_state_dict(padded_model.state_dict())

    padded = collate(tokenizer, [ids[r] for r in rows], [labels[r] for r in rows])
    assert "attention_mask" in padded
    by_length: dict[int, list[int]] = {}
    for r in rows:
        by_length.setdefault(len(ids[r]), []).append(r)
    groups = [collate(tokenizer, [ids[r] for r in g], [labels[r] for r in g]) for g in by_length.values()]
    assert all("attention_mask" not in g for g in groups)

    with torch.no_grad():
        full = padded_model.eval()(padded["input_ids"], padded["attention_mask"]).logits
        order = [r for g in by_length.values() for r in g]
        parts = torch.cat([grouped_model.eval()(g["input_ids"]).logits for g in groups])
    torch.testing.assert_close(parts, full[order], atol=1e-5, rtol=0)

    step = dict(weight_decay=0.0, lr=1e-3)
    opt_a = torch.optim.AdamW(padded_model.parameters(), **step)
    opt_b = torch.optim.AdamW(grouped_model.parameters(), **step)
    a = train_step(padded_model, [padded], optimizer=opt_a)
    b = train_step(grouped_model, groups, optimizer=opt_b)
    assert b.loss == pytest.approx(a.loss, abs=1e-6) and b.count == a.count == 32
    for (name, p), q in zip(padded_model.named_parameters(), grouped_model.parameters(), strict=True):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=0, msg=name)


def test_bad_batch_size_is_an_error():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        length_grouped_batches([3, 4], batch_size=0, seed=0, epoch=0)
    assert padding_fraction(np.array([3, 4]), []) == 0.0
