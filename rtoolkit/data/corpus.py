"""Raw text -> sentences -> token files on disk -> packed blocks -> batches of block indices.

Preprocessing (`preprocess`) streams text files: a document is a blank-line-separated block (a file's end also ends
one). The lines of a document are joined with single spaces (hard-wrapped books would otherwise teach the model to
predict line breaks; fairseq never sees newline tokens either); `keep_newlines=True` keeps them. Each document goes
to the train or the validation split by a hash of its text (deterministic, order-free, and duplicates never
straddle the splits), is split into sentences, tokenized without special tokens and appended to

    OUT/{train,valid}.bin    all token ids of a split back to back (uint16 when the vocabulary fits, else int32)
    OUT/{train,valid}.idx    int64 document offsets into the .bin (n_documents + 1 values, starting at 0)
    OUT/{train,valid}.sidx   int64 sentence offsets into the .bin (n_sentences + 1 values, strictly increasing from
                             0 to the token count; every document offset is one of them)
    OUT/meta.json            format version, tokenizer fingerprint, sentence mode and splitter, dtype, inputs, counts
    OUT/tokenizer/           the tokenizer the ids belong to

All are read back with numpy and checked on load (a damaged file is a CorpusError naming it), the tokens and
sentence offsets through memmaps, so neither preprocessing nor training holds the corpus in memory. Re-running with
the same inputs, options and tokenizer is a no-op; anything else needs `overwrite=True`.

Sentences (`sentences=`, one of SENTENCE_MODES): "auto" splits documents with sentencex, Wikimedia's rule-based
splitter (no model download); it was chosen because it splits the Gutenberg books as well as pysbd (Mr., Dr.,
quotations, "...", numbers) while running about 300 times faster (68M against 0.21M characters/s on the 27 books;
syntok managed 1.2M and splits inside quotations). "lines" takes every input line as one sentence (one sentence per
line, as fairseq expects). Splitting runs with the tokenization, in the `workers` processes. Each sentence after
the first is tokenized with the space in front of it (`sentence_cuts` cuts where the byte-level BPE's
pre-tokenizer splits the whole text too), so the ids are those of the whole document (for every paragraph of the
27 books but one, a contraction inside a keep_newlines quotation) and decode to its text.

Packing (`BlockDataset`, the paper's §4.2 formats, no next-sentence prediction; one of FORMATS):
    full-sentences  fairseq's `complete`: whole sentences packed contiguously while they fit in `seq_len - 2`
                    tokens, between `<s>` and `</s>`. Text runs across documents; each document is followed by
                    one extra `</s>`, which counts as a token of the block. Only a sentence longer than a block
                    is split, into block-sized pieces, its last piece starting a block that whole sentences may
                    follow. Blocks are a little shorter than seq_len; `epoch_batches` groups blocks of similar
                    length, `batch_size` per batch, so batches need padding (little) and an attention mask.
    doc-sentences   fairseq's `complete_doc`: the same, but a block never crosses a document (a document's end
                    ends a block); `epoch_batches` packs more of the shorter blocks into a batch to keep tokens
                    per batch about constant.
    none            fairseq's `none`, for comparison: the full-sentences stream cut every seq_len - 2 tokens,
                    mid-sentence. Only the stream's last block is shorter; training batches leave it out, so
                    they hold no padding at all.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
import typing
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rtoolkit.checkpoint import atomic_directory
from rtoolkit.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
META_NAME = "meta.json"
TOKENIZER_DIR = "tokenizer"
SPLITS = ("train", "valid")
Format = Literal["full-sentences", "doc-sentences", "none"]  # BlockDataset's packing (the paper's §4.2 names)
FORMATS: tuple[Format, ...] = typing.get_args(Format)
SentenceMode = Literal["auto", "lines"]  # how preprocess finds sentences: sentencex, or one per input line
SENTENCE_MODES: tuple[SentenceMode, ...] = typing.get_args(SentenceMode)
SPLITTER_LANGUAGE = "en"  # the rules sentencex applies
# A document longer than this many characters is tokenized in pieces (cut at line ends) to bound memory.
MAX_DOCUMENT_CHARS = 1 << 20
CHUNK_CHARS = 1 << 20  # characters tokenized per task


class CorpusError(ValueError):
    """A corpus, preprocessed folder or packing option a user has to fix."""


# ------------------------------------------------------------------------------------------- reading text
def iter_documents(path: str | os.PathLike, *, keep_newlines: bool = False) -> Iterator[tuple[str, bool]]:
    """Yield (text, continues) for the blank-line-separated documents of a UTF-8 text file.

    The lines of a document are stripped and joined with single spaces, or kept as they are (trailing newline
    dropped) with `keep_newlines`. A document longer than MAX_DOCUMENT_CHARS comes in pieces cut at line ends;
    `continues` is True for every piece but the last.
    """
    for text, _, continues in _iter_documents(Path(path), keep_newlines):
        yield text, continues


def _iter_documents(path: Path, keep_newlines: bool) -> Iterator[tuple[str, list[int], bool]]:
    """iter_documents, with the character offset of each line after the first in the text: (text, starts,
    continues)."""
    lines: list[str] = []
    size = 0

    def document(continues: bool) -> tuple[str, list[int], bool]:
        parts = lines if keep_newlines else [line.strip() for line in lines]
        glue = "" if keep_newlines else " "
        starts, position = [], 0
        for part in parts[:-1]:
            position += len(part) + len(glue)
            starts.append(position)
        text = glue.join(parts)
        if keep_newlines:
            text = text.rstrip("\n")
        if continues:
            text += "\n" if keep_newlines else " "
        return text, starts, continues

    try:
        with path.open("r", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if "\x00" in line:
                    raise CorpusError(
                        _bad_text_file(path) or f"{path}:{lineno}: NUL byte; expected a UTF-8 text file"
                    )
                if line.strip():
                    lines.append(line)
                    size += len(line)
                    if size >= MAX_DOCUMENT_CHARS:
                        yield document(True)
                        lines, size = [], 0
                elif lines:
                    yield document(False)
                    lines, size = [], 0
    except UnicodeDecodeError as exc:
        raise CorpusError(_bad_text_file(path) or f"{path}: not valid UTF-8 ({exc.reason})") from None
    if lines:
        yield document(False)


def _bad_text_file(path: Path) -> str | None:
    """The precise complaint (file and byte offset) about a file that is not UTF-8 text, or None."""
    from rtoolkit.tokenizer import TokenizerError, check_text_file

    try:
        check_text_file(path)
    except TokenizerError as exc:
        return str(exc)
    return None


def in_validation(text: str, fraction: float) -> bool:
    """Whether a document belongs to the held-out split: a hash of its text against `fraction`."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


# -------------------------------------------------------------------------------------------- sentences
def sentence_starts(text: str) -> list[int]:
    """Character offsets where the sentences of `text` after the first begin (sentencex's English rules)."""
    try:
        import sentencex
    except ImportError:
        raise CorpusError(
            "sentence splitting needs the sentencex package (pip install 'sentencex>=1.0.14'); text with one "
            "sentence per line can be preprocessed without it, with sentences='lines' (--sentences lines)"
        ) from None
    return [b["start_index"] for b in sentencex.get_sentence_boundaries(SPLITTER_LANGUAGE, text)[1:]]


def sentence_cuts(text: str, starts: Iterable[int]) -> list[int]:
    """Where `text` is cut into the sentences that begin at `starts`: [0, c1, ..., len(text)], strictly increasing.

    Each cut falls where GPT-2's byte-level pre-tokenizer splits the whole text too, so that encoding the sentences
    one by one gives the ids of the whole text: before the last whitespace character in front of a sentence (which
    then begins with its separating space, " Word" being one piece), or, where a sentence begins inside a run of
    punctuation ('."', '.--', one piece), after that run.
    """
    n = len(text)
    cuts = [0]
    for s in starts:
        while s < n and text[s].isspace():
            s += 1
        if s > 0 and text[s - 1].isspace():
            s -= 1
        else:  # inside a run of punctuation ('."', '.--'), one piece for the pre-tokenizer: cut after it
            while 0 < s < n and _punctuation(text[s - 1]) and _punctuation(text[s]):
                s += 1
        if cuts[-1] < s < n:
            cuts.append(s)
    cuts.append(n)
    return cuts


def _punctuation(ch: str) -> bool:
    """Neither space, letter nor number: the characters GPT-2's pre-tokenizer keeps together in one piece."""
    return not (ch.isspace() or ch.isalpha() or ch.isnumeric())


# -------------------------------------------------------------------------------------------- tokenizing
_WORKER_TOKENIZER: Tokenizer | None = None  # set in each worker process by _init_worker (never in the parent)


def _init_worker(tokenizer_dir: str) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = Tokenizer.from_pretrained(tokenizer_dir)


@dataclass
class _Chunk:
    texts: list[str]
    starts: list[list[int]] | None  # line starts of each text for sentences="lines", else None (sentencex)
    continues: list[bool]
    valid: list[bool]
    chars: int


@dataclass
class _Encoded:
    """A chunk's ids back to back (T,), the token count of each of its sentences (S,) and the number of sentences
    of each text (D,)."""

    ids: np.ndarray
    sentence_lengths: np.ndarray
    sentences_per_text: np.ndarray


def _encode(tokenizer: Tokenizer, texts: list[str], starts: list[list[int]] | None, dtype: str) -> _Encoded:
    """Split each text into sentences (sentencex, or the given line starts) and tokenize them one by one."""
    pieces: list[str] = []
    per_text = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        cuts = sentence_cuts(text, sentence_starts(text) if starts is None else starts[i])
        pieces.extend(text[a:b] for a, b in itertools.pairwise(cuts))
        per_text[i] = len(cuts) - 1
    encoded = list(tokenizer.iter_encode(pieces))
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    ids = np.fromiter(itertools.chain.from_iterable(encoded), dtype=dtype, count=int(lengths.sum()))
    return _Encoded(ids, lengths, per_text)


def _encode_in_worker(texts: list[str], starts: list[list[int]] | None, dtype: str) -> _Encoded:
    assert _WORKER_TOKENIZER is not None
    return _encode(_WORKER_TOKENIZER, texts, starts, dtype)


def _chunks(
    files: Sequence[Path], valid_fraction: float, keep_newlines: bool, lines: bool
) -> Iterator[_Chunk]:
    """Group documents into ~CHUNK_CHARS chunks; the split of a multi-piece document follows its first piece."""

    def empty() -> _Chunk:
        return _Chunk([], [] if lines else None, [], [], 0)

    chunk = empty()
    for path in files:
        piece_of_previous = False
        split_valid = False
        for text, starts, continues in _iter_documents(path, keep_newlines):
            if not piece_of_previous:
                split_valid = in_validation(text, valid_fraction)
            chunk.texts.append(text)
            if chunk.starts is not None:
                chunk.starts.append(starts)
            chunk.continues.append(continues)
            chunk.valid.append(split_valid)
            chunk.chars += len(text)
            piece_of_previous = continues
            if chunk.chars >= CHUNK_CHARS:
                yield chunk
                chunk = empty()
    if chunk.texts:
        yield chunk


class _SplitWriter:
    """Appends documents to OUT/{split}.bin, their end offsets to OUT/{split}.idx and the end offsets of their
    sentences to OUT/{split}.sidx."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype):
        self.dtype = dtype
        self.tokens = (folder / f"{split}.bin").open("wb")
        self.index = (folder / f"{split}.idx").open("wb")
        self.sentence_index = (folder / f"{split}.sidx").open("wb")
        self.index.write(np.zeros(1, dtype=np.int64).tobytes())
        self.sentence_index.write(np.zeros(1, dtype=np.int64).tobytes())
        self.n_tokens = 0
        self.n_documents = 0
        self.n_sentences = 0
        self.open_document = False

    def add(self, ids: np.ndarray, sentence_lengths: np.ndarray, *, continues: bool) -> None:
        """One document (or piece of one): its ids (T,) and the token counts of its sentences, summing to T."""
        if len(ids):
            ends = self.n_tokens + np.cumsum(sentence_lengths[sentence_lengths > 0], dtype=np.int64)
            self.tokens.write(np.asarray(ids, dtype=self.dtype).tobytes())
            self.sentence_index.write(ends.tobytes())
            self.n_tokens += len(ids)
            self.n_sentences += len(ends)
            self.open_document = True
        if not continues and self.open_document:  # empty documents are dropped
            self.index.write(np.array([self.n_tokens], dtype=np.int64).tobytes())
            self.n_documents += 1
            self.open_document = False

    def close(self) -> None:
        if self.open_document:
            self.add(np.zeros(0, self.dtype), np.zeros(0, np.int64), continues=False)
        for f in (self.tokens, self.index, self.sentence_index):
            f.close()


def _input_record(files: Sequence[Path]) -> list[dict[str, Any]]:
    out = []
    for p in files:
        st = p.stat()
        out.append({"path": str(p.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def _splitter_name(sentences: str) -> str:
    """What finds the sentences, for meta.json; fails here, before any work, where sentencex is missing."""
    if sentences == "lines":
        return "lines"
    from importlib.metadata import version

    sentence_starts("")
    return f"sentencex {version('sentencex')} ({SPLITTER_LANGUAGE})"


def preprocess(
    files: Sequence[str | os.PathLike],
    *,
    tokenizer_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    valid_fraction: float = 0.01,
    workers: int = 1,
    keep_newlines: bool = False,
    sentences: SentenceMode = "auto",
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Tokenize text files into OUT (see the module docstring); returns the metadata written to meta.json.

    `sentences`: "auto" splits documents into sentences with sentencex, "lines" takes every input line as one
    sentence. Memory stays bounded (documents are streamed in ~1 MB chunks, at most 2 * workers chunks in flight;
    sentence splitting and tokenization run in the workers) and the output does not depend on `workers`. The folder
    appears atomically when everything is written.
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise CorpusError("no input files given")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"input file not found: {p}")
    if not 0.0 <= valid_fraction <= 1.0:
        raise CorpusError(f"valid_fraction must be in [0, 1], got {valid_fraction}")
    if workers < 1:
        raise CorpusError(f"workers must be >= 1, got {workers}")
    if sentences not in SENTENCE_MODES:
        raise CorpusError(f"sentences must be one of {SENTENCE_MODES}, got {sentences!r}")
    splitter = _splitter_name(sentences)
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    out = Path(out_dir)
    identity = {
        "format_version": FORMAT_VERSION,
        "tokenizer_fingerprint": tokenizer.fingerprint(),
        "valid_fraction": valid_fraction,
        "keep_newlines": keep_newlines,
        "sentences": sentences,
        "inputs": _input_record(paths),
    }
    if (out / META_NAME).is_file():
        old = json.loads((out / META_NAME).read_text(encoding="utf-8"))
        if {k: old.get(k) for k in identity} == identity:
            logger.info("%s is up to date (same inputs, options and tokenizer); nothing to do", out)
            return old
        if not overwrite:
            raise CorpusError(
                f"{out} already holds a preprocessed corpus made from other inputs, options or another tokenizer; "
                f"pass --overwrite to replace it, or choose another --out"
            )
    elif out.exists() and not out.is_dir():
        raise CorpusError(f"--out {out} is a file; expected a folder")
    elif out.exists() and any(out.iterdir()):  # never replaced, not even with --overwrite: it is not ours
        raise CorpusError(
            f"{out} exists and is not a preprocessed corpus folder (it has no {META_NAME}); choose an empty --out"
        )

    dtype = token_dtype(tokenizer.vocab_size)
    total_bytes = sum(p.stat().st_size for p in paths)
    start = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="preprocess", disable=not progress)
    with atomic_directory(out) as tmp:
        writers = {split: _SplitWriter(tmp, split, dtype) for split in SPLITS}
        try:
            chunks = _chunks(paths, valid_fraction, keep_newlines, sentences == "lines")
            for chunk, encoded in _encode_chunks(chunks, tokenizer, tokenizer_dir, workers, dtype):
                token_ends = np.cumsum(encoded.sentence_lengths)
                sentence_ends = np.cumsum(encoded.sentences_per_text)
                for i, (continues, valid) in enumerate(zip(chunk.continues, chunk.valid, strict=True)):
                    s0 = int(sentence_ends[i - 1]) if i else 0
                    s1 = int(sentence_ends[i])
                    t0 = int(token_ends[s0 - 1]) if s0 else 0
                    t1 = int(token_ends[s1 - 1]) if s1 else 0
                    writers["valid" if valid else "train"].add(
                        encoded.ids[t0:t1], encoded.sentence_lengths[s0:s1], continues=continues
                    )
                bar.update(sum(len(t.encode("utf-8")) for t in chunk.texts))
                n_tokens = sum(w.n_tokens for w in writers.values())
                bar.set_postfix(tokens=n_tokens, tok_per_s=f"{n_tokens / (time.perf_counter() - start):.0f}")
        finally:
            for writer in writers.values():
                writer.close()
            bar.close()
        seconds = time.perf_counter() - start
        tokenizer.save_pretrained(tmp / TOKENIZER_DIR)
        meta = {
            **identity,
            "sentence_splitter": splitter,
            "vocab_size": tokenizer.vocab_size,
            "dtype": dtype.name,
            "splits": {
                split: {"tokens": w.n_tokens, "documents": w.n_documents} for split, w in writers.items()
            },
            "sentence_counts": {split: w.n_sentences for split, w in writers.items()},
            "seconds": round(seconds, 3),
            "tokens_per_second": round(sum(w.n_tokens for w in writers.values()) / max(seconds, 1e-9)),
        }
        if meta["splits"]["train"]["tokens"] + meta["splits"]["valid"]["tokens"] == 0:
            raise CorpusError(f"no text found in {len(paths)} input file(s): every document was empty")
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "preprocessed %d file(s): %d train / %d valid tokens in %.1fs",
        len(paths),
        meta["splits"]["train"]["tokens"],
        meta["splits"]["valid"]["tokens"],
        seconds,
    )
    return meta


def _encode_chunks(
    chunks: Iterable[_Chunk],
    tokenizer: Tokenizer,
    tokenizer_dir: str | os.PathLike,
    workers: int,
    dtype: np.dtype,
) -> Iterator[tuple[_Chunk, _Encoded]]:
    """Split and tokenize chunks in order: in this process, or in `workers` processes with a bounded window."""
    if workers == 1:
        for chunk in chunks:
            yield chunk, _encode(tokenizer, chunk.texts, chunk.starts, dtype.name)
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(str(tokenizer_dir),)) as pool:
        pending: deque[tuple[_Chunk, Future]] = deque()
        for chunk in chunks:
            pending.append((chunk, pool.submit(_encode_in_worker, chunk.texts, chunk.starts, dtype.name)))
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


# -------------------------------------------------------------------------------------------- reading back
def load_meta(data_dir: str | os.PathLike) -> dict[str, Any]:
    """meta.json of a preprocessed folder, checked for this code's format version."""
    folder = Path(data_dir)
    path = folder / META_NAME
    if not path.is_file():
        raise CorpusError(
            f"{folder} is not a preprocessed corpus (no {META_NAME}); run `rtoolkit preprocess` first"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorpusError(
            f"{path}: not valid JSON ({exc}); the folder is damaged, preprocess again"
        ) from None
    if not isinstance(meta, dict):
        raise CorpusError(f"{path}: expected a JSON object, got {type(meta).__name__}; preprocess again")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CorpusError(
            f"{path}: format version {meta.get('format_version')} is not {FORMAT_VERSION}; preprocess again"
        )
    splits = meta.get("splits")
    missing = [k for k in ("dtype", "tokenizer_fingerprint", "vocab_size") if k not in meta]
    if not isinstance(splits, dict) or any(
        not isinstance(splits.get(s), dict) or not isinstance(splits[s].get("tokens"), int) for s in SPLITS
    ):
        missing.append("splits.train/valid.tokens")
    if missing:
        raise CorpusError(f"{path}: missing {', '.join(missing)}; the folder is damaged, preprocess again")
    return meta


@dataclass
class TokenSplit:
    """One split of a preprocessed folder, memory-mapped: `tokens` (N,), document `offsets` (D + 1,) and sentence
    `sentences` (S + 1,) offsets into `tokens`; every document offset is also a sentence offset."""

    tokens: np.ndarray
    offsets: np.ndarray
    sentences: np.ndarray

    @classmethod
    def open(cls, data_dir: str | os.PathLike, split: str) -> TokenSplit:
        if split not in SPLITS:
            raise CorpusError(f"split must be one of {SPLITS}, got {split!r}")
        folder = Path(data_dir)
        meta = load_meta(folder)
        bin_path, idx_path = folder / f"{split}.bin", folder / f"{split}.idx"
        sidx_path = folder / f"{split}.sidx"
        expected = meta["splits"][split]["tokens"]
        try:
            dtype = np.dtype(meta["dtype"])
        except TypeError:
            raise CorpusError(
                f"{folder / META_NAME}: unknown dtype {meta['dtype']!r}; preprocess again"
            ) from None
        for path in (bin_path, idx_path, sidx_path):
            if not path.is_file():
                raise CorpusError(f"{path} is missing; the folder is damaged, preprocess again")
        for path, item in ((bin_path, dtype.itemsize), (idx_path, 8), (sidx_path, 8)):
            if path.stat().st_size % item:
                raise CorpusError(
                    f"{path}: {path.stat().st_size} bytes is not a whole number of {item}-byte values; the file is "
                    f"truncated, preprocess again"
                )
        offsets = np.fromfile(idx_path, dtype=np.int64) if idx_path.stat().st_size else np.zeros(1, np.int64)
        if offsets[0] != 0 or (np.diff(offsets) < 0).any():
            raise CorpusError(f"{idx_path}: document offsets are not increasing from 0; preprocess again")
        if expected == 0:
            tokens = np.zeros(0, dtype=dtype)
        else:
            tokens = np.memmap(bin_path, dtype=dtype, mode="r")
        if len(tokens) != expected or offsets[-1] != expected:
            raise CorpusError(
                f"{bin_path}: holds {len(tokens)} tokens, index ends at {offsets[-1]}, meta.json says {expected}; "
                f"the folder is damaged, preprocess again"
            )
        counts = meta.get("sentence_counts")
        count = counts.get(split) if isinstance(counts, dict) else None
        sentences = _open_sentences(sidx_path, offsets, expected, count)
        return cls(tokens=tokens, offsets=offsets, sentences=sentences)

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_sentences(self) -> int:
        return len(self.sentences) - 1

    def document(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i] : self.offsets[i + 1]])


def _open_sentences(path: Path, offsets: np.ndarray, n_tokens: int, count: object) -> np.ndarray:
    """The sentence offsets of OUT/{split}.sidx (memory-mapped), checked against the documents and meta.json."""
    damaged = "the file is damaged, preprocess again"
    if path.stat().st_size == 0:
        raise CorpusError(f"{path}: empty; expected at least the offset 0; {damaged}")
    sentences = np.memmap(path, dtype=np.int64, mode="r")
    if sentences[0] != 0 or (np.diff(sentences) <= 0).any():
        raise CorpusError(f"{path}: sentence offsets are not strictly increasing from 0; {damaged}")
    if sentences[-1] != n_tokens:
        raise CorpusError(
            f"{path}: sentence offsets end at {sentences[-1]}, the split holds {n_tokens} tokens; {damaged}"
        )
    if count is not None and count != len(sentences) - 1:
        raise CorpusError(f"{path}: holds {len(sentences) - 1} sentences, meta.json says {count}; {damaged}")
    at = np.minimum(np.searchsorted(sentences, offsets), len(sentences) - 1)
    if (sentences[at] != offsets).any():
        bad = int(offsets[np.flatnonzero(sentences[at] != offsets)[0]])
        raise CorpusError(f"{path}: no sentence ends where a document ends (token {bad}); {damaged}")
    return sentences


# ------------------------------------------------------------------------------------------------ packing
class BlockDataset:
    """Training blocks packed from a TokenSplit in one of the FORMATS (see the module docstring), each
    `<s> ... </s>` and at most `seq_len` long.

    `dataset[i]` is a (L,) int64 tensor with L <= seq_len; `lengths` (n_blocks,) gives every block's L without
    reading tokens. The plan is a block's [start, end) in the token stream: the split's tokens for doc-sentences,
    the stream with one `</s>` after each document for full-sentences and none.
    """

    def __init__(self, split: TokenSplit, *, seq_len: int, format: Format, bos_id: int = 0, eos_id: int = 2):
        if format not in FORMATS:
            raise CorpusError(f"format must be one of {FORMATS}, got {format!r}")
        if seq_len < 3:
            raise CorpusError(f"seq_len must be at least 3 (<s>, one token, </s>), got {seq_len}")
        self.split, self.seq_len, self.format = split, seq_len, format
        self.bos_id, self.eos_id = bos_id, eos_id
        self.content = seq_len - 2  # text tokens per block between <s> and </s>
        offsets = split.offsets
        # The stream of full-sentences and none: document d's tokens start at offsets[d] + d, its </s> follows.
        self._separated = format != "doc-sentences"
        self._virtual_starts = offsets + np.arange(len(offsets), dtype=np.int64)  # (D + 1,)
        if format == "none":
            stream = int(self._virtual_starts[-1])
            self._starts = np.arange(0, stream, self.content, dtype=np.int64)
            self._ends = np.minimum(self._starts + self.content, stream)
        else:
            self._starts, self._ends = _pack_sentences(
                np.asarray(split.sentences), offsets, self.content, separated=self._separated
            )
        self._n = len(self._starts)
        self.lengths = self._ends - self._starts + 2

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self._n:
            raise IndexError(f"block {i} out of range ({self._n} blocks)")
        start, end = int(self._starts[i]), int(self._ends[i])
        if not self._separated:
            body = np.asarray(self.split.tokens[start:end], dtype=np.int64)
        else:
            starts = self._virtual_starts
            v = np.arange(start, end, dtype=np.int64)
            doc = np.searchsorted(starts, v, side="right") - 1  # document of each stream position
            real = self.split.offsets[doc] + v - starts[doc]
            is_sep = real >= self.split.offsets[doc + 1]
            body = np.full(len(v), self.eos_id, dtype=np.int64)
            if (~is_sep).any():
                lo, hi = int(real[~is_sep].min()), int(real[~is_sep].max()) + 1
                window = np.asarray(self.split.tokens[lo:hi], dtype=np.int64)
                body[~is_sep] = window[real[~is_sep] - lo]
        out = np.empty(len(body) + 2, dtype=np.int64)
        out[0], out[1:-1], out[-1] = self.bos_id, body, self.eos_id
        return torch.from_numpy(out)


def _pack_sentences(
    sentences: np.ndarray, offsets: np.ndarray, content: int, *, separated: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy sentence packing: the [start, end) of every block, (n_blocks,) each.

    A block takes whole sentences while they fit in `content` tokens. A sentence longer than that is cut into
    `content`-token pieces, its last (shorter or equal) piece starting a block that whole sentences may follow.
    `separated` (full-sentences): positions are in the stream with one `</s>` after each document, the `</s>`
    counted with the document's last sentence, and blocks run on across documents. Else (doc-sentences): positions
    are the split's own, and a block stops at its document's end.
    """
    bounds = sentences.astype(np.int64)  # (S + 1,)
    doc_ends = offsets[1:]
    if separated:  # shift each boundary by the separators before it (one per document ending at or before it)
        bounds = bounds + np.searchsorted(doc_ends, bounds, side="right")
    if len(bounds) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # Sentences longer than a block are cut into pieces: boundaries at start + k * content, k < ceil(size / content).
    pieces = -(-np.diff(bounds) // content)  # (S,)
    k = np.arange(int(pieces.sum()), dtype=np.int64) - np.repeat(np.cumsum(pieces) - pieces, pieces)  # (P,)
    # (P + 1,): no piece is longer than a block, so every block holds at least one.
    bounds = np.append(np.repeat(bounds[:-1], pieces) + k * content, bounds[-1])
    limit = bounds[:-1] + content
    if not separated:  # a block ends at its document's end at the latest
        limit = np.minimum(limit, doc_ends[np.searchsorted(doc_ends, bounds[:-1], side="right")])
    # For a block starting at each boundary: the index of the last boundary it reaches, (P,).
    following = np.searchsorted(bounds, limit, side="right") - 1
    steps = following.tolist()
    chain = []
    i, last = 0, len(bounds) - 1
    while i < last:  # one step per block
        chain.append(i)
        i = steps[i]
    first = np.asarray(chain, dtype=np.int64)
    return bounds[first], bounds[following[first]]


@dataclass(frozen=True)
class Item:
    """One sequence fed to the model: a block and the key its mask is seeded with (epoch, or the static copy)."""

    block: int
    mask_key: int


def epoch_batches(
    lengths: np.ndarray,
    *,
    epoch: int,
    seed: int,
    batch_size: int,
    seq_len: int,
    format: Format,
    masking: str = "dynamic",
    static_copies: int = 10,
    shuffle: bool = True,
) -> list[list[Item]]:
    """The global batches of one epoch, deterministic in (seed, epoch).

    none: `batch_size` full-length blocks per batch (the stream's short tail block is left out), so batches hold
    no padding. full-sentences: `batch_size` blocks per batch, blocks of similar length grouped (within windows of
    64 batches) so that little padding is needed. doc-sentences: blocks of similar length are grouped and a batch
    takes as many as fit in batch_size * seq_len padded tokens (never fewer than batch_size). An incomplete last
    batch is dropped. Static masking duplicates the data `static_copies` times, the copy number keying the mask;
    dynamic masking keys the mask on the epoch.
    """
    if masking not in ("dynamic", "static"):
        raise CorpusError(f"masking must be 'dynamic' or 'static', got {masking!r}")
    if format not in FORMATS:
        raise CorpusError(f"format must be one of {FORMATS}, got {format!r}")
    n_blocks = len(lengths)
    copies = static_copies if masking == "static" else 1
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n_blocks * copies) if shuffle else np.arange(n_blocks * copies)

    def item(j: int) -> Item:
        block = int(j % n_blocks)
        return Item(block=block, mask_key=int(j // n_blocks) if masking == "static" else epoch)

    window = 64 * batch_size
    if format == "none":
        # The stream's short tail block is left out: every batch is then padding-free (no attention mask, so
        # SDPA may take the flash kernel) and has one static shape (torch.compile never recompiles).
        order = order[lengths[order % n_blocks] == seq_len]
    elif format == "full-sentences":
        # Longest first within each window: the rows of a batch have nearly the same length.
        parts = [order[w : w + window] for w in range(0, len(order), window)]
        order = np.concatenate(
            [p[np.argsort(-lengths[p % n_blocks], kind="stable")] for p in parts] or [order]
        )
    if format != "doc-sentences":
        usable = len(order) // batch_size * batch_size
        batches = [[item(j) for j in order[s : s + batch_size]] for s in range(0, usable, batch_size)]
        if shuffle and format == "full-sentences":
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches
    budget = batch_size * seq_len
    batches: list[list[Item]] = []
    for w in range(0, len(order), window):
        part = order[w : w + window]
        part = part[np.argsort(lengths[part % n_blocks], kind="stable")[::-1]]  # longest first
        current: list[int] = []
        longest = 0
        for j in part:
            length = int(lengths[j % n_blocks])
            if current and (len(current) + 1) * max(longest, length) > budget:
                batches.append([item(k) for k in current])
                current, longest = [], 0
            current.append(int(j))
            longest = max(longest, length)
        if len(current) >= batch_size:
            batches.append([item(k) for k in current])
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


__all__ = [
    "BlockDataset",
    "CorpusError",
    "FORMATS",
    "FORMAT_VERSION",
    "Format",
    "SENTENCE_MODES",
    "SentenceMode",
    "Item",
    "TokenSplit",
    "epoch_batches",
    "in_validation",
    "iter_documents",
    "load_meta",
    "preprocess",
    "sentence_cuts",
    "sentence_starts",
    "token_dtype",
]
