"""Byte-level BPE tokenizer with RoBERTa's special tokens and input format.

Ids: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, then the BPE vocabulary, then `<mask>` last (50264 in roberta-base).
Singles encode as `<s> A </s>`, pairs as `<s> A </s></s> B </s>`. `<mask>` strips the space before it, so
"Paris is the <mask> of France." predicts the word with its leading space (" capital").

Reads and writes Hugging Face folders: `tokenizer.json` (fast) and `vocab.json` + `merges.txt` (slow).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as _HFTokenizer

BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
SPECIAL_TOKENS = (BOS, PAD, EOS, UNK)
DEFAULT_MAX_LENGTH = 512
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


class TokenizerError(ValueError):
    """A tokenizer folder or input a user has to fix."""


def _configure(tok: _HFTokenizer) -> _HFTokenizer:
    """Set RoBERTa's byte-level pipeline and the `<s> A </s></s> B </s>` post-processor on a BPE tokenizer."""
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = processors.RobertaProcessing(
        (EOS, eos), (BOS, bos), trim_offsets=True, add_prefix_space=False
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_special_tokens([AddedToken(MASK, lstrip=True, special=True, normalized=False)])
    tok.no_padding()
    tok.no_truncation()
    return tok


class Tokenizer:
    """RoBERTa's byte-level BPE over the `tokenizers` library. Safe to share between threads."""

    def __init__(self, tokenizer: _HFTokenizer, *, model_max_length: int = DEFAULT_MAX_LENGTH):
        for token in (BOS, PAD, EOS, UNK, MASK):
            if tokenizer.token_to_id(token) is None:
                raise TokenizerError(
                    f"tokenizer has no {token} token; RoBERTa needs {BOS} {PAD} {EOS} {UNK} {MASK}"
                )
        self._tok = tokenizer
        self.model_max_length = model_max_length
        self._truncating: dict[int, _HFTokenizer] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- training
    @classmethod
    def train(
        cls,
        files: Sequence[str | os.PathLike],
        *,
        vocab_size: int = 50265,
        min_frequency: int = 2,
        show_progress: bool = False,
    ) -> Tokenizer:
        """Train byte-level BPE on text files. The result has exactly `vocab_size` ids when the text allows."""
        paths = [str(p) for p in files]
        if not paths:
            raise TokenizerError("no training files given")
        letters = 0
        for p in paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"training file not found: {p}")
            letters += check_text_file(p)
        if letters == 0:
            raise TokenizerError(
                f"no text to train on: {', '.join(paths[:3])}{' ...' if len(paths) > 3 else ''} hold(s) only whitespace"
            )
        return cls._train(
            lambda tok, trainer: tok.train(paths, trainer), vocab_size, min_frequency, show_progress
        )

    @classmethod
    def train_from_iterator(
        cls,
        texts: Iterable[str],
        *,
        vocab_size: int = 50265,
        min_frequency: int = 2,
        show_progress: bool = False,
    ) -> Tokenizer:
        """Train byte-level BPE on an iterable of texts (at least one must hold non-whitespace text)."""
        seen = [False]

        def checked() -> Iterator[str]:
            for i, text in enumerate(texts):
                _check_text(text, f"texts[{i}]")
                seen[0] = seen[0] or not text.isspace() and bool(text)
                yield text

        tokenizer = cls._train(
            lambda tok, trainer: tok.train_from_iterator(checked(), trainer),
            vocab_size,
            min_frequency,
            show_progress,
        )
        if not seen[0]:
            raise TokenizerError("no text to train on: every text given is empty or whitespace")
        return tokenizer

    @classmethod
    def _train(cls, run, vocab_size: int, min_frequency: int, show_progress: bool) -> Tokenizer:
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        minimum = len(SPECIAL_TOKENS) + len(alphabet) + 1
        if vocab_size < minimum:
            raise TokenizerError(
                f"vocab_size must be at least {minimum} (4 specials + 256 bytes + <mask>), got {vocab_size}"
            )
        if min_frequency < 1:
            raise TokenizerError(f"min_frequency must be >= 1, got {min_frequency}")
        tok = _HFTokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - 1,  # <mask> takes the last id
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=alphabet,
            show_progress=show_progress,
        )
        run(tok, trainer)
        return cls(_configure(tok))

    # ------------------------------------------------------------------------------------------------ i/o
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> Tokenizer:
        """Load `tokenizer.json`, or `vocab.json` + `merges.txt`, from a folder."""
        folder = Path(path)
        if not folder.is_dir():
            raise TokenizerError(f"tokenizer folder not found: {folder}")
        max_length = DEFAULT_MAX_LENGTH
        config_file = folder / "tokenizer_config.json"
        if config_file.is_file():
            try:
                value = json.loads(config_file.read_text(encoding="utf-8")).get("model_max_length")
            except json.JSONDecodeError as exc:
                raise TokenizerError(
                    f"{config_file}: invalid JSON ({exc.msg} at line {exc.lineno})"
                ) from None
            if isinstance(value, int) and 0 < value < 10**6:
                max_length = value
        fast, vocab, merges = folder / "tokenizer.json", folder / "vocab.json", folder / "merges.txt"
        if fast.is_file():
            try:
                tok = _HFTokenizer.from_file(str(fast))
            except Exception as exc:  # the tokenizers library raises a bare Exception on bad files
                raise TokenizerError(f"{fast}: not a valid tokenizer.json ({exc})") from None
            if not isinstance(tok.model, models.BPE):
                raise TokenizerError(f"{fast}: expected a BPE model, found {type(tok.model).__name__}")
        elif vocab.is_file() and merges.is_file():
            try:
                tok = _HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
            except Exception as exc:
                raise TokenizerError(
                    f"{vocab} / {merges}: cannot be read as byte-level BPE ({exc})"
                ) from None
        else:
            raise TokenizerError(
                f"{folder} has no tokenizer: expected tokenizer.json, or vocab.json and merges.txt"
            )
        return cls(_configure(tok), model_max_length=max_length)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write tokenizer.json, vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(directory / "tokenizer.json"))
        vocab = self._tok.get_vocab(with_added_tokens=True)
        ordered = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
        (directory / "vocab.json").write_text(json.dumps(ordered, ensure_ascii=False), encoding="utf-8")
        model = json.loads(self._tok.to_str())["model"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        specials = {
            "bos_token": BOS,
            "eos_token": EOS,
            "sep_token": EOS,
            "cls_token": BOS,
            "unk_token": UNK,
            "pad_token": PAD,
        }
        added = {
            str(self.token_to_id(t)): {
                "content": t,
                "lstrip": t == MASK,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
                "special": True,
            }
            for t in (*SPECIAL_TOKENS, MASK)
        }
        config = {
            "tokenizer_class": "RobertaTokenizer",
            "model_max_length": self.model_max_length,
            "add_prefix_space": False,
            "trim_offsets": True,
            "errors": "replace",
            "mask_token": MASK,
            "added_tokens_decoder": added,
            **specials,
        }
        (directory / "tokenizer_config.json").write_text(
            json.dumps(config, indent=2) + "\n", encoding="utf-8"
        )
        special_map = {
            **specials,
            "mask_token": {
                "content": MASK,
                "lstrip": True,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
            },
        }
        (directory / "special_tokens_map.json").write_text(
            json.dumps(special_map, indent=2) + "\n", encoding="utf-8"
        )
        return directory

    # --------------------------------------------------------------------------------------------- fields
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def bos_token_id(self) -> int:
        return self._tok.token_to_id(BOS)

    @property
    def pad_token_id(self) -> int:
        return self._tok.token_to_id(PAD)

    @property
    def eos_token_id(self) -> int:
        return self._tok.token_to_id(EOS)

    @property
    def unk_token_id(self) -> int:
        return self._tok.token_to_id(UNK)

    @property
    def mask_token_id(self) -> int:
        return self._tok.token_to_id(MASK)

    @property
    def mask_token(self) -> str:
        return MASK

    @property
    def special_ids(self) -> list[int]:
        return sorted(
            {self.bos_token_id, self.pad_token_id, self.eos_token_id, self.unk_token_id, self.mask_token_id}
        )

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, index: int) -> str | None:
        return self._tok.id_to_token(index)

    def fingerprint(self) -> str:
        """sha256 of the serialized tokenizer: two tokenizers with equal fingerprints give equal ids."""
        return hashlib.sha256(self._tok.to_str().encode("utf-8")).hexdigest()

    def word_starts(self) -> torch.Tensor:
        """(V,) bool: True for ids that begin a word (a leading 'Ġ' or a special token), for whole-word masking."""
        starts = torch.zeros(self.vocab_size, dtype=torch.bool)
        for token, index in self._tok.get_vocab(with_added_tokens=True).items():
            if token.startswith("Ġ") or token in (BOS, PAD, EOS, UNK, MASK):
                starts[index] = True
        return starts

    # ------------------------------------------------------------------------------------------- encoding
    def _for_length(self, max_length: int | None) -> _HFTokenizer:
        if max_length is None:
            return self._tok
        if max_length < 4:
            raise TokenizerError(
                f"max_length must be at least 4 (room for <s> </s></s> </s>), got {max_length}"
            )
        with self._lock:
            tok = self._truncating.get(max_length)
            if tok is None:
                tok = _HFTokenizer.from_str(self._tok.to_str())
                tok.enable_truncation(max_length, strategy="longest_first")
                self._truncating[max_length] = tok
        return tok

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        *,
        max_length: int | None = DEFAULT_MAX_LENGTH,
        add_special_tokens: bool = True,
    ) -> list[int]:
        """Token ids of one text (or pair), `<s>`/`</s>` included, truncated to `max_length` (None: no limit)."""
        _check_text(text, "text")
        if text_pair is not None:
            _check_text(text_pair, "text_pair")
        return self._for_length(max_length).encode(text, text_pair, add_special_tokens=add_special_tokens).ids

    def encode_batch(
        self,
        texts: Sequence[str],
        text_pairs: Sequence[str] | None = None,
        *,
        max_length: int | None = DEFAULT_MAX_LENGTH,
        add_special_tokens: bool = True,
    ) -> list[list[int]]:
        """Token ids of many texts (in parallel inside the tokenizers library)."""
        texts = list(texts)
        for i, t in enumerate(texts):
            _check_text(t, f"texts[{i}]")
        tok = self._for_length(max_length)
        if text_pairs is None:
            encodings = tok.encode_batch(texts, add_special_tokens=add_special_tokens)
        else:
            pairs = list(text_pairs)
            if len(pairs) != len(texts):
                raise TokenizerError(f"got {len(texts)} texts but {len(pairs)} text_pairs")
            for i, t in enumerate(pairs):
                _check_text(t, f"text_pairs[{i}]")
            encodings = tok.encode_batch(
                list(zip(texts, pairs, strict=True)), add_special_tokens=add_special_tokens
            )
        return [e.ids for e in encodings]

    def __call__(
        self,
        texts: str | Sequence[str],
        text_pairs: str | Sequence[str] | None = None,
        *,
        max_length: int | None = DEFAULT_MAX_LENGTH,
    ) -> dict[str, torch.Tensor]:
        """Encode and pad to the longest: {"input_ids": (B, T) long, "attention_mask": (B, T) long}."""
        if isinstance(texts, str):
            texts = [texts]
            text_pairs = [text_pairs] if isinstance(text_pairs, str) else text_pairs
        return self.pad(self.encode_batch(texts, text_pairs, max_length=max_length))

    def pad(self, sequences: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Right-pad id lists with `<pad>`: {"input_ids": (B, T), "attention_mask": (B, T)}."""
        if not sequences:
            raise TokenizerError("nothing to pad: the batch is empty")
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = True) -> str:
        """The text of token ids; an id outside 0 .. vocab_size - 1 raises TokenizerError naming it."""
        ids = [int(i) for i in ids]
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise TokenizerError(
                f"cannot decode id {bad}: this tokenizer's ids are 0 .. {self.vocab_size - 1}"
            )
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def tokenize(self, text: str) -> list[str]:
        """The BPE pieces of a text, without special tokens."""
        return self._tok.encode(text, add_special_tokens=False).tokens

    def iter_encode(self, texts: Iterable[str], *, batch_size: int = 1000) -> Iterator[list[int]]:
        """Stream ids of many texts without specials (for corpus preprocessing), batched for speed."""
        batch: list[str] = []
        for t in texts:
            batch.append(t)
            if len(batch) == batch_size:
                yield from (e.ids for e in self._tok.encode_batch(batch, add_special_tokens=False))
                batch = []
        if batch:
            yield from (e.ids for e in self._tok.encode_batch(batch, add_special_tokens=False))

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, model_max_length={self.model_max_length})"


MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def check_tokenizer_out(out: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Where `train-tokenizer` may write: a new or empty folder, or (with `overwrite`) one holding only a tokenizer.
    A model folder is always refused: a new tokenizer would make its model read wrong ids."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TokenizerError(f"--out {out} is a file; expected a folder")
    if not out.is_dir():
        return
    model = [n for n in MODEL_FILES if (out / n).exists()]
    if model:
        raise TokenizerError(
            f"--out {out} holds a model ({', '.join(model)}): a new tokenizer there would make it read wrong ids; "
            f"choose another folder"
        )
    existing = [n for n in TOKENIZER_FILES if (out / n).exists()]
    if existing and not overwrite:
        raise TokenizerError(
            f"--out {out} already holds a tokenizer ({', '.join(existing)}); pass --overwrite to replace it, or "
            f"choose another folder"
        )


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise TokenizerError(f"{name} must be a string, got {type(value).__name__}")
    bad = _SURROGATE.search(value)
    if bad is not None:
        raise TokenizerError(
            f"{name} is not valid text: it holds a lone surrogate U+{ord(bad.group()):04X} at character "
            f"{bad.start()} (text decoded with errors='surrogateescape' or a broken UTF-16 pair); pass proper Unicode"
        )


def read_text_file(path: str | os.PathLike) -> str:
    """A UTF-8 text file's contents; a binary or non-UTF-8 file raises TokenizerError naming the file and byte."""
    return decode_text(Path(path).read_bytes(), str(path))


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 bytes as text; NUL bytes (a binary file) or invalid UTF-8 raise TokenizerError naming `source` and the
    byte offset."""
    nul = data.find(b"\0")
    if nul != -1:
        raise TokenizerError(f"{source}: NUL byte at byte {nul}; expected UTF-8 text, not binary data")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TokenizerError(
            f"{source}: not valid UTF-8 at byte {exc.start} ({exc.reason}); convert it to UTF-8"
        ) from None


def check_text_file(path: str | os.PathLike, *, chunk_bytes: int = 1 << 20) -> int:
    """Stream a file and raise TokenizerError at its first NUL byte or invalid UTF-8 (naming the byte offset);
    returns 0 when the file holds nothing but whitespace (else a positive count)."""
    import codecs

    path = Path(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, letters = 0, 0
    with path.open("rb") as f:
        while chunk := f.read(chunk_bytes):
            nul = chunk.find(b"\0")
            if nul != -1:
                raise TokenizerError(
                    f"{path}: NUL byte at byte {offset + nul}; expected a UTF-8 text file, not a binary one"
                )
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise TokenizerError(
                    f"{path}: not valid UTF-8 at byte {offset - pending + exc.start} ({exc.reason}); convert the "
                    f"file to UTF-8"
                ) from None
            if not letters:  # counted only until some text is found
                letters = sum(1 for ch in text if not ch.isspace())
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise TokenizerError(
            f"{path}: ends inside a UTF-8 character at byte {offset}; the file is cut"
        ) from None
    return letters
