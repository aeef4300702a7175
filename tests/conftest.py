"""Shared fixtures: the real data in ../shared/data and small models/tokenizers made on the spot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; the calling test skips with a clear reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (expected the shared data folder beside the repo)")
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
