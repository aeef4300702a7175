"""Raw text -> token files on disk -> packed blocks -> batches of block indices.

Preprocessing (`preprocess`) streams text files: a document is a blank-line-separated block (a file's end also ends
one). The lines of a document are joined with single spaces (hard-wrapped books would otherwise teach the model to
predict line breaks; fairseq never sees newline tokens either); `keep_newlines=True` keeps them. Each document goes
to the train or the validation split by a hash of its text (deterministic, order-free, and duplicates never
straddle the splits), is tokenized without special tokens and appended to

    OUT/train.bin, OUT/valid.bin   all token ids of a split back to back (uint16 when the vocabulary fits, else int32)
    OUT/train.idx, OUT/valid.idx   int64 document offsets into the .bin (n_documents + 1 values, starting at 0)
    OUT/meta.json                  format version, tokenizer fingerprint, dtype, inputs, counts
    OUT/tokenizer/                 the tokenizer the ids belong to

Both kinds of file are read back with numpy memmaps, so neither preprocessing nor training holds the corpus in
memory. Re-running with the same inputs and tokenizer is a no-op; different inputs need `overwrite=True`.

Packing (`BlockDataset`, the paper's §4.2 formats, no next-sentence prediction):
    full-sentences  blocks of exactly `seq_len` tokens (`<s>` + seq_len - 2 tokens of contiguous text + `</s>`);
                    text runs across document boundaries, which are marked by an extra `</s>`. Only the stream's
                    last block is shorter; training batches leave it out, so they hold no padding at all.
    doc-sentences   the same, but a block never crosses a document: a document's tail makes a shorter block, and
                    `epoch_batches` then packs more sequences into a batch to keep tokens per batch about constant.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtoolkit.checkpoint import atomic_directory
from rtoolkit.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_NAME = "meta.json"
TOKENIZER_DIR = "tokenizer"
SPLITS = ("train", "valid")
FORMATS = ("full-sentences", "doc-sentences")
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
    path = Path(path)
    lines: list[str] = []
    size = 0

    def text() -> str:
        if keep_newlines:
            return "".join(lines).rstrip("\n")
        return " ".join(line.strip() for line in lines)

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
                        yield text() + ("\n" if keep_newlines else " "), True
                        lines, size = [], 0
                elif lines:
                    yield text(), False
                    lines, size = [], 0
    except UnicodeDecodeError as exc:
        raise CorpusError(_bad_text_file(path) or f"{path}: not valid UTF-8 ({exc.reason})") from None
    if lines:
        yield text(), False


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


# -------------------------------------------------------------------------------------------- tokenizing
_WORKER_TOKENIZER: Tokenizer | None = None  # set in each worker process by _init_worker (never in the parent)


def _init_worker(tokenizer_dir: str) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = Tokenizer.from_pretrained(tokenizer_dir)


def _encode_in_worker(texts: list[str]) -> list[list[int]]:
    assert _WORKER_TOKENIZER is not None
    return list(_WORKER_TOKENIZER.iter_encode(texts))


@dataclass
class _Chunk:
    texts: list[str]
    continues: list[bool]
    valid: list[bool]
    chars: int


def _chunks(files: Sequence[Path], valid_fraction: float, keep_newlines: bool) -> Iterator[_Chunk]:
    """Group documents into ~CHUNK_CHARS chunks; the split of a multi-piece document follows its first piece."""
    chunk = _Chunk([], [], [], 0)
    for path in files:
        piece_of_previous = False
        split_valid = False
        for text, continues in iter_documents(path, keep_newlines=keep_newlines):
            if not piece_of_previous:
                split_valid = in_validation(text, valid_fraction)
            chunk.texts.append(text)
            chunk.continues.append(continues)
            chunk.valid.append(split_valid)
            chunk.chars += len(text)
            piece_of_previous = continues
            if chunk.chars >= CHUNK_CHARS:
                yield chunk
                chunk = _Chunk([], [], [], 0)
    if chunk.texts:
        yield chunk


class _SplitWriter:
    """Appends documents to OUT/{split}.bin and their end offsets to OUT/{split}.idx."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype):
        self.dtype = dtype
        self.tokens = (folder / f"{split}.bin").open("wb")
        self.index = (folder / f"{split}.idx").open("wb")
        self.index.write(np.zeros(1, dtype=np.int64).tobytes())
        self.n_tokens = 0
        self.n_documents = 0
        self.open_document = False

    def add(self, ids: list[int], *, continues: bool) -> None:
        if ids:
            self.tokens.write(np.asarray(ids, dtype=self.dtype).tobytes())
            self.n_tokens += len(ids)
            self.open_document = True
        if not continues and self.open_document:  # empty documents are dropped
            self.index.write(np.array([self.n_tokens], dtype=np.int64).tobytes())
            self.n_documents += 1
            self.open_document = False

    def close(self) -> None:
        if self.open_document:
            self.add([], continues=False)
        self.tokens.close()
        self.index.close()


def _input_record(files: Sequence[Path]) -> list[dict[str, Any]]:
    out = []
    for p in files:
        st = p.stat()
        out.append({"path": str(p.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def preprocess(
    files: Sequence[str | os.PathLike],
    *,
    tokenizer_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    valid_fraction: float = 0.01,
    workers: int = 1,
    keep_newlines: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Tokenize text files into OUT (see the module docstring); returns the metadata written to meta.json.

    Memory stays bounded (documents are streamed in ~1 MB chunks, at most 2 * workers chunks in flight) and the
    output does not depend on `workers`. The folder appears atomically when everything is written.
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
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    out = Path(out_dir)
    identity = {
        "format_version": FORMAT_VERSION,
        "tokenizer_fingerprint": tokenizer.fingerprint(),
        "valid_fraction": valid_fraction,
        "keep_newlines": keep_newlines,
        "inputs": _input_record(paths),
    }
    if (out / META_NAME).is_file():
        old = json.loads((out / META_NAME).read_text(encoding="utf-8"))
        if {k: old.get(k) for k in identity} == identity:
            logger.info("%s is up to date (same inputs and tokenizer); nothing to do", out)
            return old
        if not overwrite:
            raise CorpusError(
                f"{out} already holds a preprocessed corpus made from other inputs or another tokenizer; "
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
            for chunk, encoded in _encode_chunks(
                _chunks(paths, valid_fraction, keep_newlines), tokenizer, tokenizer_dir, workers
            ):
                for ids, continues, valid in zip(encoded, chunk.continues, chunk.valid, strict=True):
                    writers["valid" if valid else "train"].add(ids, continues=continues)
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
            "vocab_size": tokenizer.vocab_size,
            "dtype": dtype.name,
            "splits": {
                split: {"tokens": w.n_tokens, "documents": w.n_documents} for split, w in writers.items()
            },
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
    chunks: Iterable[_Chunk], tokenizer: Tokenizer, tokenizer_dir: str | os.PathLike, workers: int
) -> Iterator[tuple[_Chunk, list[list[int]]]]:
    """Tokenize chunks in order: in this process, or in `workers` processes with a bounded window."""
    if workers == 1:
        for chunk in chunks:
            yield chunk, list(tokenizer.iter_encode(chunk.texts))
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(str(tokenizer_dir),)) as pool:
        pending: deque[tuple[_Chunk, Future]] = deque()
        for chunk in chunks:
            pending.append((chunk, pool.submit(_encode_in_worker, chunk.texts)))
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
    """One split of a preprocessed folder, memory-mapped: `tokens` (N,) and document `offsets` (D + 1,)."""

    tokens: np.ndarray
    offsets: np.ndarray

    @classmethod
    def open(cls, data_dir: str | os.PathLike, split: str) -> TokenSplit:
        if split not in SPLITS:
            raise CorpusError(f"split must be one of {SPLITS}, got {split!r}")
        folder = Path(data_dir)
        meta = load_meta(folder)
        bin_path, idx_path = folder / f"{split}.bin", folder / f"{split}.idx"
        expected = meta["splits"][split]["tokens"]
        try:
            dtype = np.dtype(meta["dtype"])
        except TypeError:
            raise CorpusError(
                f"{folder / META_NAME}: unknown dtype {meta['dtype']!r}; preprocess again"
            ) from None
        for path in (bin_path, idx_path):
            if not path.is_file():
                raise CorpusError(f"{path} is missing; the folder is damaged, preprocess again")
        for path, item in ((bin_path, dtype.itemsize), (idx_path, 8)):
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
        return cls(tokens=tokens, offsets=offsets)

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1

    def document(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i] : self.offsets[i + 1]])


# ------------------------------------------------------------------------------------------------ packing
class BlockDataset:
    """Fixed-length training blocks cut from a TokenSplit, each `<s> ... </s>` and at most `seq_len` long.

    `dataset[i]` is a (L,) int64 tensor with L <= seq_len; `lengths` gives every block's L without reading tokens.
    """

    def __init__(self, split: TokenSplit, *, seq_len: int, format: str, bos_id: int = 0, eos_id: int = 2):
        if format not in FORMATS:
            raise CorpusError(f"format must be one of {FORMATS}, got {format!r}")
        if seq_len < 3:
            raise CorpusError(f"seq_len must be at least 3 (<s>, one token, </s>), got {seq_len}")
        self.split, self.seq_len, self.format = split, seq_len, format
        self.bos_id, self.eos_id = bos_id, eos_id
        self.content = seq_len - 2  # text tokens per block between <s> and </s>
        offsets = split.offsets
        if format == "full-sentences":
            # The virtual stream: every document followed by one </s> separator.
            self._virtual_starts = offsets + np.arange(len(offsets), dtype=np.int64)  # (D + 1,)
            stream = int(self._virtual_starts[-1])
            self._n = -(-stream // self.content) if stream else 0
            self.lengths = np.full(self._n, seq_len, dtype=np.int64)
            if self._n:
                self.lengths[-1] = stream - (self._n - 1) * self.content + 2
        else:
            doc_lens = np.diff(offsets)
            per_doc = -(-doc_lens // self.content)  # (D,) blocks per document
            doc_of_block = np.repeat(np.arange(len(doc_lens)), per_doc)
            first = np.cumsum(per_doc) - per_doc
            k = np.arange(len(doc_of_block)) - first[doc_of_block]
            self._starts = offsets[doc_of_block] + k * self.content
            self._ends = np.minimum(self._starts + self.content, offsets[doc_of_block + 1])
            self._n = len(self._starts)
            self.lengths = self._ends - self._starts + 2

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self._n:
            raise IndexError(f"block {i} out of range ({self._n} blocks)")
        if self.format == "doc-sentences":
            body = np.asarray(self.split.tokens[self._starts[i] : self._ends[i]], dtype=np.int64)
        else:
            starts = self._virtual_starts
            v = np.arange(i * self.content, min((i + 1) * self.content, int(starts[-1])), dtype=np.int64)
            doc = np.searchsorted(starts, v, side="right") - 1  # document of each virtual position
            local = v - starts[doc]
            real = self.split.offsets[doc] + local
            is_sep = real >= self.split.offsets[doc + 1]
            body = np.full(len(v), self.eos_id, dtype=np.int64)
            if (~is_sep).any():
                lo, hi = int(real[~is_sep].min()), int(real[~is_sep].max()) + 1
                window = np.asarray(self.split.tokens[lo:hi], dtype=np.int64)
                body[~is_sep] = window[real[~is_sep] - lo]
        out = np.empty(len(body) + 2, dtype=np.int64)
        out[0], out[1:-1], out[-1] = self.bos_id, body, self.eos_id
        return torch.from_numpy(out)


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
    format: str,
    masking: str = "dynamic",
    static_copies: int = 10,
    shuffle: bool = True,
) -> list[list[Item]]:
    """The global batches of one epoch, deterministic in (seed, epoch).

    full-sentences: `batch_size` full-length blocks per batch (the short tail block is left out). doc-sentences: blocks of similar length are grouped and a batch
    takes as many as fit in batch_size * seq_len padded tokens (never fewer than batch_size). An incomplete last
    batch is dropped. Static masking duplicates the data `static_copies` times, the copy number keying the mask;
    dynamic masking keys the mask on the epoch.
    """
    if masking not in ("dynamic", "static"):
        raise CorpusError(f"masking must be 'dynamic' or 'static', got {masking!r}")
    n_blocks = len(lengths)
    copies = static_copies if masking == "static" else 1
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n_blocks * copies) if shuffle else np.arange(n_blocks * copies)

    def item(j: int) -> Item:
        block = int(j % n_blocks)
        return Item(block=block, mask_key=int(j // n_blocks) if masking == "static" else epoch)

    if format == "full-sentences":
        # The stream's short tail block is left out: every batch is then padding-free (no attention mask, so
        # SDPA may take the flash kernel) and has one static shape (torch.compile never recompiles).
        order = order[lengths[order % n_blocks] == seq_len]
        usable = len(order) // batch_size * batch_size
        return [[item(j) for j in order[s : s + batch_size]] for s in range(0, usable, batch_size)]
    budget = batch_size * seq_len
    window = 64 * batch_size
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
    "Item",
    "TokenSplit",
    "epoch_batches",
    "in_validation",
    "iter_documents",
    "load_meta",
    "preprocess",
    "token_dtype",
]
