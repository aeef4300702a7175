"""Tiny model folders (fill-mask, classification, embedding) saved with the real-text tokenizer, and their exports."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.conftest import shared_data


def _tiny(**overrides):
    from rtoolkit.config import RobertaConfig

    return RobertaConfig.tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **overrides)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """{"fill-mask": folder, "classification": folder, "embedding": folder} of random tiny models."""
    from rtoolkit.model import RobertaForMaskedLM, RobertaForSequenceClassification, RobertaModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    models = {
        "fill-mask": RobertaForMaskedLM(_tiny()),
        "classification": RobertaForSequenceClassification(_tiny(id2label={0: "negative", 1: "positive"})),
        "embedding": RobertaModel(_tiny(), add_pooling_layer=False),
    }
    out = {}
    for task, model in models.items():
        out[task] = model.save_pretrained(root / task, tokenizer=tokenizer)
    return out


@pytest.fixture(scope="session")
def exported(tmp_path_factory, model_dirs) -> dict[str, Path]:
    """Each tiny model exported (fp32, validated) into its own folder."""
    from rtoolkit.export import export_onnx

    root = tmp_path_factory.mktemp("exports")
    return {task: export_onnx(folder, root / task).parent for task, folder in model_dirs.items()}


def read_sst2(split: str, limit: int | None = None) -> tuple[list[str], list[int]]:
    path = shared_data("sst2", f"{split}.tsv")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


@pytest.fixture(scope="session")
def sst2_classifier_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny classifier trained for 300 steps on the real SST-2 train set (65-67% dev accuracy over seeds; chance is
    51%)."""
    from rtoolkit.model import RobertaForSequenceClassification

    texts, labels = read_sst2("train", limit=12000)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(_tiny(id2label={0: "negative", 1: "positive"}))
    optim = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    model.train()
    steps, batch = 300, 32
    for step in range(steps):
        idx = torch.randint(len(texts), (batch,), generator=gen).tolist()
        enc = tokenizer([texts[i] for i in idx], max_length=64)
        y = torch.tensor([labels[i] for i in idx])
        loss = model(enc["input_ids"], enc["attention_mask"], labels=y).loss
        loss.backward()
        for group in optim.param_groups:  # 10% warmup: from scratch, post-LN layers need it to train reliably
            group["lr"] = 2e-3 * min(1.0, (step + 1) / 30) * (1 - step / steps)
        optim.step()
        optim.zero_grad()
    model.eval()
    return model.save_pretrained(tmp_path_factory.mktemp("sst2") / "model", tokenizer=tokenizer)
