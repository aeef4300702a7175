"""Predictor: fill-mask, classification and sentence embeddings over one of three backends.

    predictor = Predictor.from_pretrained("runs/quickstart/final")
    predictor.fill_mask("The old man looked at the <mask> and smiled.")
    # [{"token": 1234, "token_str": " sea", "score": 0.41, "sequence": "The old man looked at the sea ..."}, ...]

`path` is a model folder (from pretrain/finetune, or a Hugging Face RoBERTa folder), served by PyTorch, or an export
folder written by `rtoolkit export` (model.onnx, export_manifest.json, optional TensorRT engines), served by ONNX
Runtime or TensorRT. `backend="auto"` picks the fastest one available for the path: a TensorRT engine on CUDA, then the
optimized ONNX graph, then the plain ONNX graph, then PyTorch.

Every call encodes all texts, sorts them by length into buckets of `batch_size`, pads each bucket only to its own
longest text, runs it, and returns the results in input order. A Predictor holds no per-call state, so one instance
can serve many threads at once (a web server); only a TensorRT execution context is run under a lock.

Shapes: B = batch, T = sequence length, H = hidden size, V = vocabulary, C = labels, N = masked positions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rtoolkit import tasks
from rtoolkit.config import CONFIG_NAME, RobertaConfig
from rtoolkit.runtime.backends import (
    ANSWER,
    BACKENDS,
    CHOOSE,
    CLASSIFY,
    EMBED,
    FILL_MASK,
    PRECISIONS,
    PREDICTOR_TASKS,
    TAG,
    GraphBackend,
    PredictorError,
    TorchBackend,
    check_device,
    load_backend,
)
from rtoolkit.runtime.backends import ArtifactFile as _Artifact  # noqa: F401 - older names, kept for callers
from rtoolkit.runtime.backends import artifact_files as _artifacts  # noqa: F401
from rtoolkit.runtime.backends import onnx_order as _onnx_order  # noqa: F401
from rtoolkit.runtime.backends import read_manifest as _read_manifest  # noqa: F401
from rtoolkit.runtime.backends import runnable_engines as _runnable_engines  # noqa: F401
from rtoolkit.tasks.common import TaskData, length_batches, run_batches
from rtoolkit.tokenizer import MASK, Tokenizer

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "cls")
DEFAULT_BATCH_SIZE = 32


# ------------------------------------------------------------------------------------------------ inputs
def _as_texts(texts: object, name: str) -> tuple[list[str], bool]:
    """A str or a list/tuple of str -> (list, was_single). Empty or non-string input raises PredictorError."""
    if isinstance(texts, str):
        items, single = [texts], True
    elif isinstance(texts, (list, tuple)):
        items, single = list(texts), False
        if not items:
            raise PredictorError(f"{name} is an empty list; pass at least one text")
    else:
        raise PredictorError(f"{name} must be a string or a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(items):
        where = (
            {"texts": "the text", "text_pairs": "the text pair"}.get(name, f"the {name}")
            if single
            else f"{name}[{i}]"
        )
        if not isinstance(text, str):
            raise PredictorError(f"{where} must be a string, got {type(text).__name__}: {text!r:.60}")
        if not text.strip():
            raise PredictorError(f"{where} is empty; pass some text")
    return items, single


def _buckets(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices sorted by length (longest first, so memory errors come early), cut into batches."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _mask_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each `<mask>` in a text, the whitespace before it included (the token strips it)."""
    spans, at = [], text.find(MASK)
    while at != -1:
        start = len(text[:at].rstrip())
        spans.append((start, at + len(MASK)))
        at = text.find(MASK, at + len(MASK))
    return spans


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------- Predictor
class Predictor:
    """Fill-mask, classification and embeddings from a model or export folder (see the module docstring)."""

    def __init__(
        self,
        backend: TorchBackend | GraphBackend,
        tokenizer: Tokenizer,
        config: RobertaConfig,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_length: int | None = None,
        source: str | os.PathLike | None = None,
    ):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise PredictorError(f"batch_size must be a positive integer, got {batch_size!r}")
        limits = [config.max_tokens, tokenizer.model_max_length, backend.max_length]
        if max_length is not None:
            if not isinstance(max_length, int) or max_length < 4:
                raise PredictorError(f"max_length must be an integer >= 4, got {max_length!r}")
            limits.append(max_length)
        self._backend = backend
        self.tokenizer = tokenizer
        self.config = config
        self.batch_size = min(batch_size, backend.max_batch) if backend.max_batch else batch_size
        self.max_length = min(n for n in limits if n)
        self.source = Path(source) if source is not None else None

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        backend: str = "auto",
        device: str = "cpu",
        precision: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_length: int | None = None,
        num_threads: int | None = None,
        compile: bool = False,
    ) -> Predictor:
        """Load a model folder or an export folder.

        backend: "auto" (fastest available), "torch", "onnx" or "tensorrt".
        device: "cpu", "cuda" or "cuda:N".
        precision: None (fp32; fp16 when exported for CUDA), or "fp32" / "fp16" / "int8" to pick that export;
        the torch backend on CUDA also runs "fp16" and "bf16".
        batch_size: texts per forward pass. max_length: token limit, `<s>` and `</s>` included (default: the
        model's, 512 for roberta-base). num_threads: ONNX Runtime intra-op threads (default: all cores).
        compile: torch backend only: torch.compile the encoder, with CUDA graphs on CUDA (the first call of each
        padded shape compiles; later calls replay).
        """
        if backend not in BACKENDS:
            raise PredictorError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if precision not in PRECISIONS:
            raise PredictorError(
                f"precision must be one of fp32, fp16, bf16, int8 (or None), got {precision!r}"
            )
        device = check_device(device)
        from rtoolkit.checkpoint import resolve_model_dir

        folder = resolve_model_dir(path)
        if not (folder / CONFIG_NAME).is_file():
            raise PredictorError(
                f"{folder} has no {CONFIG_NAME}: expected a model folder (from pretrain/finetune or Hugging Face) "
                f"or an export folder (from `rtoolkit export`)"
            )
        config = RobertaConfig.from_pretrained(folder)
        tokenizer = Tokenizer.from_pretrained(folder)
        if tokenizer.vocab_size > config.vocab_size:
            raise PredictorError(
                f"{folder}: the tokenizer has {tokenizer.vocab_size} ids but the model only "
                f"{config.vocab_size} embedding rows; they do not belong together"
            )
        impl = load_backend(
            folder, config, backend=backend, device=device, precision=precision, num_threads=num_threads,
            compile=compile,
        )  # fmt: skip
        if compile and impl.name != "torch":
            raise PredictorError(f"compile=True needs the torch backend; {folder} is served by {impl.name}")
        logger.info("%s: serving %s with %s (%s)", folder, sorted(impl.tasks), impl.name, impl.artifact)
        return cls(impl, tokenizer, config, batch_size=batch_size, max_length=max_length, source=folder)

    # ------------------------------------------------------------------------------------------- fields
    @property
    def backend(self) -> str:
        """ "torch", "onnx" or "tensorrt"."""
        return self._backend.name

    @property
    def artifact(self) -> Path:
        """The file or folder the backend runs (model folder, .onnx file or engine)."""
        return self._backend.artifact

    @property
    def precision(self) -> str:
        return self._backend.precision

    @property
    def tasks(self) -> frozenset[str]:
        """What this checkpoint can do: a subset of {"fill-mask", "classify", "embed", "answer", "choose", "tag"}."""
        return self._backend.tasks

    @property
    def labels(self) -> list[str]:
        """Class names in logit order (LABEL_i when the config names none)."""
        names = self.config.id2label or {}
        return [names.get(i, f"LABEL_{i}") for i in range(self.config.num_labels)]

    def __repr__(self) -> str:
        return (
            f"Predictor(source={str(self.source)!r}, backend={self.backend!r}, precision={self.precision!r}, "
            f"tasks={sorted(self.tasks)}, batch_size={self.batch_size}, max_length={self.max_length})"
        )

    # -------------------------------------------------------------------------------------------- tasks
    def fill_mask(
        self, texts: str | Sequence[str], *, top_k: int = 5, truncation: bool = True
    ) -> list[dict[str, Any]] | list[Any]:
        """Predict the token behind each `<mask>`.

        A text with one `<mask>` gives a list of `top_k` dicts {"token": id, "token_str": str, "score": float,
        "sequence": str} sorted by score (Hugging Face's pipeline shape); a text with several masks gives one such
        list per mask; a list of texts gives a list of those results, in input order.
        """
        self._require(FILL_MASK, "fill_mask")
        items, single = _as_texts(texts, "texts")
        if not isinstance(top_k, int) or top_k < 1:
            raise PredictorError(f"top_k must be a positive integer, got {top_k!r}")
        for i, text in enumerate(items):
            if MASK not in text:
                where = "the text" if single else f"texts[{i}]"
                raise PredictorError(f"{where} has no {MASK} token to fill: {text!r:.80}")
        encoded = self._encode(items, None, truncation=truncation)
        mask_id = self.tokenizer.mask_token_id
        for i, (text, ids) in enumerate(zip(items, encoded, strict=True)):
            if ids.count(mask_id) < text.count(MASK):
                raise PredictorError(
                    f"texts[{i}]: a {MASK} lies beyond the {self.max_length}-token limit and was cut off; "
                    f"shorten the text or move the {MASK} earlier"
                )
        top_k = min(top_k, self.tokenizer.vocab_size)
        results: list[Any] = [None] * len(items)
        for batch in _buckets([len(e) for e in encoded], self.batch_size):
            input_ids, attention_mask = self._pad([encoded[i] for i in batch])
            rows, cols = np.nonzero(input_ids == mask_id)  # (N,), (N,) in row-major order
            # Only the tokenizer's ids are real words: the model may have spare embedding rows beyond them.
            logits = self._backend.mask_logits(input_ids, attention_mask, rows, cols)[
                :, : self.tokenizer.vocab_size
            ]
            probs = _softmax(logits.astype(np.float64))  # (N, V)
            best = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]  # (N, k)
            per_row: dict[int, list[list[dict[str, Any]]]] = {}
            for n, (row, col) in enumerate(zip(rows, cols, strict=True)):
                ids = encoded[batch[row]]
                per_row.setdefault(int(row), []).append(
                    [
                        self._filled(items[batch[row]], ids, int(col), int(t), float(probs[n, t]))
                        for t in best[n]
                    ]
                )
            for row, index in enumerate(batch):
                masks = per_row[row]
                results[index] = masks[0] if len(masks) == 1 else masks
        return results[0] if single else results

    def _filled(self, text: str, ids: list[int], position: int, token: int, score: float) -> dict[str, Any]:
        """One prediction: the token, its text, its probability and the text with this mask filled."""
        tok = self.tokenizer
        token_str = tok.decode([token])
        if ids.count(tok.mask_token_id) == 1:
            filled = list(ids)
            filled[position] = token
            sequence = tok.decode(filled, skip_special_tokens=True)
        else:  # fill the k-th mask in the text itself, so the other masks stay visible
            k = ids[:position].count(tok.mask_token_id)
            start, end = _mask_spans(text)[k]
            sequence = text[:start] + token_str + text[end:]
        return {"token": token, "token_str": token_str, "score": score, "sequence": sequence}

    def classify(
        self,
        texts: str | Sequence[str],
        text_pairs: str | Sequence[str] | None = None,
        *,
        top_k: int | None = 1,
        truncation: bool = True,
    ) -> Any:
        """Label texts (or text pairs, encoded `<s> A </s></s> B </s>`).

        top_k=1: {"label", "score"} per text; top_k=k: the k best as a list of such dicts; top_k=None: every
        label, best first. Scores are softmax probabilities (sigmoid for multi-label models). Regression models
        (num_labels 1) give {"score": value} per text. A single text gives one result, a list a list of them.
        """
        self._require(CLASSIFY, "classify")
        items, single = _as_texts(texts, "texts")
        pairs = None
        if text_pairs is not None:
            pairs, pair_single = _as_texts(text_pairs, "text_pairs")
            if len(pairs) != len(items) or pair_single != single:
                raise PredictorError(
                    f"got {len(items)} text(s) but {len(pairs)} text_pair(s); pass one pair per text"
                )
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise PredictorError(f"top_k must be a positive integer or None (all labels), got {top_k!r}")
        encoded = self._encode(items, pairs, truncation=truncation)
        logits = np.zeros((len(items), self.config.num_labels), dtype=np.float32)  # (N, C)
        for batch in _buckets([len(e) for e in encoded], self.batch_size):
            out = self._backend.class_logits(*self._pad([encoded[i] for i in batch]))  # (B, C)
            if out.shape[-1] != self.config.num_labels:
                raise PredictorError(
                    f"the model gives {out.shape[-1]} logits but config.json names {self.config.num_labels} labels"
                )
            logits[batch] = out
        results = [self._labels(row, top_k) for row in logits]
        return results[0] if single else results

    def _labels(self, logits: np.ndarray, top_k: int | None) -> Any:
        if self.config.is_regression:
            return {"score": float(logits[0])} if logits.shape[0] == 1 else {"scores": logits.tolist()}
        if self.config.problem_type == "multi_label_classification":
            scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        else:
            scores = _softmax(logits.astype(np.float64))
        order = np.argsort(-scores, kind="stable")
        ranked = [{"label": self.labels[i], "score": float(scores[i])} for i in order]
        if top_k == 1:
            return ranked[0]
        return ranked if top_k is None else ranked[:top_k]

    def embed(
        self,
        texts: str | Sequence[str],
        *,
        pooling: str = "mean",
        normalize: bool = True,
        truncation: bool = True,
    ) -> np.ndarray:
        """Sentence embeddings from the encoder's last layer: (N, H) float32 for a list, (H,) for one text.

        pooling "mean" averages the hidden states of all tokens (`<s>` and `</s>` included, padding excluded);
        "cls" takes the `<s>` state. normalize=True scales each vector to unit L2 norm (dot product = cosine).
        """
        self._require(EMBED, "embed")
        items, single = _as_texts(texts, "texts")
        if pooling not in POOLINGS:
            raise PredictorError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        encoded = self._encode(items, None, truncation=truncation)
        out = np.zeros((len(items), self.config.hidden_size), dtype=np.float32)  # (N, H)
        for batch in _buckets([len(e) for e in encoded], self.batch_size):
            input_ids, attention_mask = self._pad([encoded[i] for i in batch])
            hidden = self._backend.hidden_states(input_ids, attention_mask)  # (B, T, H)
            if pooling == "cls":
                pooled = hidden[:, 0]  # (B, H)
            else:
                weights = attention_mask[..., None].astype(np.float32)  # (B, T, 1)
                pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)  # (B, H)
            out[batch] = pooled
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        return out[0] if single else out

    def answer(
        self,
        question: str | Sequence[str],
        context: str | Sequence[str],
        *,
        top_k: int = 1,
        max_answer_length: int = 30,
        stride: int | None = None,
        null_threshold: float | None = None,
    ) -> Any:
        """Extractive question answering: the span of `context` that answers `question`.

        top_k=1: {"answer": str, "score": float, "start": int, "end": int} (character offsets into the context, end
        exclusive); top_k=k: the k best such dicts. Contexts longer than the token limit are read in windows
        overlapping by `stride` tokens (default: 128, at most a quarter of the token limit). A single question gives
        one result, a list a list of them. null_threshold (for models finetuned on SQuAD 2.0): answer "" (start = end
        = 0) when the no-answer score beats the best span's by more than this; None never answers "".
        """
        self._require(ANSWER, "answer")
        questions, single = _as_texts(question, "question")
        contexts, context_single = _as_texts(context, "context")
        if len(contexts) != len(questions) or context_single != single:
            raise PredictorError(
                f"got {len(questions)} question(s) but {len(contexts)} context(s); pass one each"
            )
        for name, value, least in (
            ("top_k", top_k, 1),
            ("max_answer_length", max_answer_length, 1),
            ("stride", 1 if stride is None else stride, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise PredictorError(f"{name} must be a positive integer, got {value!r}")
        if null_threshold is not None and (
            isinstance(null_threshold, bool)
            or not isinstance(null_threshold, (int, float))
            or not np.isfinite(null_threshold)
        ):
            raise PredictorError(f"null_threshold must be a finite number or None, got {null_threshold!r}")
        fam = tasks.family("question-answering")
        examples = fam.make_examples(questions, contexts)
        results = self._run_family(
            fam, examples, stride=stride, top_k=top_k, max_answer_length=max_answer_length,
            null_threshold=null_threshold,
        )  # fmt: skip
        results = [r[0] if top_k == 1 else r for r in results]
        return results[0] if single else results

    def choose(self, passage: str, question: str, options: Sequence[str]) -> list[dict[str, Any]]:
        """Multiple choice: every option with its probability of being the right answer, best first:
        [{"index": i, "option": str, "score": float}, ...] (index: the option's position in `options`)."""
        self._require(CHOOSE, "choose")
        for name, value in (("passage", passage), ("question", question)):
            if not isinstance(value, str):
                raise PredictorError(f"{name} must be a string, got {type(value).__name__}")
            _as_texts(value, name)
        if isinstance(options, str) or not isinstance(options, (list, tuple)) or len(options) < 2:
            raise PredictorError(f"options must be a list of at least two strings, got {options!r:.80}")
        option_list, _ = _as_texts(list(options), "options")
        fam = tasks.family("multiple-choice")
        examples = fam.make_examples([passage], [question], [option_list])
        (prediction,) = self._run_family(fam, examples)
        ranked = sorted(range(len(option_list)), key=lambda i: -prediction["scores"][i])
        return [
            {"index": i, "option": option_list[i], "score": float(prediction["scores"][i])} for i in ranked
        ]

    def tag(self, texts: str | Sequence[str], *, truncation: bool = True) -> Any:
        """Named entities (token classification): for each text, a list of {"entity": type, "text": str, "start":
        int, "end": int, "score": float} with character offsets into the text (end exclusive), the words' sub-token
        predictions aggregated to words and words to entities. A single text gives one list, a list a list of them.
        A text over the token limit is tagged up to it (its later words are "O"); truncation=False raises instead."""
        self._require(TAG, "tag")
        items, single = _as_texts(texts, "texts")
        if not truncation:
            self._encode(items, None, truncation=False)  # raises for a text over the limit
        fam = tasks.family("token-classification")
        predictions = self._run_family(fam, fam.make_examples(items))
        results = [p["entities"] for p in predictions]
        return results[0] if single else results

    def _run_family(self, fam: Any, examples: Any, *, stride: int | None = None, **options: Any) -> list[Any]:
        """Encode `examples` the family's way, run them in length-sorted batches, decode one prediction each."""
        features = fam.encode(self.tokenizer, examples, max_length=self.max_length, stride=stride)

        def forward(batch: dict[str, Any]) -> dict[str, np.ndarray]:
            feeds = {k: v.numpy() for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            return self._backend.outputs(feeds, fam.OUTPUTS)

        batches = length_batches(features, self.batch_size)
        outputs = run_batches(forward, fam, self.tokenizer, features, batches)
        data = TaskData(None, {}, {}, (), "", labels=fam.labels_from_config(self.config))
        return fam.postprocess(outputs, features, examples, data, **options)

    # ------------------------------------------------------------------------------------------ helpers
    def _require(self, task: str, method: str) -> None:
        if task in self.tasks:
            return
        if self.backend == "torch":
            head = self._backend.head
            has = {"fill-mask": "a masked-LM head", "embedding": "no head"}.get(head, f"a {head} head")
            hint = {
                FILL_MASK: "load a pretrained (masked-LM) model folder",
                CLASSIFY: "load a finetuned classifier (rtoolkit finetune)",
                EMBED: "",
            }.get(task, "load a model finetuned for it (rtoolkit finetune --task ...)")
            raise PredictorError(f"{method}: {self.source} has {has}, so it cannot do {task}; {hint}")
        export_task = next(k for k, v in PREDICTOR_TASKS.items() if v == self._backend.task)
        wanted = next(k for k, v in PREDICTOR_TASKS.items() if v == task)
        raise PredictorError(
            f"{method}: {self.source} was exported for {export_task!r}, so it cannot do {task}; export with "
            f"--task {wanted}, or load the model folder with backend='torch'"
        )

    def _encode(self, texts: list[str], pairs: list[str] | None, *, truncation: bool) -> list[list[int]]:
        """Token ids with specials; texts over `max_length` are truncated (with a warning) or rejected."""
        encoded = self.tokenizer.encode_batch(texts, pairs, max_length=None)
        too_long = [i for i, ids in enumerate(encoded) if len(ids) > self.max_length]
        if not too_long:
            return encoded
        first = too_long[0]
        detail = f"texts[{first}] has {len(encoded[first])} tokens"
        if not truncation:
            raise PredictorError(
                f"{len(too_long)} text(s) exceed the {self.max_length}-token limit ({detail}); shorten them or "
                f"pass truncation=True"
            )
        logger.warning(
            "%d text(s) exceed the %d-token limit and were truncated (%s); pass truncation=False to raise instead",
            len(too_long),
            self.max_length,
            detail,
        )
        cut = self.tokenizer.encode_batch(
            [texts[i] for i in too_long],
            None if pairs is None else [pairs[i] for i in too_long],
            max_length=self.max_length,
        )
        for i, ids in zip(too_long, cut, strict=True):
            encoded[i] = ids
        return encoded

    def _pad(self, sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad to the longest in the batch: (B, T) int64 input_ids and attention_mask."""
        width = self._backend.pad_width(max(len(s) for s in sequences), self.max_length)
        input_ids = np.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(sequences), width), dtype=np.int64)
        for row, seq in enumerate(sequences):
            input_ids[row, : len(seq)] = seq
            attention_mask[row, : len(seq)] = 1
        return input_ids, attention_mask


__all__ = ["Predictor", "PredictorError", "BACKENDS"]
