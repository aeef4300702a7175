"""The shared training machinery: accumulation, clipping, NaN handling, evaluation, checkpoints, metrics."""

from __future__ import annotations

import json

import pytest
import torch

from rtoolkit.model import RobertaForMaskedLM
from rtoolkit.train import loop
from rtoolkit.train.loop import (
    MetricsWriter,
    evaluate,
    latest_checkpoint,
    list_checkpoints,
    read_metrics,
    resume,
    save_checkpoint,
    train_step,
)
from rtoolkit.train.optim import build_optimizer, linear_schedule


def _batch(config, rows: int, seq: int, seed: int, mask_every: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, config.vocab_size - 1, (rows, seq), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, ::mask_every] = ids[:, ::mask_every]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _cat(*batches):
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_accumulation_equals_one_big_batch(tiny_config):
    a = _batch(tiny_config, 3, 16, seed=1, mask_every=3)  # different target counts per micro-batch
    b = _batch(tiny_config, 2, 16, seed=2, mask_every=5)
    torch.manual_seed(0)
    m1, m2 = RobertaForMaskedLM(tiny_config), RobertaForMaskedLM(tiny_config)
    m2.load_state_dict(m1.state_dict())
    o1 = build_optimizer(m1, lr=1e-3, weight_decay=0.01)
    o2 = build_optimizer(m2, lr=1e-3, weight_decay=0.01)
    r1 = train_step(m1, [a, b], optimizer=o1)
    r2 = train_step(m2, [_cat(a, b)], optimizer=o2)
    assert r1.count == r2.count == int(a["labels"].ne(-100).sum() + b["labels"].ne(-100).sum())
    assert r1.loss == pytest.approx(r2.loss, abs=1e-6)
    assert r1.grad_norm == pytest.approx(r2.grad_norm, rel=1e-5)
    p1, p2 = _params(m1), _params(m2)
    for name in p1:
        torch.testing.assert_close(p1[name], p2[name], atol=1e-6, rtol=1e-5)


def test_clipping_bounds_the_update_and_reports_the_raw_norm(tiny_config):
    batch = _batch(tiny_config, 2, 16, seed=3, mask_every=2)
    model = RobertaForMaskedLM(tiny_config)
    before = _params(model)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    result = train_step(model, [batch], optimizer=opt, clip_norm=1e-3)
    assert result.grad_norm > 1e-3
    delta = torch.sqrt(sum(((p - before[n]) ** 2).sum() for n, p in _params(model).items()))
    assert delta.item() == pytest.approx(1e-3, rel=1e-3)  # SGD lr 1: the step is the clipped gradient


def test_nonfinite_loss_leaves_weights_untouched(tiny_config):
    model = RobertaForMaskedLM(tiny_config)
    with torch.no_grad():
        model.lm_head.dense.weight[0, 0] = float("nan")
    before = _params(model)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.01)
    sched = linear_schedule(opt, warmup_steps=1, total_steps=10)
    result = train_step(model, [_batch(tiny_config, 2, 8, 4, 2)], optimizer=opt, scheduler=sched)
    assert not result.finite
    assert sched.last_epoch == 0  # the schedule did not advance
    after = _params(model)
    for name in before:
        torch.testing.assert_close(after[name], before[name], equal_nan=True)


def _three_steps(config, precision):
    torch.manual_seed(0)
    model = RobertaForMaskedLM(config)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.01)
    scaler = loop.make_grad_scaler(precision, "cpu")
    losses = [
        train_step(
            model, [_batch(config, 4, 16, seed, 3)], optimizer=opt, scaler=scaler, precision=precision
        ).loss
        for seed in (5, 6, 7)
    ]
    return losses, _params(model)


@pytest.mark.parametrize(
    ("precision", "loss_tol", "update_tol"), [("bf16", 1e-3, 0.05), ("fp16", 1e-4, 0.01)]
)
def test_mixed_precision_steps_track_fp32(tiny_config, precision, loss_tol, update_tol):
    """Three steps under bf16 (8-bit mantissa) or fp16 (11-bit) autocast stay close to fp32 (measured on CPU: loss
    within 2.5e-5 / 8e-6 relative, weight updates within 1.8% / 0.4% in L2), yet really ran in low precision."""
    torch.manual_seed(0)
    start = _params(RobertaForMaskedLM(tiny_config))  # the initial weights _three_steps starts from
    ref_losses, ref_params = _three_steps(tiny_config, "fp32")
    losses, params = _three_steps(tiny_config, precision)
    assert losses != ref_losses  # autocast did something
    for a, b in zip(losses, ref_losses, strict=True):
        assert abs(a - b) <= loss_tol * abs(b), (losses, ref_losses)
    diff = sum(((params[n] - start[n]) - (ref_params[n] - start[n])).pow(2).sum() for n in params) ** 0.5
    update = sum((ref_params[n] - start[n]).pow(2).sum() for n in params) ** 0.5
    assert 0 < float(diff / update) <= update_tol
    with pytest.raises(ValueError, match="precision"):
        loop.autocast("fp8", "cpu")
    assert loop.make_grad_scaler("bf16", "cpu") is None


def test_fp16_grad_scaler_skips_a_step_with_an_inf_gradient(tiny_config):
    model = RobertaForMaskedLM(tiny_config)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.01)
    scaler = loop.make_grad_scaler("fp16", "cpu")
    batch = _batch(tiny_config, 2, 8, 6, 2)
    result = train_step(model, [batch], optimizer=opt, scaler=scaler, precision="fp16")
    assert result.finite and not result.overflow and scaler.get_scale() == 2.0**16
    before = _params(model)
    hook = model.roberta.encoder.layer[0].output.dense.weight.register_hook(lambda g: g * float("inf"))
    result = train_step(model, [batch], optimizer=opt, scaler=scaler, precision="fp16")
    hook.remove()
    assert result.overflow and scaler.get_scale() == 2.0**15  # skipped, and the scale halved
    assert all(torch.equal(p, before[n]) for n, p in _params(model).items())  # no weight moved
    result = train_step(model, [batch], optimizer=opt, scaler=scaler, precision="fp16")
    assert result.finite and not result.overflow
    assert any(not torch.equal(p, before[n]) for n, p in _params(model).items())  # training goes on


def test_evaluate_weights_batches_by_target_count(tiny_config):
    model = RobertaForMaskedLM(tiny_config)
    a = _batch(tiny_config, 3, 16, seed=1, mask_every=3)
    b = _batch(tiny_config, 2, 16, seed=2, mask_every=7)
    split = evaluate(model, [a, b], return_logits=True)
    whole = evaluate(model, [_cat(a, b)])
    assert split.count == whole.count
    assert split.loss == pytest.approx(whole.loss, rel=1e-5)
    assert split.logits.shape == (split.count, tiny_config.vocab_size)
    assert split.labels.shape == (split.count,)
    assert split.perplexity == pytest.approx(torch.tensor(split.loss).exp().item(), rel=1e-6)
    assert model.training  # mode restored


def _train_few(model, opt, sched, config, steps, start=0):
    losses = []
    for s in range(start, start + steps):
        losses.append(
            train_step(model, [_batch(config, 2, 16, 100 + s, 3)], optimizer=opt, scheduler=sched).loss
        )
    return losses


def test_checkpoint_roundtrip_restores_everything(tmp_path, tokenizer):
    from rtoolkit.config import RobertaConfig

    config = RobertaConfig.tiny(vocab_size=tokenizer.vocab_size)  # dropout on: the RNG state matters
    torch.manual_seed(1)
    model = RobertaForMaskedLM(config)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.01)
    sched = linear_schedule(opt, warmup_steps=2, total_steps=20)
    _train_few(model, opt, sched, config, 3)
    ckpt = save_checkpoint(
        tmp_path,
        step=3,
        model=model,
        optimizer=opt,
        scheduler=sched,
        tokenizer=tokenizer,
        extra={"data": {"epoch": 0}},
    )
    assert ckpt.name == "step-000003"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_state.pt"):
        assert (ckpt / name).is_file()
    expected = _train_few(model, opt, sched, config, 3, start=3)

    torch.manual_seed(99)
    fresh = RobertaForMaskedLM(config)
    opt2 = build_optimizer(fresh, lr=1e-3, weight_decay=0.01)
    sched2 = linear_schedule(opt2, warmup_steps=2, total_steps=20)
    state = resume(latest_checkpoint(tmp_path), model=fresh, optimizer=opt2, scheduler=sched2)
    assert state["step"] == 3 and state["data"] == {"epoch": 0}
    assert _train_few(fresh, opt2, sched2, config, 3, start=3) == expected  # bit-exact
    # The checkpoint is a plain HF model folder.
    reloaded = RobertaForMaskedLM.from_pretrained(ckpt)
    assert reloaded.config.vocab_size == config.vocab_size


def test_keep_last_and_interrupted_save_keeps_previous(tmp_path, tiny_config, monkeypatch):
    model = RobertaForMaskedLM(tiny_config)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.01)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step=step, model=model, optimizer=opt, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002", "step-000003"]

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(loop, "save_train_state", crash)  # the weights are written, then the process dies
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, step=4, model=model, optimizer=opt, keep_last=2)
    assert latest_checkpoint(tmp_path).name == "step-000003"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
    monkeypatch.undo()
    state = resume(latest_checkpoint(tmp_path), model=RobertaForMaskedLM(tiny_config), optimizer=opt)
    assert state["step"] == 3


def test_metrics_writer_appends_and_truncates_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as writer:
        for step in range(1, 6):
            writer.write({"step": step, "loss": 1.0 / step})
    with MetricsWriter(path, truncate_after_step=3) as writer:
        writer.write({"step": 4, "loss": 0.5})
    records = read_metrics(path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["loss"] == 0.5
    path.write_text(path.read_text() + "{oops\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:5"):
        read_metrics(path)
    assert json.loads(path.read_text().splitlines()[0])["step"] == 1


def test_an_interrupted_save_is_repaired_when_the_next_run_starts(tmp_path):
    """What a kill -9 mid-save leaves in a run folder: a half-written checkpoint and, without an atomic exchange, a
    final/ that was moved aside. The next run (or --resume) removes the one and brings the other back."""
    from rtoolkit.train.loop import list_checkpoints, recover_run_folder

    out = tmp_path / "run"
    (out / "checkpoints" / "step-000002").mkdir(parents=True)
    (out / "checkpoints" / "step-000002" / "train_state.pt").write_bytes(b"state")
    half = out / "checkpoints" / ".step-000004.tmp-abc123"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"half")
    moved = out / ".final.old-4242"
    moved.mkdir()
    (moved / "config.json").write_text("{}")
    recover_run_folder(out)
    assert not half.exists() and [p.name for p in list_checkpoints(out)] == ["step-000002"]
    assert (out / "final" / "config.json").read_text() == "{}" and not moved.exists()


def test_batch_count_weights_micro_batches_by_their_targets():
    ids = torch.zeros(3, 5, dtype=torch.long)
    mlm = {"input_ids": ids, "labels": torch.tensor([[-100, 4, -100, 7, -100]] * 3)}
    assert loop.batch_count(mlm) == 6  # masked tokens only
    words = {"input_ids": ids, "labels": torch.tensor([[-100, 1, 0, -100, 2]] * 3)}
    assert loop.batch_count(words) == 9  # labelled words (token classification)
    spans = {
        "input_ids": ids,
        "start_positions": torch.tensor([0, 3, 1]),
        "end_positions": torch.tensor([0, 4, 1]),
    }
    assert loop.batch_count(spans) == 3  # question answering: a loss averaged over rows
