"""Parity with transformers (the oracle) in both directions, and the masked-only LM loss."""

import pytest
import torch
import torch.nn.functional as F

from rtoolkit import RobertaConfig, RobertaForMaskedLM, RobertaForSequenceClassification, RobertaModel
from rtoolkit.model import create_position_ids

transformers = pytest.importorskip("transformers")

SMALL = dict(
    vocab_size=300,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=66,
)


def padded_batch(vocab_size: int = 300, pad: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, vocab_size, (3, 12), generator=g)
    ids[:, 0], ids[0, -1] = 0, 2
    ids[1, 7:], ids[2, 4:] = pad, pad  # two padded rows
    ids[1, 6], ids[2, 3] = 2, 2
    return ids, ids.ne(pad).long()


def hf_model(cls_name: str, **extra):
    config = transformers.RobertaConfig(**SMALL, **extra)
    return getattr(transformers, cls_name)(config).eval()


@pytest.mark.parametrize(
    ("hf_cls", "ours", "extra"),
    [
        ("RobertaForMaskedLM", RobertaForMaskedLM, {}),
        ("RobertaForSequenceClassification", RobertaForSequenceClassification, {"num_labels": 3}),
        ("RobertaForSequenceClassification", RobertaForSequenceClassification, {"num_labels": 1}),
    ],
)
def test_loads_transformers_checkpoint_with_equal_logits(tmp_path, hf_cls, ours, extra):
    reference = hf_model(hf_cls, **extra)
    reference.save_pretrained(tmp_path)
    model = ours.from_pretrained(tmp_path)
    ids, mask = padded_batch()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits
        got = model(ids, mask).logits
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    ("ours", "auto_name", "extra"),
    [
        (RobertaForMaskedLM, "AutoModelForMaskedLM", {}),
        (
            RobertaForSequenceClassification,
            "AutoModelForSequenceClassification",
            {"num_labels": 2, "id2label": {0: "negative", 1: "positive"}},
        ),
    ],
)
def test_transformers_loads_our_checkpoint_with_equal_logits(tmp_path, ours, auto_name, extra):
    model = ours(RobertaConfig(**SMALL, **extra)).eval()
    with torch.no_grad():  # non-trivial biases and LayerNorms, so a missed tensor would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(tmp_path)
    loaded, info = getattr(transformers, auto_name).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    loaded.eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        diff = (
            (loaded(input_ids=ids, attention_mask=mask).logits - model(ids, mask).logits).abs().max().item()
        )
    assert diff <= 1e-5
    if "id2label" in extra:
        assert loaded.config.id2label == {0: "negative", 1: "positive"}


def test_bare_encoder_matches_transformers(tmp_path):
    reference = transformers.RobertaModel(transformers.RobertaConfig(**SMALL)).eval()
    reference.save_pretrained(tmp_path)
    model = RobertaModel.from_pretrained(tmp_path)
    ids, mask = padded_batch()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask)
        got = model(ids, mask)
    assert (got.last_hidden_state - expected.last_hidden_state).abs().max().item() <= 1e-5
    assert (got.pooler_output - expected.pooler_output).abs().max().item() <= 1e-5


def test_position_ids_follow_fairseq():
    ids = torch.tensor([[0, 5, 6, 2, 1, 1], [0, 7, 2, 1, 1, 1]])
    assert create_position_ids(ids, padding_idx=1).tolist() == [[2, 3, 4, 5, 1, 1], [2, 3, 4, 1, 1, 1]]


def test_lm_decoder_is_tied_to_word_embeddings(tiny_config):
    model = RobertaForMaskedLM(tiny_config)
    assert model.lm_head.decoder.weight is model.roberta.embeddings.word_embeddings.weight
    assert model.lm_head.decoder.bias is model.lm_head.bias


def test_masked_only_loss_equals_full_logits_loss(tiny_config):
    model = RobertaForMaskedLM(tiny_config).eval()
    ids = torch.randint(4, tiny_config.vocab_size, (4, 20))
    labels = torch.full_like(ids, -100)
    picked = torch.rand(ids.shape) < 0.15
    picked[0, 3] = True
    labels[picked] = ids[picked]
    with torch.no_grad():
        fast = model(ids, labels=labels)
        full = model(ids).logits  # (B, T, V), the slow way
    slow_loss = F.cross_entropy(full.view(-1, full.size(-1)), labels.view(-1), ignore_index=-100)
    assert fast.logits.shape == (int(picked.sum()), tiny_config.vocab_size)
    assert torch.allclose(fast.loss, slow_loss, atol=1e-6)
    assert torch.allclose(fast.logits, full[picked], atol=1e-6)


def test_masked_lm_gradients_are_those_of_the_masked_rows_alone(tiny_config):
    """The LM head runs on the masked rows only; every gradient equals the full-logits loss over those same rows, and
    the head's bias gradient is exactly softmax - one-hot of the one masked row (nothing from the others)."""
    torch.manual_seed(0)
    model = RobertaForMaskedLM(tiny_config)
    reference = RobertaForMaskedLM(tiny_config)
    reference.load_state_dict(model.state_dict())
    ids = torch.randint(4, tiny_config.vocab_size, (2, 10))
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 7] = ids[0, 2], ids[1, 7]
    out = model(ids, labels=labels)
    out.loss.backward()
    assert out.logits.shape == (2, tiny_config.vocab_size)  # (N masked rows, V), not (B, T, V)
    full = reference(ids).logits  # (B, T, V)
    picked = full[[0, 1], [2, 7]]  # the masked rows, in row-major order
    F.cross_entropy(picked, labels[labels != -100]).backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)
    probs = picked.detach().softmax(-1)  # (2, V)
    expected_bias = (probs - F.one_hot(labels[labels != -100], tiny_config.vocab_size)).mean(0)
    torch.testing.assert_close(model.lm_head.bias.grad, expected_bias, atol=1e-6, rtol=1e-5)


def test_classification_losses(tiny_config):
    ids = torch.randint(4, tiny_config.vocab_size, (3, 8))
    clf = RobertaForSequenceClassification(tiny_config)
    out = clf(ids, labels=torch.tensor([0, 1, 1]))
    assert out.logits.shape == (3, 2)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, torch.tensor([0, 1, 1])))
    reg = RobertaForSequenceClassification(RobertaConfig.tiny(num_labels=1))
    target = torch.tensor([0.5, 2.0, 4.5])
    out = reg(ids, labels=target)
    assert out.logits.shape == (3, 1)
    assert torch.allclose(out.loss, F.mse_loss(out.logits.squeeze(-1), target))


def test_padding_does_not_change_real_token_outputs(tiny_config):
    model = RobertaModel(tiny_config, add_pooling_layer=False).eval()
    ids = torch.randint(4, tiny_config.vocab_size, (1, 9))
    padded = torch.cat([ids, torch.ones(1, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = model(ids).last_hidden_state
        with_pad = model(padded, padded.ne(1).long()).last_hidden_state[:, :9]
    assert (alone - with_pad).abs().max().item() < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_unpadded_bf16_batch_runs_on_the_flash_kernel_alone():
    """With no attention mask, training runs with SDPA restricted to FlashAttention; a mask rules flash out."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = RobertaForMaskedLM(
        RobertaConfig(**{**SMALL, "hidden_size": 128, "intermediate_size": 256})
    ).cuda()
    ids = torch.randint(4, 300, (4, 64), device="cuda")
    labels = torch.where(torch.rand(ids.shape, device="cuda") < 0.15, ids, torch.full_like(ids, -100))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        model(ids, labels=labels).loss.backward()
        with pytest.raises(RuntimeError):
            model(ids, torch.ones_like(ids), labels=labels)


def test_padded_linear_gives_the_plain_linear_and_its_gradients():
    """The LM head's aligned matmul on CUDA (vocabulary rounded up to 64 and cut back) equals F.linear."""
    from rtoolkit.model import padded_linear

    x = torch.randn(5, 16, requires_grad=True)
    weight = torch.randn(301, 16, requires_grad=True)
    bias = torch.randn(301, requires_grad=True)
    got = padded_linear(x, weight, bias, multiple=64)
    assert got.shape == (5, 301)
    grads = torch.autograd.grad(got.square().sum(), (x, weight, bias))
    expected = F.linear(x, weight, bias)
    want = torch.autograd.grad(expected.square().sum(), (x, weight, bias))
    torch.testing.assert_close(got, expected)
    for g, w in zip(grads, want, strict=True):
        torch.testing.assert_close(g, w)
