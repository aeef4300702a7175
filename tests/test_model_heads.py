"""The QA, multiple-choice and token-classification heads: parity with transformers both ways (the folders
interchange with no missing or unexpected keys), and their losses."""

import pytest
import torch
import torch.nn.functional as F

from rtoolkit import RobertaConfig
from rtoolkit.model import (
    IGNORE_INDEX,
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForTokenClassification,
)
from tests.test_model import SMALL, padded_batch

transformers = pytest.importorskip("transformers")

HEADS = [
    (RobertaForQuestionAnswering, "AutoModelForQuestionAnswering", {}),
    (RobertaForMultipleChoice, "AutoModelForMultipleChoice", {}),
    (RobertaForTokenClassification, "AutoModelForTokenClassification", {"num_labels": 5}),
]


def inputs(model) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = padded_batch()  # (3, 12), two padded rows
    if isinstance(model, RobertaForMultipleChoice) or type(model).__name__.endswith("MultipleChoice"):
        return ids.view(1, 3, 12), mask.view(1, 3, 12)  # one question, three options
    return ids, mask


def logits(output) -> torch.Tensor:
    if hasattr(output, "start_logits"):
        return torch.stack([output.start_logits, output.end_logits], dim=-1)
    return output.logits


@pytest.mark.parametrize(("ours", "auto_name", "extra"), HEADS, ids=[h[1] for h in HEADS])
def test_loads_transformers_head_with_equal_logits(tmp_path, ours, auto_name, extra):
    reference = (
        getattr(transformers, auto_name).from_config(transformers.RobertaConfig(**SMALL, **extra)).eval()
    )
    reference.save_pretrained(tmp_path)
    model = ours.from_pretrained(tmp_path).eval()
    ids, mask = inputs(model)
    with torch.no_grad():
        expected, got = logits(reference(input_ids=ids, attention_mask=mask)), logits(model(ids, mask))
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize(("ours", "auto_name", "extra"), HEADS, ids=[h[1] for h in HEADS])
def test_transformers_loads_our_head_with_equal_logits(tmp_path, ours, auto_name, extra):
    model = ours(RobertaConfig(**SMALL, **extra)).eval()
    with torch.no_grad():  # non-trivial biases and LayerNorms, so a missed tensor would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(tmp_path)
    loaded, info = getattr(transformers, auto_name).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, mask = inputs(model)
    with torch.no_grad():
        diff = (
            (logits(loaded.eval()(input_ids=ids, attention_mask=mask)) - logits(model(ids, mask))).abs().max()
        )
    assert diff.item() <= 1e-5


def test_head_losses_match_their_definitions():
    torch.manual_seed(0)
    ids, mask = padded_batch()
    qa = RobertaForQuestionAnswering(RobertaConfig(**SMALL)).eval()
    start, end = torch.tensor([1, 2, 40]), torch.tensor([3, 2, 40])  # 40: beyond the 12 tokens, ignored
    out = qa(ids, mask, start_positions=start, end_positions=end)
    expected = (
        F.cross_entropy(out.start_logits, torch.tensor([1, 2, 12]), ignore_index=12)
        + F.cross_entropy(out.end_logits, torch.tensor([3, 2, 12]), ignore_index=12)
    ) / 2
    assert torch.allclose(out.loss, expected)

    tagger = RobertaForTokenClassification(RobertaConfig(**SMALL, num_labels=5)).eval()
    labels = torch.randint(0, 5, ids.shape)
    labels[mask == 0] = IGNORE_INDEX
    out = tagger(ids, mask, labels=labels)
    keep = labels != IGNORE_INDEX
    assert torch.allclose(out.loss, F.cross_entropy(out.logits[keep], labels[keep]))

    chooser = RobertaForMultipleChoice(RobertaConfig(**SMALL)).eval()
    out = chooser(ids.view(1, 3, 12), mask.view(1, 3, 12), labels=torch.tensor([2]))
    assert out.logits.shape == (1, 3)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, torch.tensor([2])))
    with pytest.raises(ValueError, match=r"\(batch, choices, sequence\)"):
        chooser(ids, mask)
