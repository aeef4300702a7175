"""build_optimizer's parameter groups and the linear warmup/decay schedule."""

from __future__ import annotations

import pytest
import torch

from rtoolkit.model import RobertaForMaskedLM
from rtoolkit.train.optim import build_optimizer, linear_schedule, warmup_from_ratio


def test_no_weight_decay_on_biases_and_layernorm(tiny_config):
    model = RobertaForMaskedLM(tiny_config)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.01)
    decay, skip = opt.param_groups
    assert decay["weight_decay"] == 0.01 and skip["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in skip["params"]}
    assert "roberta.embeddings.word_embeddings.weight" in decayed
    assert "roberta.encoder.layer.0.attention.self.query.weight" in decayed
    assert "roberta.encoder.layer.0.output.LayerNorm.weight" in skipped
    assert "lm_head.layer_norm.weight" in skipped and "lm_head.bias" in skipped
    assert all(n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n for n in skipped)
    # Every parameter exactly once (the tied decoder weight is the word embedding).
    assert len(decayed) + len(skipped) == len(list(model.parameters()))
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6
    assert opt.defaults["fused"]  # the fused kernel on CPU too


def test_bad_hyperparameters_raise(tiny_config):
    model = RobertaForMaskedLM(tiny_config)
    with pytest.raises(ValueError, match="learning rate"):
        build_optimizer(model, lr=0.0, weight_decay=0.01)
    with pytest.raises(ValueError, match="weight_decay"):
        build_optimizer(model, lr=1e-3, weight_decay=-1)


def test_linear_schedule_warms_up_then_decays_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1.0)
    sched = linear_schedule(opt, warmup_steps=4, total_steps=12)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[4:] == sorted(lrs[4:], reverse=True)
    assert lrs[-1] == pytest.approx(1 / 8)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)  # after the last step


def test_schedule_validation_and_ratio():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        linear_schedule(opt, warmup_steps=20, total_steps=10)
    assert warmup_from_ratio(2036, 0.06) == 122  # fairseq's RTE recipe
    with pytest.raises(ValueError):
        warmup_from_ratio(100, 1.5)
