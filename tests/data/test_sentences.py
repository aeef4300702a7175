"""Sentence boundaries in preprocessed folders and the packing that keeps sentences whole (FULL-SENTENCES,
DOC-SENTENCES), against the fixed-size blocks of `none`, on real books."""

from __future__ import annotations

import json
import shutil
import sys
import typing

import numpy as np
import pytest

from rtoolkit.data.corpus import (
    FORMATS,
    SENTENCE_MODES,
    BlockDataset,
    CorpusError,
    Format,
    SentenceMode,
    TokenSplit,
    epoch_batches,
    iter_documents,
    load_meta,
    preprocess,
    sentence_cuts,
    sentence_starts,
)
from tests.conftest import shared_data

EOS = 2


@pytest.fixture(scope="module")
def books():
    """Alice in Wonderland (single-quoted dialogue) and Father Brown (double quotes, Mr., Dr.)."""
    folder = shared_data("corpus", "gutenberg")
    return [folder / "novels" / "pg11.txt", folder / "nltk" / "chesterton-brown.txt"]


@pytest.fixture(scope="module")
def sentences_dir(tmp_path_factory, books, tokenizer_dir):
    out = tmp_path_factory.mktemp("sentences") / "data"
    preprocess(books, tokenizer_dir=tokenizer_dir, out_dir=out, valid_fraction=0.05)
    return out


@pytest.fixture(scope="module")
def split(sentences_dir):
    return TokenSplit.open(sentences_dir, "train")


def _sentences(split: TokenSplit) -> list[tuple[int, int]]:
    """Every sentence's [start, end) in the split's tokens."""
    s = np.asarray(split.sentences)
    return list(zip(s[:-1].tolist(), s[1:].tolist(), strict=True))


def _stream_units(split: TokenSplit, *, separated: bool) -> tuple[list[int], list[int], list[int]]:
    """The sentences as laid out in a format's token stream: (starts, ends, document ends). With `separated`
    (full-sentences and none) each document is followed by one </s>, counted with its last sentence."""
    starts, ends, doc_ends = [], [], []
    sentences = np.asarray(split.sentences)
    shift = 0
    for d in range(split.num_documents):
        lo, hi = split.offsets[d], split.offsets[d + 1]
        inner = sentences[(sentences >= lo) & (sentences <= hi)].tolist()
        for a, b in zip(inner[:-1], inner[1:], strict=True):
            starts.append(a + shift)
            ends.append(b + shift)
        if separated:
            shift += 1
            ends[-1] += 1
        doc_ends.append(ends[-1])
    return starts, ends, doc_ends


def _block_spans(blocks: BlockDataset) -> np.ndarray:
    """Each block's [start, end) in its format's stream, from the blocks' lengths: (n_blocks, 2)."""
    ends = np.cumsum(blocks.lengths - 2)
    return np.stack([ends - (blocks.lengths - 2), ends], axis=1)


def _expected_stream(split: TokenSplit, *, separated: bool) -> np.ndarray:
    docs = [split.document(d) for d in range(split.num_documents)]
    return np.concatenate([np.append(doc, EOS) if separated else doc for doc in docs])


def test_allowed_values_are_defined_once():
    assert FORMATS == typing.get_args(Format) == ("full-sentences", "doc-sentences", "none")
    assert SENTENCE_MODES == typing.get_args(SentenceMode) == ("auto", "lines")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Mr. Holmes and Dr. Watson met Mrs. Hudson at 221B Baker St. in London. They talked.",
            ["Mr. Holmes and Dr. Watson met Mrs. Hudson at 221B Baker St. in London.", " They talked."],
        ),
        (
            '"Where are you going?" said Alice. "To the garden," replied the Queen.',
            ['"Where are you going?" said Alice.', ' "To the garden," replied the Queen.'],
        ),
        (
            'He paused... Then he spoke again. "Well..." she began.',
            ["He paused...", " Then he spoke again.", ' "Well..." she began.'],
        ),
        (
            "It cost $3.50, i.e. about 3 p.m. prices, e.g. in the U.S. It was cheap.",
            ["It cost $3.50, i.e. about 3 p.m. prices, e.g. in the U.S.", " It was cheap."],
        ),
        (
            "It was 1.5 miles away, at No. 7 Rue St. Honoré.",
            ["It was 1.5 miles away, at No. 7 Rue St. Honoré."],
        ),
        ("Two spaces.  Then more!", ["Two spaces. ", " Then more!"]),
    ],
)
def test_the_splitter_on_hard_cases(text, expected):
    """Abbreviations, quotes, ellipses and numbers; each sentence after the first keeps its separating space."""
    cuts = sentence_cuts(text, sentence_starts(text))
    assert [text[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)] == expected


def test_cuts_stay_out_of_punctuation_runs():
    """A cut never splits what the pre-tokenizer keeps in one piece ('."' or '.--')."""
    text = 'it did him justice." We had tea.--Then more'
    cuts = sentence_cuts(text, [text.index('" We'), text.index("--Then")])
    assert [text[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)] == [
        'it did him justice."',
        " We had tea.--",
        "Then more",
    ]


def test_sentences_tokenize_like_whole_documents(sentences_dir, books, tokenizer):
    """The ids are those of each whole document (so the .bin is what document-level tokenization writes), and the
    first sentence of Alice's first paragraph is one sentence, from 'Alice was beginning' to its closing quote."""
    meta = load_meta(sentences_dir)
    assert meta["sentences"] == "auto" and meta["sentence_splitter"].startswith("sentencex ")
    train, valid = TokenSplit.open(sentences_dir, "train"), TokenSplit.open(sentences_dir, "valid")
    assert meta["sentence_counts"] == {"train": train.num_sentences, "valid": valid.num_sentences}
    texts = [t for f in books for t, _ in iter_documents(f)]
    whole = list(tokenizer.iter_encode(texts))
    ids = [train.document(d).tolist() for d in range(train.num_documents)]
    ids += [valid.document(d).tolist() for d in range(valid.num_documents)]
    assert sorted(map(tuple, ids)) == sorted(map(tuple, whole))
    assert train.num_sentences > 1.5 * train.num_documents  # paragraphs of several sentences
    decoded = [tokenizer.decode(train.tokens[a:b].tolist()) for a, b in _sentences(train)[:200]]
    first = next(s for s in decoded if "Alice was beginning" in s)
    assert first.startswith("Alice was beginning") and first.endswith("pictures or conversations?'")


def test_with_kept_newlines_too(tmp_path, books, tokenizer_dir, tokenizer):
    out = tmp_path / "newlines"
    preprocess(books[:1], tokenizer_dir=tokenizer_dir, out_dir=out, valid_fraction=0.0, keep_newlines=True)
    split = TokenSplit.open(out, "train")
    texts = [t for t, _ in iter_documents(books[0], keep_newlines=True)]
    assert [split.document(d).tolist() for d in range(split.num_documents)] == list(
        tokenizer.iter_encode(texts)
    )
    assert split.num_sentences > split.num_documents


def test_without_sentencex_auto_mode_is_a_clear_error(monkeypatch, tmp_path, books, tokenizer_dir):
    monkeypatch.setitem(sys.modules, "sentencex", None)  # import fails
    with pytest.raises(CorpusError, match=r"needs the sentencex package .* sentences='lines'"):
        preprocess(books[:1], tokenizer_dir=tokenizer_dir, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_workers_write_the_same_sentence_files(tmp_path, books, tokenizer_dir, sentences_dir):
    out = tmp_path / "w2"
    preprocess(books, tokenizer_dir=tokenizer_dir, out_dir=out, valid_fraction=0.05, workers=2)
    for name in ("train.sidx", "valid.sidx", "train.bin"):
        assert (out / name).read_bytes() == (sentences_dir / name).read_bytes(), name


@pytest.mark.parametrize("seq_len", [128, 32])
@pytest.mark.parametrize("format", ["full-sentences", "doc-sentences"])
def test_blocks_hold_whole_sentences_and_every_token_once(split, format, seq_len):
    """Blocks, read in order, give the stream back (every token once, in order; full-sentences adds one </s> per
    document). A block starts and ends at sentence boundaries, except inside a sentence longer than a block,
    which is cut into block-sized pieces. A block is closed only when the next sentence does not fit (or, for
    doc-sentences, at its document's end)."""
    separated = format == "full-sentences"
    blocks = BlockDataset(split, seq_len=seq_len, format=format)
    content = seq_len - 2
    bodies = [blocks[i] for i in range(len(blocks))]
    assert all(
        len(b) == n and b[0] == 0 and b[-1] == EOS for b, n in zip(bodies, blocks.lengths, strict=True)
    )
    assert blocks.lengths.min() >= 3 and blocks.lengths.max() <= seq_len
    stream = np.concatenate([b[1:-1].numpy() for b in bodies])
    np.testing.assert_array_equal(stream, _expected_stream(split, separated=separated))

    starts, ends, doc_ends = _stream_units(split, separated=separated)
    boundaries = np.array([0, *ends])
    spans = _block_spans(blocks)
    inside = 0
    for edge in np.unique(spans):
        k = np.searchsorted(boundaries, edge)
        if boundaries[k] == edge:
            continue
        inside += 1  # inside sentence k - 1: only where that sentence is longer than a block, at a piece edge
        a, b = starts[k - 1], ends[k - 1]
        assert b - a > content and (edge - a) % content == 0, (edge, a, b)
    assert inside > 0  # the books have sentences longer than a block, even of 128 tokens

    sizes = dict(zip(starts, np.subtract(ends, starts).tolist(), strict=True))
    doc_end_set = set(doc_ends)
    for a, b in spans[:-1].tolist():
        next_size = sizes.get(b)
        if next_size is None or next_size > content or (not separated and b in doc_end_set):
            continue
        assert (b - a) + next_size > content, (a, b, next_size)  # greedy: the next sentence did not fit


def test_doc_sentences_never_cross_a_document_and_full_sentences_do(split):
    doc_blocks = BlockDataset(split, seq_len=64, format="doc-sentences")
    _, _, doc_ends = _stream_units(split, separated=False)
    spans = _block_spans(doc_blocks)
    doc_of_start = np.searchsorted(doc_ends, spans[:, 0], side="right")
    doc_of_last = np.searchsorted(doc_ends, spans[:, 1] - 1, side="right")
    np.testing.assert_array_equal(doc_of_start, doc_of_last)
    assert not any((doc_blocks[i][1:-1] == EOS).any() for i in range(len(doc_blocks)))
    full = BlockDataset(split, seq_len=64, format="full-sentences")
    crossing = sum(1 for i in range(len(full)) if (full[i][1:-2] == EOS).any())
    assert crossing > 100 and len(full) < len(doc_blocks) and full.lengths.mean() > doc_blocks.lengths.mean()


def test_none_cuts_fixed_size_blocks(split):
    """The old packing, for comparison: every block but the last exactly seq_len tokens, cut anywhere."""
    blocks = BlockDataset(split, seq_len=64, format="none")
    stream = _expected_stream(split, separated=True)
    assert len(blocks) == -(-len(stream) // 62)
    assert (blocks.lengths[:-1] == 64).all() and blocks.lengths[-1] == len(stream) - 62 * (
        len(blocks) - 1
    ) + 2
    for i in (0, 1, len(blocks) // 2, len(blocks) - 1):
        np.testing.assert_array_equal(blocks[i][1:-1].numpy(), stream[62 * i : 62 * (i + 1)])


def test_lines_mode_takes_each_line_as_a_sentence(tmp_path, books, tokenizer_dir, tokenizer):
    out = tmp_path / "lines"
    meta = preprocess(
        books[:1], tokenizer_dir=tokenizer_dir, out_dir=out, valid_fraction=0.0, sentences="lines"
    )
    assert meta["sentences"] == "lines" and meta["sentence_splitter"] == "lines"
    split = TokenSplit.open(out, "train")
    lines = []
    for document in books[0].read_text(encoding="utf-8").split("\n\n"):
        document_lines = [line.strip() for line in document.split("\n") if line.strip()]
        lines += [(" " if k else "") + line for k, line in enumerate(document_lines)]
    assert split.num_sentences == len(lines)
    decoded = [tokenizer.decode(split.tokens[a:b].tolist()) for a, b in _sentences(split)]
    assert decoded == lines
    blocks = BlockDataset(split, seq_len=64, format="doc-sentences")
    assert len(blocks) < split.num_sentences  # lines are packed together


def test_mode_is_part_of_the_identity_and_checked(tmp_path, books, tokenizer_dir, sentences_dir):
    with pytest.raises(CorpusError, match="--overwrite"):
        preprocess(
            books, tokenizer_dir=tokenizer_dir, out_dir=sentences_dir, valid_fraction=0.05, sentences="lines"
        )
    with pytest.raises(CorpusError, match=r"sentences must be one of \('auto', 'lines'\), got 'words'"):
        preprocess(books, tokenizer_dir=tokenizer_dir, out_dir=tmp_path / "x", sentences="words")
    with pytest.raises(CorpusError, match=r"format must be one of .*'none'\), got 'complete'"):
        BlockDataset(TokenSplit.open(sentences_dir, "train"), seq_len=64, format="complete")


def _damaged(sentences_dir, tmp_path, name: str):
    folder = shutil.copytree(sentences_dir, tmp_path / name)
    return folder, folder / "train.sidx"


def test_a_damaged_sentence_file_is_a_clear_error(sentences_dir, tmp_path):
    folder, path = _damaged(sentences_dir, tmp_path, "missing")
    path.unlink()
    with pytest.raises(CorpusError, match=r"missing/train\.sidx is missing; the folder is damaged"):
        TokenSplit.open(folder, "train")

    folder, path = _damaged(sentences_dir, tmp_path, "truncated")
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 3)
    with pytest.raises(CorpusError, match=r"truncated/train\.sidx: .* not a whole number of 8-byte values"):
        TokenSplit.open(folder, "train")

    offsets = np.fromfile(sentences_dir / "train.sidx", dtype=np.int64)
    folder, path = _damaged(sentences_dir, tmp_path, "shuffled")
    bad = offsets.copy()
    bad[[5, 6]] = bad[[6, 5]]
    bad.tofile(path)
    with pytest.raises(
        CorpusError, match=r"shuffled/train\.sidx: sentence offsets are not strictly increasing"
    ):
        TokenSplit.open(folder, "train")

    folder, path = _damaged(sentences_dir, tmp_path, "short")
    offsets[:-1].tofile(path)
    with pytest.raises(
        CorpusError, match=r"short/train\.sidx: sentence offsets end at \d+, the split holds \d+"
    ):
        TokenSplit.open(folder, "train")

    folder, path = _damaged(sentences_dir, tmp_path, "no-document-end")
    documents = np.fromfile(sentences_dir / "train.idx", dtype=np.int64)
    np.delete(offsets, np.searchsorted(offsets, documents[1])).tofile(path)
    meta = json.loads((folder / "meta.json").read_text())
    meta["sentence_counts"]["train"] -= 1
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(
        CorpusError, match=rf"no-document-end/train\.sidx: no sentence ends .* \(token {documents[1]}\)"
    ):
        TokenSplit.open(folder, "train")

    folder, _ = _damaged(sentences_dir, tmp_path, "old")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(CorpusError, match=r"format version 1 is not 2; preprocess again"):
        TokenSplit.open(folder, "train")


def test_full_sentences_batches_hold_batch_size_blocks_with_little_padding(split):
    blocks = BlockDataset(split, seq_len=128, format="full-sentences")
    batches = epoch_batches(
        blocks.lengths, epoch=0, seed=0, batch_size=16, seq_len=128, format="full-sentences"
    )
    assert all(len(b) == 16 for b in batches) and len(batches) == len(blocks) // 16
    used = [it.block for b in batches for it in b]
    assert len(set(used)) == len(used)
    slots = sum(16 * max(blocks.lengths[it.block] for it in b) for b in batches)
    assert blocks.lengths[used].sum() / slots > 0.97  # similar lengths batched together
    none = BlockDataset(split, seq_len=128, format="none")
    plan = epoch_batches(none.lengths, epoch=0, seed=0, batch_size=16, seq_len=128, format="none")
    assert all((none.lengths[[it.block for it in b]] == 128).all() for b in plan)  # padding-free
    with pytest.raises(CorpusError, match="format must be one of"):
        epoch_batches(none.lengths, epoch=0, seed=0, batch_size=16, seq_len=128, format="complete")
