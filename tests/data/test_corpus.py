"""Streaming preprocessing of real text, token files, FULL-/DOC-SENTENCES packing and epoch batch plans."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rtoolkit.data.corpus import (
    BlockDataset,
    CorpusError,
    TokenSplit,
    epoch_batches,
    in_validation,
    iter_documents,
    load_meta,
    preprocess,
)
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    """Two real books (a small one and a larger one)."""
    folder = shared_data("corpus", "gutenberg")
    return [folder / "novels" / "pg11.txt", folder / "nltk" / "chesterton-brown.txt"]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory, books, tokenizer_dir):
    out = tmp_path_factory.mktemp("corpus") / "data"
    preprocess(books, tokenizer_dir=tokenizer_dir, out_dir=out, valid_fraction=0.05)
    return out


def test_documents_are_blank_line_blocks_and_files_end_them(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("first line\nsecond line\n\n\n  \nnext doc\n", encoding="utf-8")
    assert list(iter_documents(a)) == [("first line second line", False), ("next doc", False)]
    assert list(iter_documents(a, keep_newlines=True))[0] == ("first line\nsecond line", False)
    b = tmp_path / "b.txt"
    b.write_bytes(b"caf\xe9\n")
    with pytest.raises(CorpusError, match=r"b\.txt: not valid UTF-8"):
        list(iter_documents(b))


def test_preprocess_real_books_roundtrips_the_text(corpus_dir, books, tokenizer):
    meta = load_meta(corpus_dir)
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == tokenizer.vocab_size
    assert meta["tokenizer_fingerprint"] == tokenizer.fingerprint()
    train, valid = TokenSplit.open(corpus_dir, "train"), TokenSplit.open(corpus_dir, "valid")
    n_docs = sum(1 for f in books for _ in iter_documents(f))
    assert train.num_documents + valid.num_documents == n_docs
    assert 0.02 < valid.num_documents / n_docs < 0.08  # --valid-fraction 0.05
    assert meta["splits"]["train"] == {"tokens": train.num_tokens, "documents": train.num_documents}
    # Documents come back in order, each in its split, and decode to the original text.
    texts = [t for f in books for t, _ in iter_documents(f)]
    train_texts = [t for t in texts if not in_validation(t, 0.05)]
    valid_texts = [t for t in texts if in_validation(t, 0.05)]
    assert len(train_texts) == train.num_documents and len(valid_texts) == valid.num_documents
    for i in range(0, train.num_documents, 97):
        assert tokenizer.decode(train.document(i).tolist(), skip_special_tokens=False) == train_texts[i]
    assert tokenizer.decode(valid.document(0).tolist(), skip_special_tokens=False) == valid_texts[0]


def test_rerun_is_a_noop_and_other_input_needs_overwrite(corpus_dir, books, tokenizer_dir):
    before = (corpus_dir / "train.bin").stat().st_mtime_ns
    preprocess(books, tokenizer_dir=tokenizer_dir, out_dir=corpus_dir, valid_fraction=0.05)
    assert (corpus_dir / "train.bin").stat().st_mtime_ns == before
    with pytest.raises(CorpusError, match="--overwrite"):
        preprocess(books[:1], tokenizer_dir=tokenizer_dir, out_dir=corpus_dir, valid_fraction=0.05)
    assert json.loads((corpus_dir / "meta.json").read_text())["inputs"][1]["path"].endswith(
        "chesterton-brown.txt"
    )


def test_workers_give_identical_files(tmp_path, books, tokenizer_dir, corpus_dir):
    out = tmp_path / "w2"
    preprocess(books, tokenizer_dir=tokenizer_dir, out_dir=out, valid_fraction=0.05, workers=2)
    for name in ("train.bin", "train.idx", "valid.bin", "valid.idx"):
        assert (out / name).read_bytes() == (corpus_dir / name).read_bytes(), name


def test_empty_input_and_missing_folder_errors(tmp_path, tokenizer_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n", encoding="utf-8")
    with pytest.raises(CorpusError, match="no text found"):
        preprocess([empty], tokenizer_dir=tokenizer_dir, out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()  # nothing half-written
    with pytest.raises(CorpusError, match="rtoolkit preprocess"):
        load_meta(tmp_path)


def test_fixed_size_blocks_fill_and_cross_documents_with_eos(corpus_dir):
    """`none` (the stream cut every seq_len - 2 tokens, kept to compare with sentence packing)."""
    split = TokenSplit.open(corpus_dir, "train")
    blocks = BlockDataset(split, seq_len=64, format="none")
    assert all(blocks.lengths[:-1] == 64) and blocks.lengths[-1] <= 64
    bodies = [blocks[i] for i in range(len(blocks))]
    assert all(b[0] == 0 and b[-1] == 2 and len(b) == blocks.lengths[i] for i, b in enumerate(bodies))
    stream = np.concatenate([b[1:-1].numpy() for b in bodies])
    expected = np.concatenate([np.append(split.document(d), 2) for d in range(split.num_documents)])
    np.testing.assert_array_equal(stream, expected)
    # Exactly one extra </s> per document boundary, and many blocks span several documents.
    assert int((stream == 2).sum()) == split.num_documents
    assert sum(1 for b in bodies if (b[1:-1] == 2).any()) > 100


def test_doc_sentences_never_cross_a_document(corpus_dir):
    split = TokenSplit.open(corpus_dir, "train")
    blocks = BlockDataset(split, seq_len=64, format="doc-sentences")
    assert blocks.lengths.max() <= 64 and blocks.lengths.min() >= 3
    position = 0
    doc, offset_in_doc = 0, 0
    for i in range(len(blocks)):
        body = blocks[i][1:-1].numpy()
        assert not (body == 2).any()
        document = split.document(doc)
        np.testing.assert_array_equal(body, document[offset_in_doc : offset_in_doc + len(body)])
        offset_in_doc += len(body)
        position += len(body)
        if offset_in_doc == len(document):
            doc, offset_in_doc = doc + 1, 0
    assert doc == split.num_documents and position == split.num_tokens


def test_epoch_batches_are_deterministic_and_reshuffled():
    lengths = np.full(100, 32)
    a = epoch_batches(lengths, epoch=0, seed=1, batch_size=8, seq_len=32, format="full-sentences")
    b = epoch_batches(lengths, epoch=0, seed=1, batch_size=8, seq_len=32, format="full-sentences")
    c = epoch_batches(lengths, epoch=1, seed=1, batch_size=8, seq_len=32, format="full-sentences")
    assert a == b and a != c
    assert len(a) == 12 and all(len(x) == 8 for x in a)  # the incomplete 13th batch is dropped
    assert {it.mask_key for x in c for it in x} == {1}  # dynamic: masks keyed on the epoch


def test_full_sentences_batches_leave_the_short_tail_block_out():
    lengths = np.full(97, 32)
    lengths[-1] = 9  # the stream's last block
    for epoch in range(5):
        batches = epoch_batches(
            lengths, epoch=epoch, seed=0, batch_size=8, seq_len=32, format="full-sentences"
        )
        used = [it.block for b in batches for it in b]
        assert len(batches) == 12 and 96 not in used and all(lengths[used] == 32)


def test_doc_sentences_batches_keep_tokens_per_batch_about_constant():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 65, size=2000)
    batches = epoch_batches(lengths, epoch=0, seed=0, batch_size=8, seq_len=64, format="doc-sentences")
    padded = [len(b) * max(lengths[it.block] for it in b) for b in batches]
    assert max(padded) <= 8 * 64
    assert np.mean(padded) > 0.85 * 8 * 64
    assert (
        min(len(b) for b in batches) >= 8 and max(len(b) for b in batches) > 16
    )  # short blocks -> more rows
    used = [it.block for b in batches for it in b]
    assert len(used) == len(set(used)) > 0.9 * len(lengths)


def test_static_masking_duplicates_the_data_with_fixed_copies():
    lengths = np.full(40, 16)
    e0 = epoch_batches(
        lengths,
        epoch=0,
        seed=0,
        batch_size=4,
        seq_len=16,
        format="full-sentences",
        masking="static",
        static_copies=10,
    )
    e1 = epoch_batches(
        lengths,
        epoch=1,
        seed=0,
        batch_size=4,
        seq_len=16,
        format="full-sentences",
        masking="static",
        static_copies=10,
    )
    items0 = sorted((it.block, it.mask_key) for b in e0 for it in b)
    items1 = sorted((it.block, it.mask_key) for b in e1 for it in b)
    assert items0 == items1 == sorted((blk, c) for blk in range(40) for c in range(10))
    assert e0 != e1  # a new order each epoch, the same ten masks per block
