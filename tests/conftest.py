"""Shared fixtures: the real data in ../shared/data and small models/tokenizers made on the spot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The real data sets: ../shared/data beside the repository, or the folder RTOOLKIT_TEST_DATA names.
SHARED_DATA = Path(os.environ.get("RTOOLKIT_TEST_DATA") or (REPO / ".." / "shared" / "data")).resolve()


def shared_data(*parts: str) -> Path:
    """A path under the shared data folder. Absent, the calling test skips with a clear reason on a developer's
    machine, and fails under CI=true (where a skip would hide that the real-data tests never ran)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"real data not available: {path} (expected the shared data folder beside the repo)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI must run the real-data tests")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def corpus_files() -> list[Path]:
    """A few real public-domain books (Project Gutenberg, via NLTK)."""
    folder = shared_data("corpus", "gutenberg", "nltk")
    return [folder / n for n in ("austen-emma.txt", "chesterton-brown.txt", "melville-moby_dick.txt")]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, corpus_files) -> Path:
    """A 1000-id byte-level BPE trained on real books, saved as a Hugging Face tokenizer folder."""
    from rtoolkit.tokenizer import Tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    Tokenizer.train(corpus_files, vocab_size=1000, min_frequency=2).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from rtoolkit.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture
def tiny_config():
    from rtoolkit.config import RobertaConfig

    return RobertaConfig.tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def trained_mlm_dir(tmp_path_factory, tokenizer, corpus_files) -> Path:
    """A tiny masked-LM trained for a few seconds on real sentences, saved with its tokenizer.

    Its fill-mask distributions are peaked rather than uniform, so top-k comparisons between implementations
    (backends, transformers' pipeline, the web demo) are meaningful and not decided by rounding noise.
    """
    from rtoolkit.config import RobertaConfig
    from rtoolkit.model import IGNORE_INDEX, RobertaForMaskedLM

    lines = [line for line in corpus_files[0].read_text(encoding="utf-8").splitlines() if line.strip()]
    ids = [i for line in tokenizer.iter_encode(lines[:3000]) for i in line]
    width = 32
    blocks = torch.tensor(ids[: len(ids) // width * width]).view(-1, width)  # (N, 32)
    generator = torch.Generator().manual_seed(0)
    model = RobertaForMaskedLM(
        RobertaConfig.tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        batch = blocks[torch.randint(len(blocks), (32,), generator=generator)]  # (32, 32)
        masked = torch.rand(batch.shape, generator=generator) < 0.15
        labels = batch.masked_fill(~masked, IGNORE_INDEX)
        loss = model(batch.masked_fill(masked, tokenizer.mask_token_id), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval().save_pretrained(tmp_path_factory.mktemp("trained_mlm"), tokenizer=tokenizer)


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny random two-label classifier (negative / positive), saved with its tokenizer."""
    from rtoolkit.config import RobertaConfig
    from rtoolkit.model import RobertaForSequenceClassification

    torch.manual_seed(0)
    config = RobertaConfig.tiny(
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, id2label={0: "negative", 1: "positive"}
    )
    model = RobertaForSequenceClassification(config).eval()
    return model.save_pretrained(tmp_path_factory.mktemp("classifier"), tokenizer=tokenizer)


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny randomly initialised MLM folder with the real-books tokenizer (dropout off: runs are exact)."""
    from rtoolkit.config import RobertaConfig
    from rtoolkit.model import RobertaForMaskedLM

    torch.manual_seed(0)
    config = RobertaConfig.tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return RobertaForMaskedLM(config).save_pretrained(tmp_path_factory.mktemp("encoder"), tokenizer=tokenizer)


# The finetuning run of each task family's fixture model: its named task, data folder and lengths.
FAMILY_RUNS = {
    "question-answering": dict(task="squad", data="squad1", max_length=128, stride=32, max_steps=80),
    "multiple-choice": dict(task="race", data="race", max_length=128, max_steps=60),
    "token-classification": dict(task="conll2003", data="conll2003", max_length=128, max_steps=200),
}


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory, encoder_dir) -> dict[str, Path]:
    """{family: the best/ folder of a tiny model finetuned for a few steps on the family's real data} (question
    answering on SQuAD, multiple choice on RACE, token classification on CoNLL-2003), as `rtoolkit finetune`
    saves them."""
    from rtoolkit.train.finetune import FinetuneConfig, finetune

    root = tmp_path_factory.mktemp("families")
    out = {}
    for name, run in FAMILY_RUNS.items():
        options = {k: v for k, v in run.items() if k != "data"}
        config = FinetuneConfig(
            model=encoder_dir, data_dir=shared_data(run["data"]), out=root / name, lr=2e-3, batch_size=16,
            max_train_samples=16 * run["max_steps"], max_eval_samples=16, progress=False, device="cpu", **options,
        )  # fmt: skip
        finetune(config)
        out[name] = root / name / "best"
    return out
