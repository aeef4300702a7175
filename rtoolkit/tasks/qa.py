"""Extractive question answering (SQuAD): the answer's span in a context.

Data is SQuAD JSON (`{"version": ..., "data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}]}]}]}]}`); SQuAD 2.0's `is_impossible` questions (no answer) are read too.
Every answer must be found in its context at `answer_start`.

The named task `squad` reads `data_dir`: train-v1.1.json for training and dev-v1.1.json for evaluation. Without a
train-v1.1.json, the dev set is split BY ARTICLE (never by question, so no context is in both parts): every 5th
article (0-based article index % 5 == 4: articles 4, 9, ..., 44 of dev-v1.1.json's 48) is the evaluation split
`dev`, the others are trained on. `rtoolkit evaluate --task squad` scores the same held-out articles.

Features: each question and its context are one RoBERTa pair, `<s> question </s></s> context </s>` (the question
stripped of surrounding whitespace, as Hugging Face's run_qa does). A context longer than a window is cut into
windows of at most `max_length - len(question) - 4` context tokens; consecutive windows share `stride` tokens. A
question so long that no context token fits, or a stride that is not smaller than a window's context tokens while a
context needs several windows, raises DataError naming the question (questions are not truncated). Training
targets are the answer's first and last token in the window, or 0 (`<s>`) for both when the answer (SQuAD 1.1: the
first gold answer) is not wholly inside the window or the question has no answer.

Predictions: for each example, a list of its `top_k` best answers, best first, each
`{"answer": str, "score": float, "start": int, "end": int}`: `answer` is `context[start:end]` (character offsets, end
exclusive, surrounding whitespace left out), and `score` is a probability: the softmax, over the example's n-best
candidate spans (merged across its windows, each span with its best start + end logit), of the summed start and end
logits. Spans run from a context token to a later (or the same) one, at most `max_answer_length` tokens long. With
a no-answer threshold (SQuAD 2.0 data, or `null_threshold` given) the `<s>` candidate (start + end logit at `<s>`,
lowest over the windows; answer "", start = end = 0) joins the softmax and is predicted first when its logit beats
the best span's by more than the threshold.

Metrics: exact match and F1 of the top answer, as SQuAD's official evaluate-v1.1.py computes them (answers
normalized: lower case, no punctuation, no articles a/an/the, single spaces; the best over the gold answers;
0-100). A SQuAD 2.0 question without an answer scores 1 only for an empty prediction, as evaluate-v2.0.py does.
Predictions files (`SPLIT_predictions.json`) are SQuAD's `{question id: answer}` JSON, which the official script
reads; SQuAD's test set is not public, so `--predict` with the named task writes the evaluation split's answers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import string
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtoolkit.checkpoint import atomic_write_bytes, load_state_dict, load_weights, resolve_model_dir
from rtoolkit.config import RobertaConfig
from rtoolkit.data.glue import DataError
from rtoolkit.model import RobertaForQuestionAnswering
from rtoolkit.runtime.artifacts import TASK_OUTPUTS
from rtoolkit.tasks.common import Features, Preset, TaskData
from rtoolkit.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

NAME = "question-answering"
HEAD = RobertaForQuestionAnswering
OUTPUTS = tuple(TASK_OUTPUTS[NAME])  # the graph outputs the export writes, in order
TOKEN_OUTPUTS: frozenset[str] = frozenset(OUTPUTS)
INPUT_RANK = 2
# The paper's SQuAD recipe (Appendix, Table 10): lr 1.5e-5, batch 48, 2 epochs, 6% warmup, weight decay 0.01.
PRESETS = {
    "squad": Preset(
        lr=1.5e-5, batch_size=48, epochs=2, warmup_ratio=0.06, weight_decay=0.01, classifier_dropout=0.0
    )
}
CUSTOM = PRESETS["squad"]
METRICS = ("exact_match", "f1")
MAIN_METRIC = "f1"
TRAIN_FILE, DEV_FILE = "train-v1.1.json", "dev-v1.1.json"
# Without a train file: dev articles with index % 5 == 4 are evaluated on, the others trained on.
HELD_OUT_EVERY = 5
MAX_ANSWER_LENGTH = 30  # tokens
DEFAULT_STRIDE = 128  # tokens shared by consecutive windows (at most a quarter of the window: default_stride)
N_BEST = 20  # candidates per example that the answer probabilities are spread over


# ------------------------------------------------------------------------------------------------ examples
@dataclass(frozen=True)
class QAExample:
    """One question about one context, with its gold answers (texts and character starts; none when unlabelled
    or, SQuAD 2.0, `impossible`). `article` is the index of its article in the file."""

    id: str
    question: str
    context: str
    answers: tuple[str, ...] = ()
    answer_starts: tuple[int, ...] = ()
    impossible: bool = False
    title: str = ""
    article: int = 0

    @property
    def labelled(self) -> bool:
        return bool(self.answers) or self.impossible


@dataclass
class QADataset:
    """The questions of one SQuAD file (or made from Python values). `with_impossible`: the data is SQuAD 2.0-style
    (questions may have no answer), which turns no-answer predictions on."""

    examples: list[QAExample]
    source: str
    with_impossible: bool = False

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[QAExample]:
        return iter(self.examples)

    def __getitem__(self, index: int) -> QAExample:
        return self.examples[index]

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    def first(self, n: int | None) -> QADataset:
        """The first `n` questions (all when n is None)."""
        return self if n is None else replace(self, examples=self.examples[:n])


_JSON_TYPES = {str: "a string", int: "an integer", list: "a list"}


def _field(record: Any, key: str, kind: type, where: str) -> Any:
    """record[key], which must be a `kind` (str, int or list; a JSON true/false is not an integer)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise DataError(f"{where}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{where}: field {key!r} must be {_JSON_TYPES[kind]}, got {type(value).__name__}")
    return value


def _text(value: str, where: str, what: str) -> str:
    if not value.strip():
        raise DataError(f"{where}: empty {what}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(
            f"{where}: {what} is not valid text (a lone surrogate at character {exc.start})"
        ) from None
    return value


def read_squad(
    path: str | os.PathLike, *, require_answers: bool = True, limit: int | None = None
) -> QADataset:
    """The questions of a SQuAD JSON file (v1.1, or v2.0 with `is_impossible`), in file order.

    Raises DataError naming the file and the record (article, paragraph, question id) for anything malformed: no
    `data` list, a missing field, an empty question or context, a duplicate id, an answer whose text is not in the
    context at its `answer_start`, or (with `require_answers`) a question with no answer that is not marked
    `is_impossible`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SQuAD file not found: {path}")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: file is empty; expected SQuAD JSON")
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(
            f'{path}: not SQuAD JSON: expected an object with a "data" list of articles '
            f'({{"version": ..., "data": [{{"title": ..., "paragraphs": [...]}}]}})'
        )
    examples: list[QAExample] = []
    seen: set[str] = set()
    with_impossible = False
    for a, article in enumerate(document["data"]):
        paragraphs = _field(article, "paragraphs", list, f"{path}: data[{a}]")
        title = article.get("title", "")
        title = title if isinstance(title, str) else str(title)
        for p, paragraph in enumerate(paragraphs):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = _text(_field(paragraph, "context", str, where), where, "context")
            for q, qa in enumerate(_field(paragraph, "qas", list, where)):
                qid = _field(qa, "id", str, f"{where}.qas[{q}]")
                at = f"{path}: question {qid}"
                if qid in seen:
                    raise DataError(f"{at}: duplicate question id")
                seen.add(qid)
                question = _text(_field(qa, "question", str, at), at, "question")
                impossible = bool(qa.get("is_impossible", False))
                with_impossible = with_impossible or "is_impossible" in qa
                answers = qa.get("answers", [])
                if not isinstance(answers, list):
                    raise DataError(f"{at}: field 'answers' must be a list, got {type(answers).__name__}")
                if impossible and answers:
                    raise DataError(f"{at}: is_impossible is true but it has answers")
                if not impossible and not answers and require_answers:
                    raise DataError(f"{at}: no answers (and not marked is_impossible)")
                texts, starts = [], []
                for n, answer in enumerate(answers):
                    text = _field(answer, "text", str, f"{at}: answers[{n}]")
                    start = _field(answer, "answer_start", int, f"{at}: answers[{n}]")
                    if not text.strip():
                        raise DataError(f"{at}: answers[{n}] has an empty text")
                    if context[start : start + len(text)] != text or start < 0:
                        found = context[max(start, 0) : max(start, 0) + len(text)]
                        raise DataError(
                            f"{at}: answer {text!r} does not match the context at answer_start {start} (the context "
                            f"there reads {found!r})"
                        )
                    texts.append(text)
                    starts.append(start)
                examples.append(
                    QAExample(qid, question, context, tuple(texts), tuple(starts), impossible, title, a)
                )
                if limit is not None and len(examples) >= limit:
                    return QADataset(examples, str(path), with_impossible)
    if not examples:
        raise DataError(f"{path}: holds no questions")
    return QADataset(examples, str(path), with_impossible)


def read_examples(path: str | os.PathLike, *, limit: int | None = None) -> QADataset:
    """Labelled questions of a SQuAD JSON file (the first `limit` when given)."""
    return read_squad(path, require_answers=True, limit=limit)


def make_examples(questions: Sequence[str], contexts: Sequence[str]) -> QADataset:
    """Unlabelled examples from Python values, one per (question, context) pair; ids are "0", "1", ..."""
    if isinstance(questions, str) or isinstance(contexts, str):
        raise DataError("questions and contexts must be lists of strings")
    if len(questions) != len(contexts):
        raise DataError(f"got {len(questions)} questions but {len(contexts)} contexts")
    if not questions:
        raise DataError("no questions given")
    examples = []
    for i, (question, context) in enumerate(zip(questions, contexts, strict=True)):
        for what, value in (("question", question), ("context", context)):
            if not isinstance(value, str):
                raise DataError(f"{what}s[{i}] must be a string, got {type(value).__name__}")
            _text(value, f"{what}s[{i}]", what)
        examples.append(QAExample(str(i), question, context))
    return QADataset(examples, "<input>")


def sample_examples() -> QADataset:
    """Three small labelled examples (export validation without data)."""
    items = [
        (
            "Who wrote Moby-Dick?",
            "Moby-Dick is an 1851 novel by Herman Melville about a whaling voyage.",
            "Herman Melville",
        ),
        (
            "Where does the captain want to go?",
            "The captain was a quiet man. He wanted to sail to the islands of the south before winter came.",
            "the islands of the south",
        ),
        (
            "When did the war end?",
            "The war ended in 1918, and the soldiers came home the next spring.",
            "1918",
        ),
    ]
    examples = [QAExample(f"sample-{i}", q, c, (a,), (c.index(a),)) for i, (q, c, a) in enumerate(items)]
    return QADataset(examples, "<samples>")


# ---------------------------------------------------------------------------------------------------- data
def split_by_article(dataset: QADataset) -> tuple[QADataset, QADataset]:
    """(train, held out): the questions of articles with index % 5 != 4, and of every 5th article (4, 9, ...)."""
    held = [e for e in dataset if e.article % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    kept = [e for e in dataset if e.article % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    if not held or not kept:
        raise DataError(
            f"{dataset.source}: too few articles to hold every {HELD_OUT_EVERY}th out for evaluation"
        )
    return replace(dataset, examples=kept), replace(dataset, examples=held)


def _squad_splits(data_dir: str | os.PathLike | None, *, train: bool) -> tuple[QADataset | None, QADataset]:
    """The named task's training and evaluation questions from `data_dir` (see the module docstring)."""
    if data_dir is None:
        raise DataError("task squad needs data_dir (the folder with dev-v1.1.json, and train-v1.1.json)")
    folder = Path(data_dir)
    dev_path = folder / DEV_FILE
    if not dev_path.is_file():
        raise FileNotFoundError(
            f"{folder}: no {DEV_FILE}; task squad reads SQuAD 1.1's {TRAIN_FILE} and {DEV_FILE}"
        )
    dev = read_squad(dev_path)
    if (folder / TRAIN_FILE).is_file():
        return (read_squad(folder / TRAIN_FILE) if train else None), dev
    kept, held = split_by_article(dev)
    articles = sorted({e.article for e in held})
    logger.info(
        "squad: no %s in %s; splitting %s by article: every %dth article (indices %s: %d articles, %d questions) "
        "is evaluated on, the other %d articles (%d questions) are trained on",
        TRAIN_FILE, folder, DEV_FILE, HELD_OUT_EVERY, ", ".join(map(str, articles)), len(articles), len(held),
        len({e.article for e in kept}), len(kept),
    )  # fmt: skip
    return (kept if train else None), held


def _main_metric(requested: str | None) -> str:
    if requested is None:
        return MAIN_METRIC
    if requested not in METRICS:
        raise ValueError(
            f"main metric {requested!r} is not reported here; choose one of {', '.join(METRICS)}"
        )
    return requested


def load_data(cfg: Any, *, train: bool = True) -> TaskData:
    """SQuAD's (or custom SQuAD JSON files') training and evaluation questions; with `cfg.predict`, the questions
    to write predictions for (custom: the test file; squad, whose test set is hidden: the evaluation split)."""
    tests: dict[str, QADataset] = {}
    if cfg.task is not None:
        if cfg.task not in PRESETS:
            raise ValueError(
                f"unknown question-answering task {cfg.task!r}; choose one of {', '.join(PRESETS)}"
            )
        train_data, dev = _squad_splits(cfg.data_dir, train=train)
        dev = dev.first(cfg.max_eval_samples)
        if cfg.predict:
            tests = {"dev": dev}
    else:
        train_data = read_squad(cfg.train_file) if train else None
        dev = read_squad(cfg.validation_file).first(cfg.max_eval_samples)
        if cfg.predict:
            if cfg.test_file is None:
                raise ValueError("--predict with custom data needs a test file")
            tests = {"test": read_squad(cfg.test_file, require_answers=False)}
    if train_data is not None:
        train_data = train_data.first(cfg.max_train_samples)
    return TaskData(train_data, {"dev": dev}, tests, METRICS, _main_metric(cfg.main_metric), task=cfg.task)


def evaluation_data(model: torch.nn.Module, request: Any) -> TaskData:
    """What `rtoolkit evaluate` scores: squad's evaluation split (dev-v1.1.json, or without a train file its
    held-out articles, as finetuning used) or a labelled SQuAD JSON file."""
    if request.task is not None:
        if request.split != "dev":
            raise ValueError(f"task {request.task} has only the split 'dev' (SQuAD's test set is not public)")
        _, dev = _squad_splits(request.data_dir, train=False)
    else:
        dev = read_examples(request.validation_file)
    return TaskData(
        None, {"dev": dev.first(request.max_samples)}, {}, METRICS, MAIN_METRIC, task=request.task
    )


# ---------------------------------------------------------------------------------------------------- model
def build_model(
    folder: str | os.PathLike, labels: Any = None, *, classifier_dropout: float | None = None
) -> RobertaForQuestionAnswering:
    """A span head (`qa_outputs`: 2 logits per token) on the encoder in `folder`; a folder that already holds a
    question-answering head keeps it. `labels` is unused (spans have no label set) and so is `classifier_dropout`:
    like Hugging Face's, the head has no dropout of its own."""
    folder = resolve_model_dir(folder)
    values = RobertaConfig.from_pretrained(folder).to_dict()
    for key in ("id2label", "label2id", "architectures", "problem_type"):
        values.pop(key, None)
    values["num_labels"] = 2
    model = RobertaForQuestionAnswering(RobertaConfig.from_dict(values))
    state = load_state_dict(folder)
    own = model.state_dict()
    head = {k: v for k, v in own.items() if k.startswith("qa_outputs.")}
    if any(k not in state or state[k].shape != v.shape for k, v in head.items()):
        logger.info("%s: no question-answering head; starting a new one", folder)
        state = {**{k: v for k, v in state.items() if not k.startswith("qa_outputs.")}, **head}
    load_weights(model, state, source=str(folder))
    return model


def labels_from_config(config: RobertaConfig) -> None:
    """Span heads have no label set."""
    return None


# ------------------------------------------------------------------------------------------------ features
@dataclass(frozen=True, eq=False)
class Window:
    """Where a feature's context tokens are: positions `context_start` .. of the feature hold context tokens
    `first` .. `last - 1`, whose character offsets are `offsets[first:last]` ((N, 2) for the whole context)."""

    context_start: int
    first: int
    last: int
    offsets: np.ndarray = field(repr=False)


def _backend(tokenizer: Tokenizer) -> Any:
    """The `tokenizers.Tokenizer` inside rtoolkit's Tokenizer (its encodings carry character offsets)."""
    return tokenizer._tok  # Tokenizer's own methods return ids only


def windows(n: int, room: int, stride: int) -> list[tuple[int, int]]:
    """[first, last) token ranges of the windows over `n` context tokens: at most `room` tokens each, consecutive
    ones sharing `stride` tokens, together covering all `n`."""
    if n <= room:
        return [(0, n)]
    if stride >= room:
        raise ValueError(f"stride {stride} leaves no new tokens for the next window (a window holds {room})")
    spans, start = [], 0
    while True:
        end = min(start + room, n)
        spans.append((start, end))
        if end == n:
            return spans
        start = end - stride


def _answer_tokens(offsets: np.ndarray, start: int, end: int) -> tuple[int, int] | None:
    """First and last context token of the character span [start, end) (tokens without characters skipped)."""
    real = offsets[:, 1] > offsets[:, 0]
    firsts = np.flatnonzero(real & (offsets[:, 1] > start))
    lasts = np.flatnonzero(real & (offsets[:, 0] < end))
    if not len(firsts) or not len(lasts) or firsts[0] > lasts[-1]:
        return None
    return int(firsts[0]), int(lasts[-1])


def default_stride(max_length: int) -> int:
    """The overlap of consecutive windows when none is given: 128 tokens (Hugging Face's run_qa) for 512-token
    inputs, a quarter of the window for shorter ones (a 128-token model: 32)."""
    return min(DEFAULT_STRIDE, max_length // 4)


def encode(
    tokenizer: Tokenizer, examples: QADataset, *, max_length: int, stride: int | None = None
) -> Features:
    """One feature per window: `<s> question </s></s> context window </s>` (input_ids), and for labelled examples
    start_positions / end_positions (0: `<s>`, when the answer is not in the window). Features.info holds each
    window's `Window`. `stride` None: `default_stride(max_length)`."""
    if stride is None:
        stride = default_stride(max_length)
    if stride < 0:
        raise ValueError(f"stride must be >= 0, got {stride}")
    backend = _backend(tokenizer)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    contexts = list(dict.fromkeys(e.context for e in examples))  # each distinct context is tokenized once
    context_tokens: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for context, enc in zip(contexts, backend.encode_batch(contexts, add_special_tokens=False), strict=True):
        offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)  # (N, 2) character [start, end)
        context_tokens[context] = (np.asarray(enc.ids, dtype=np.int64), offsets)
    questions = backend.encode_batch([e.question.strip() for e in examples], add_special_tokens=False)
    labelled = len(examples) > 0 and all(e.labelled for e in examples)
    ids: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    example_of: list[int] = []
    info: list[Window] = []
    for k, (example, question) in enumerate(zip(examples, questions, strict=True)):
        tokens, offsets = context_tokens[example.context]
        head = np.asarray([bos, *question.ids, eos, eos], dtype=np.int64)
        room = max_length - len(head) - 1
        if room < 1:
            raise DataError(
                f"{examples.source}: question {example.id} has {len(question.ids)} tokens, which leaves no room for "
                f"the context within max_length {max_length} (at most {max_length - 5} question tokens); shorten "
                f"the question or raise max_length"
            )
        try:
            spans = windows(len(tokens), room, stride)
        except ValueError as exc:
            raise DataError(
                f"{examples.source}: question {example.id}: {exc} (max_length {max_length} minus the question's "
                f"{len(question.ids)} tokens and 4 special tokens); lower stride or raise max_length"
            ) from None
        answer = None
        if labelled and example.answers:
            answer = _answer_tokens(
                offsets, example.answer_starts[0], example.answer_starts[0] + len(example.answers[0])
            )
        for first, last in spans:
            ids.append(np.concatenate([head, tokens[first:last], [eos]]))
            example_of.append(k)
            info.append(Window(len(head), first, last, offsets))
            if labelled:
                s = e = 0  # <s>: the answer is not (wholly) in this window, or there is none
                if answer is not None and first <= answer[0] and answer[1] < last:
                    s, e = answer[0] - first + len(head), answer[1] - first + len(head)
                starts.append(np.asarray(s, dtype=np.int64))
                ends.append(np.asarray(e, dtype=np.int64))
    inputs: dict[str, list[np.ndarray]] = {"input_ids": ids}
    if labelled:
        inputs.update(start_positions=starts, end_positions=ends)
    lengths = np.asarray([len(x) for x in ids], dtype=np.int64)
    return Features(inputs, np.asarray(example_of, dtype=np.int64), lengths, info)


def collate(tokenizer: Tokenizer, features: Features, rows: Any) -> dict[str, torch.Tensor]:
    """Pad to the longest row: input_ids (B, T), attention_mask (B, T) only when something is padded, and
    start_positions / end_positions (B,) when the features carry them."""
    rows = [int(r) for r in rows]
    lengths = features.lengths[rows]
    width = int(lengths.max())
    ids = np.full((len(rows), width), tokenizer.pad_token_id, dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : lengths[i]] = features.inputs["input_ids"][r]
    batch = {"input_ids": torch.from_numpy(ids)}
    if (lengths != width).any():
        batch["attention_mask"] = torch.from_numpy(
            (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        )
    for name in ("start_positions", "end_positions"):
        if name in features.inputs:
            batch[name] = torch.from_numpy(np.stack([features.inputs[name][r] for r in rows]))
    return batch


# --------------------------------------------------------------------------------------------- predictions
def _window_spans(
    start_logits: np.ndarray, end_logits: np.ndarray, window: Window, *, max_answer_length: int, n_best: int
) -> list[tuple[float, int, int]]:
    """The n-best (logit, first token, last token) spans inside one window's context (token indices into the
    context); spans start and end at tokens that cover characters."""
    n = window.last - window.first
    offsets = window.offsets[window.first : window.last]
    real = offsets[:, 1] > offsets[:, 0]
    s = np.where(real, start_logits[window.context_start : window.context_start + n], -np.inf)
    e = np.where(real, end_logits[window.context_start : window.context_start + n], -np.inf)
    width = min(max_answer_length, n)
    scores = np.full((n, width), -np.inf)  # (N, W): span from token i to token i + d
    for d in range(width):
        scores[: n - d, d] = s[: n - d] + e[d:]
    flat = scores.ravel()
    k = min(n_best, int(np.isfinite(flat).sum()))
    if k == 0:
        return []
    best = np.argpartition(-flat, k - 1)[:k]
    return [
        (float(flat[i]), window.first + int(i) // width, window.first + int(i) // width + int(i) % width)
        for i in best
    ]


def _softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    weights = [math.exp(x - top) for x in logits]
    total = sum(weights)
    return [w / total for w in weights]


def postprocess(
    outputs: list[dict[str, np.ndarray]],
    features: Features,
    examples: QADataset,
    data: TaskData | None = None,
    *,
    top_k: int = 1,
    max_answer_length: int = MAX_ANSWER_LENGTH,
    null_threshold: float | None = None,
    n_best: int = N_BEST,
) -> list[list[dict[str, Any]]]:
    """For each example, its `top_k` best answers (fewer when the context has fewer spans), best first: the
    format and the score are in the module docstring.

    max_answer_length: the longest answer in tokens. null_threshold: predict "" when the `<s>` logit beats the best
    span's by more than this (default: 0.0 for SQuAD 2.0 data, else never). n_best: the candidates the score's
    softmax runs over (at least top_k)."""
    if top_k < 1 or max_answer_length < 1 or n_best < 1:
        raise ValueError(
            f"top_k, max_answer_length and n_best must be >= 1, got {top_k}, {max_answer_length}, {n_best}"
        )
    if null_threshold is None and examples.with_impossible:
        null_threshold = 0.0
    n_best = max(n_best, top_k)
    by_example: list[list[int]] = [[] for _ in range(len(examples))]
    for i, k in enumerate(features.example):
        by_example[int(k)].append(i)
    predictions = []
    for example, rows in zip(examples, by_example, strict=True):
        spans: dict[tuple[int, int], float] = {}
        null = math.inf
        for i in rows:
            window: Window = features.info[i]
            start_logits, end_logits = outputs[i]["start_logits"], outputs[i]["end_logits"]
            null = min(null, float(start_logits[0] + end_logits[0]))
            for logit, first, last in _window_spans(
                start_logits, end_logits, window, max_answer_length=max_answer_length, n_best=n_best
            ):
                begin, end = int(window.offsets[first, 0]), int(window.offsets[last, 1])
                text = example.context[begin:end]
                begin += len(text) - len(text.lstrip())
                end -= len(text) - len(text.rstrip())
                if end > begin and logit > spans.get((begin, end), -math.inf):
                    spans[(begin, end)] = logit
        ranked = sorted(spans.items(), key=lambda kv: -kv[1])[:n_best]
        candidates = [
            {"answer": example.context[b:e], "logit": logit, "start": b, "end": e} for (b, e), logit in ranked
        ]
        if null_threshold is not None and rows:
            empty = {"answer": "", "logit": null, "start": 0, "end": 0}
            chosen = not candidates or null - candidates[0]["logit"] > null_threshold
            candidates = [empty, *candidates] if chosen else [*candidates, empty]
        if not candidates:
            predictions.append([{"answer": "", "score": 1.0, "start": 0, "end": 0}])
            continue
        probabilities = _softmax([c["logit"] for c in candidates])
        answers = [
            {"answer": c["answer"], "score": p, "start": c["start"], "end": c["end"]}
            for c, p in zip(candidates, probabilities, strict=True)
        ]
        if null_threshold is not None and answers[0]["answer"]:
            answers = [a for a in answers if a["answer"]]  # a span won: the no-answer candidate is not listed
        predictions.append(answers[:top_k])
    return predictions


def top_answer(prediction: Any) -> str:
    """The best answer's text of one prediction (a candidate list; a plain string is taken as it is)."""
    if isinstance(prediction, str):
        return prediction
    if isinstance(prediction, dict):
        return str(prediction["answer"])
    if not prediction:
        return ""
    return str(prediction[0]["answer"])


# ------------------------------------------------------------------------------------------------- metrics
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalization: lower case, punctuation removed, articles a/an/the removed, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def exact_match(prediction: str, truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(truth)


def f1(prediction: str, truth: str) -> float:
    """Token F1 of the normalized strings (0 when no token is shared)."""
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    shared = sum((Counter(predicted) & Counter(gold)).values())
    if shared == 0:
        return 0
    precision, recall = shared / len(predicted), shared / len(gold)
    return 2 * precision * recall / (precision + recall)


def score(predictions: Sequence[Any], examples: QADataset, data: TaskData | None = None) -> dict[str, float]:
    """{"exact_match", "f1"}: the top answers' scores (0-100), the best over each question's gold answers."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} questions")
    if not len(examples):
        raise ValueError(f"{examples.source}: no questions to score")
    total_em, total_f1 = 0, 0.0
    for prediction, example in zip(predictions, examples, strict=True):
        answer = top_answer(prediction)
        if example.impossible:
            right = normalize_answer(answer) == ""
            total_em += right
            total_f1 += right
            continue
        if not example.answers:
            raise DataError(f"{examples.source}: question {example.id} has no answers to score against")
        total_em += max(exact_match(answer, truth) for truth in example.answers)
        total_f1 += max(f1(answer, truth) for truth in example.answers)
    return {"exact_match": 100.0 * total_em / len(examples), "f1": 100.0 * total_f1 / len(examples)}


def agreement(reference: Sequence[Any], candidate: Sequence[Any]) -> dict[str, float]:
    """{"answer_agreement"}: the share of examples whose top answers have the same text."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference predictions but {len(candidate)} candidate ones")
    if not reference:
        raise ValueError("no predictions to compare")
    same = sum(top_answer(r) == top_answer(c) for r, c in zip(reference, candidate, strict=True))
    return {"answer_agreement": same / len(reference)}


def write_predictions(
    predictions: Sequence[Any], examples: QADataset, data: TaskData | None, split: str, folder: Path
) -> Path:
    """SPLIT_predictions.json in `folder`: SQuAD's {question id: answer} (what evaluate-v1.1.py reads)."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} questions")
    answers = {e.id: top_answer(p) for e, p in zip(examples, predictions, strict=True)}
    path = Path(folder) / f"{split}_predictions.json"
    atomic_write_bytes(path, (json.dumps(answers, indent=1) + "\n").encode("utf-8"))
    return path


__all__ = [
    "CUSTOM",
    "HEAD",
    "INPUT_RANK",
    "METRICS",
    "NAME",
    "OUTPUTS",
    "PRESETS",
    "TOKEN_OUTPUTS",
    "QADataset",
    "QAExample",
    "Window",
    "agreement",
    "build_model",
    "collate",
    "default_stride",
    "encode",
    "evaluation_data",
    "exact_match",
    "f1",
    "labels_from_config",
    "load_data",
    "make_examples",
    "normalize_answer",
    "postprocess",
    "read_examples",
    "read_squad",
    "sample_examples",
    "score",
    "split_by_article",
    "top_answer",
    "windows",
    "write_predictions",
]
