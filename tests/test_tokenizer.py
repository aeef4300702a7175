"""The byte-level BPE tokenizer, checked against transformers' RobertaTokenizerFast on real text."""

import csv
import shutil

import pytest
import torch

from rtoolkit.tokenizer import Tokenizer, TokenizerError
from tests.conftest import shared_data


def read_tsv(path, *columns, limit=None):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = rows[:limit] if limit else rows
    return [tuple(r[c] for c in columns) for r in rows]


@pytest.fixture(scope="module")
def sentences():
    return [s for (s,) in read_tsv(shared_data("sst2", "dev.tsv"), "sentence", limit=300)]


@pytest.fixture(scope="module")
def pairs():
    return read_tsv(shared_data("rte", "dev.tsv"), "sentence1", "sentence2", limit=100)


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.RobertaTokenizerFast.from_pretrained(str(tokenizer_dir))


def test_special_token_layout(tokenizer):
    assert [
        tokenizer.bos_token_id,
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        tokenizer.unk_token_id,
    ] == [0, 1, 2, 3]
    assert tokenizer.vocab_size == 1000
    assert tokenizer.mask_token_id == tokenizer.vocab_size - 1


def test_roberta_input_format(tokenizer):
    single = tokenizer.encode("Hello world")
    assert single[0] == 0 and single[-1] == 2
    pair = tokenizer.encode("Hello", "world")
    a, b = tokenizer.tokenize("Hello"), tokenizer.tokenize("world")
    assert pair == [
        0,
        *[tokenizer.token_to_id(t) for t in a],
        2,
        2,
        *[tokenizer.token_to_id(t) for t in b],
        2,
    ]


def test_mask_takes_the_space_before_it(tokenizer):
    ids = tokenizer.encode("The cat sat on the <mask>.", max_length=None)
    assert tokenizer.mask_token_id in ids
    pieces = [tokenizer.id_to_token(i) for i in ids]
    before = pieces[pieces.index("<mask>") - 1]
    assert before == "Ġthe"  # the space went into <mask>, not into a lone 'Ġ' token


def test_same_ids_as_transformers_on_real_sentences(tokenizer, hf_tokenizer, sentences):
    assert len(sentences) == 300
    for s in sentences:
        assert tokenizer.encode(s) == hf_tokenizer(s)["input_ids"], s
    batch = tokenizer(sentences[:16])
    reference = hf_tokenizer(sentences[:16], padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], reference["input_ids"])
    assert torch.equal(batch["attention_mask"], reference["attention_mask"])


def test_same_ids_as_transformers_on_pairs_and_truncation(tokenizer, hf_tokenizer, pairs, sentences):
    for a, b in pairs:
        assert tokenizer.encode(a, b) == hf_tokenizer(a, b)["input_ids"]
        for n in (16, 33):
            ours = tokenizer.encode(a, b, max_length=n)
            assert ours == hf_tokenizer(a, b, truncation=True, max_length=n)["input_ids"]
            assert len(ours) <= n
    for s in sentences[:50]:
        assert (
            tokenizer.encode(s, max_length=8) == hf_tokenizer(s, truncation=True, max_length=8)["input_ids"]
        )
    a, b = zip(*pairs[:10], strict=True)
    assert (
        tokenizer.encode_batch(a, b, max_length=24)
        == hf_tokenizer(list(a), list(b), truncation=True, max_length=24)["input_ids"]
    )


def test_decode_round_trip(tokenizer, sentences):
    for s in sentences[:20]:
        assert tokenizer.decode(tokenizer.encode(s, max_length=None)) == s


def test_loads_vocab_and_merges_without_tokenizer_json(tokenizer, tokenizer_dir, tmp_path, sentences):
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, tmp_path / name)
    slow = Tokenizer.from_pretrained(tmp_path)
    assert slow.vocab_size == tokenizer.vocab_size and slow.mask_token_id == tokenizer.mask_token_id
    for s in sentences[:100]:
        assert slow.encode(s) == tokenizer.encode(s)
    assert (tmp_path / "merges.txt").read_text().startswith("#version: 0.2\n")


def test_save_load_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    assert again.fingerprint() == tokenizer.fingerprint()


def test_default_truncation_is_512_with_specials(tokenizer):
    ids = tokenizer.encode("word " * 2000)
    assert len(ids) == 512 and ids[0] == 0 and ids[-1] == 2


def test_bad_input_errors(tmp_path, tokenizer, corpus_files):
    with pytest.raises(TokenizerError, match="tokenizer folder not found"):
        Tokenizer.from_pretrained(tmp_path / "nope")
    with pytest.raises(TokenizerError, match="expected tokenizer.json, or vocab.json and merges.txt"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(TokenizerError, match="text must be a string, got int"):
        tokenizer.encode(42)
    with pytest.raises(TokenizerError, match="max_length must be at least 4"):
        tokenizer.encode("hi", max_length=2)
    with pytest.raises(TokenizerError, match="vocab_size must be at least 261"):
        Tokenizer.train(corpus_files[:1], vocab_size=100)
    with pytest.raises(FileNotFoundError, match="training file not found"):
        Tokenizer.train([tmp_path / "missing.txt"], vocab_size=500)
