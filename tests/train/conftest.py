"""Fixtures for the pretraining tests: a small preprocessed corpus of real books and a dropout-free tiny config."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared_data


@pytest.fixture(scope="session")
def pretrain_data(tmp_path_factory, tokenizer_dir) -> Path:
    """Alice in Wonderland and Father Brown, tokenized with the 1000-id test tokenizer (5% held out)."""
    from rtoolkit.data.corpus import preprocess

    folder = shared_data("corpus", "gutenberg")
    out = tmp_path_factory.mktemp("pretrain") / "data"
    files = [folder / "novels" / "pg11.txt", folder / "nltk" / "chesterton-brown.txt"]
    preprocess(files, tokenizer_dir=tokenizer_dir, out_dir=out, valid_fraction=0.05)
    return out


@pytest.fixture(scope="session")
def no_dropout_config(tmp_path_factory, tokenizer) -> Path:
    """config.json of the tiny preset sized to the test tokenizer, without dropout (deterministic losses)."""
    from rtoolkit.config import RobertaConfig

    out = tmp_path_factory.mktemp("model-config")
    config = RobertaConfig.tiny(
        vocab_size=tokenizer.vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    return config.save_pretrained(out)
