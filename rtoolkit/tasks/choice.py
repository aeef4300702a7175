"""Multiple choice: RACE (reading comprehension from English exams), one right option per question.

Data are RACE's JSON lines (plain or gzip-compressed), one passage a line with its questions:

    {"answers": ["B", ...], "options": [["opt A", "opt B", "opt C", "opt D"], ...],
     "questions": ["...", "The author thinks _ ."], "article": "passage text ...", "id": "high10024.txt"}

An example is one question (`Question`): its passage, question, options, the index of the right option (from the
answer letter) and its school level ("middle" for RACE-M, "high" for RACE-H, read from the id). A feature is one
question with all its options: option k is encoded as `<s> passage </s></s> question option </s>` (a question with
a blank `_` has the option written into the blank instead; a long passage is cut from its end, never the question
or option unless they alone are too long), the C sequences padded to one length, (C, T). The head
scores each sequence's `<s>` state and reads the C scores as logits over the options; a prediction is the best
option and the softmax probabilities, scored by accuracy (and by accuracy on RACE-M and RACE-H, as the paper
reports them).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtoolkit.checkpoint import atomic_write_bytes, load_state_dict, load_weights, resolve_model_dir
from rtoolkit.config import RobertaConfig
from rtoolkit.data.batching import drop_unneeded_mask
from rtoolkit.data.glue import DataError
from rtoolkit.model import RobertaForMultipleChoice
from rtoolkit.runtime.artifacts import TASK_OUTPUTS
from rtoolkit.tasks.common import Features, Preset, TaskData, pad_stack

logger = logging.getLogger(__name__)

NAME = "multiple-choice"
HEAD = RobertaForMultipleChoice
OUTPUTS = tuple(TASK_OUTPUTS[NAME])  # the graph outputs the export writes, in order
TOKEN_OUTPUTS: frozenset[str] = frozenset()
INPUT_RANK = 3
# The paper's RACE recipe (Appendix, Table 10): lr 1e-5, batch 16, 4 epochs, weight decay 0.1; warmup 6% as in
# its other finetuning recipes. Custom data takes the same settings.
PRESETS = {
    "race": Preset(
        lr=1e-5, batch_size=16, epochs=4, warmup_ratio=0.06, weight_decay=0.1, classifier_dropout=0.0
    )
}
CUSTOM = PRESETS["race"]

LEVELS = ("middle", "high")
METRICS = ("accuracy", "accuracy_middle", "accuracy_high")
FIELDS = ("answers", "options", "questions", "article", "id")
BLANK = "_"


# --------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Question:
    """One multiple-choice question about a passage."""

    passage: str
    question: str
    options: tuple[str, ...]
    label: int | None
    """Index of the right option; None when the data has no answers."""
    id: str
    """The passage's id and the question's index in it (`high10024-0`)."""
    level: str | None = None
    """`middle` (RACE-M) or `high` (RACE-H) when the data says so."""


class QuestionSet:
    """The questions of one file (or one call), in order; `source` names where they came from."""

    def __init__(self, questions: Sequence[Question], source: str):
        self.questions = list(questions)
        self.source = source

    def __len__(self) -> int:
        return len(self.questions)

    def __iter__(self) -> Iterator[Question]:
        return iter(self.questions)

    def __getitem__(self, index: int) -> Question:
        return self.questions[index]

    def __repr__(self) -> str:
        return f"QuestionSet({len(self)} questions from {self.source})"

    @property
    def has_labels(self) -> bool:
        return bool(self.questions) and all(q.label is not None for q in self.questions)

    @property
    def levels(self) -> tuple[str, ...]:
        """The school levels present, in LEVELS order."""
        found = {q.level for q in self.questions}
        return tuple(level for level in LEVELS if level in found)

    def head(self, n: int | None) -> QuestionSet:
        """The first `n` questions (all of them when `n` is None)."""
        return self if n is None else QuestionSet(self.questions[:n], self.source)


def _open_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a plain or gzip-compressed UTF-8 file (recognised by its first bytes)."""
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with path.open("rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    try:
        if compressed:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                yield from enumerate(f, start=1)
        else:
            with path.open("r", encoding="utf-8-sig") as f:
                yield from enumerate(f, start=1)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError, zlib.error) as exc:
        what = "the gzip data" if compressed else "the file"
        raise DataError(f"{path}: cannot read {what} ({exc}); it is corrupt or truncated") from None


def _level(passage_id: str) -> str | None:
    """RACE ids start with their level: `high10024.txt`, `middle3.txt`."""
    return next((level for level in LEVELS if passage_id.startswith(level)), None)


def _answer_index(answer: Any, n_options: int, where: str) -> int:
    if not isinstance(answer, str) or not re.fullmatch(r"[A-Z]", answer.strip()):
        raise DataError(f"{where}: answer {answer!r} is not an option letter (A, B, C, ...)")
    index = ord(answer.strip()) - ord("A")
    if index >= n_options:
        letters = f"A-{chr(ord('A') + n_options - 1)}"
        raise DataError(
            f"{where}: answer {answer!r} is out of range: the question has {n_options} options ({letters})"
        )
    return index


def _passage_questions(record: Any, where: str, *, labelled: bool) -> list[tuple[str, list[str], int | None]]:
    """(question, options, label) of one record, every field checked."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    needed = (
        ("article", "questions", "options", "answers") if labelled else ("article", "questions", "options")
    )
    missing = [k for k in needed if k not in record]
    if missing:
        raise DataError(
            f"{where}: no field {', '.join(repr(k) for k in missing)} (a RACE record has {', '.join(FIELDS)})"
        )
    article, questions, options = record["article"], record["questions"], record["options"]
    if not isinstance(article, str) or not article.strip():
        raise DataError(f"{where}: 'article' must be a non-empty string")
    if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
        raise DataError(f"{where}: 'questions' must be a list of strings")
    if not questions:
        raise DataError(f"{where}: the passage has no questions")
    if not isinstance(options, list) or len(options) != len(questions):
        raise DataError(
            f"{where}: 'options' must be a list with one option list per question ({len(questions)})"
        )
    answers = record.get("answers")
    if answers is not None and (not isinstance(answers, list) or len(answers) != len(questions)):
        raise DataError(f"{where}: 'answers' must be a list with one letter per question ({len(questions)})")
    out = []
    for k, (question, opts) in enumerate(zip(questions, options, strict=True)):
        at = f"{where}, question {k}"
        if not isinstance(opts, list) or not all(isinstance(o, str) and o.strip() for o in opts):
            raise DataError(f"{at}: options must be a list of non-empty strings")
        if len(opts) < 2:
            raise DataError(f"{at}: {len(opts)} option(s); a question needs at least 2")
        label = None if answers is None else _answer_index(answers[k], len(opts), at)
        out.append((question, opts, label))
    return out


def read_race(path: str | os.PathLike, *, labelled: bool = True, limit: int | None = None) -> QuestionSet:
    """The questions of a RACE JSON-lines file (plain or .gz), in order; the first `limit` only when given.

    Every question of a file must have the same number of options (the head scores one (B, C) batch at a time).
    With `labelled` False the `answers` field may be absent (data to predict)."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    questions: list[Question] = []
    n_options: tuple[int, str] | None = None  # (count, where it was first seen)
    records = 0
    for line_no, line in _open_lines(path):
        if not line.strip():
            continue
        records += 1
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        items = _passage_questions(record, where, labelled=labelled)
        raw_id = record.get("id")
        if raw_id is not None and not isinstance(raw_id, str):
            raise DataError(f"{where}: 'id' must be a string, got {raw_id!r:.40}")
        passage_id = raw_id.removesuffix(".txt") if raw_id else f"{path.name}:{line_no}"
        level = _level(raw_id) if raw_id else None
        for k, (question, opts, label) in enumerate(items):
            if n_options is None:
                n_options = (len(opts), f"{where}, question {k}")
            elif len(opts) != n_options[0]:
                raise DataError(
                    f"{where}, question {k}: {len(opts)} options, but {n_options[1]} has {n_options[0]}; every "
                    f"question of a file needs the same number of options"
                )
            questions.append(
                Question(record["article"], question, tuple(opts), label, f"{passage_id}-{k}", level)
            )
            if limit is not None and len(questions) >= limit:
                return QuestionSet(questions, str(path))
    if records == 0:
        raise DataError(f"{path}: file is empty")
    return QuestionSet(questions, str(path))


def split_files(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """The files of a RACE split in `data_dir` (or in its `race/` folder): SPLIT.jsonl, or its parts
    SPLIT-00.jsonl, SPLIT-01.jsonl, ..., each plain or .gz (the plain file wins when both are there)."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder not found: {folder}")
    if not any(folder.glob(f"{split}*.jsonl*")) and (folder / "race").is_dir():
        folder = folder / "race"
    found: dict[str, Path] = {}
    pattern = re.compile(rf"({re.escape(split)}(-\d+)?\.jsonl)(\.gz)?")
    for path in sorted(folder.iterdir()):
        match = pattern.fullmatch(path.name)
        if match and (match.group(1) not in found or not match.group(3)):
            found[match.group(1)] = path
    if not found:
        raise FileNotFoundError(
            f"{folder}: no RACE {split} data (expected {split}.jsonl, or {split}-00.jsonl, {split}-01.jsonl, ...; "
            f"plain or .gz)"
        )
    return [found[name] for name in sorted(found)]


def read_split(
    data_dir: str | os.PathLike, split: str, *, labelled: bool = True, limit: int | None = None
) -> QuestionSet:
    """Every question of a RACE split (its files in order), the first `limit` only when given (see `read_race`)."""
    files = split_files(data_dir, split)
    questions: list[Question] = []
    for path in files:
        left = None if limit is None else limit - len(questions)
        if left is not None and left <= 0:
            break
        questions += read_race(path, labelled=labelled, limit=left).questions
    source = str(files[0]) if len(files) == 1 else f"{files[0].parent}/{split}*"
    return QuestionSet(questions, source)


def metrics_for(examples: QuestionSet) -> tuple[str, ...]:
    """accuracy, with accuracy_middle / accuracy_high when the questions carry their level."""
    return ("accuracy", *(f"accuracy_{level}" for level in examples.levels))


def _main_metric(requested: str | None, metrics: tuple[str, ...]) -> str:
    if requested is None:
        return "accuracy"
    if requested not in metrics:
        raise ValueError(f"main metric {requested!r} is not reported here; choose one of {metrics}")
    return requested


def load_data(cfg: Any, *, train: bool = True) -> TaskData:
    """RACE's train files and dev split from `cfg.data_dir` (with `cfg.predict`, its test split), or custom files
    in RACE's format (`cfg.train_file`, `cfg.validation_file`, `cfg.test_file`)."""
    if cfg.task is not None:
        if cfg.task not in PRESETS:
            raise ValueError(f"unknown multiple-choice task {cfg.task!r}; choose one of {', '.join(PRESETS)}")
        if cfg.data_dir is None:
            raise ValueError(
                f"task {cfg.task} needs data_dir (the folder with its .jsonl or .jsonl.gz files)"
            )
        train_data = read_split(cfg.data_dir, "train", limit=cfg.max_train_samples) if train else None
        evals = {"dev": read_split(cfg.data_dir, "dev", limit=cfg.max_eval_samples)}
        tests = {"test": read_split(cfg.data_dir, "test", labelled=False)} if cfg.predict else {}
        metrics = METRICS
    else:
        if cfg.validation_file is None:
            raise ValueError("custom multiple-choice data needs a validation file")
        train_data = None
        if train:
            if cfg.train_file is None:
                raise ValueError("custom multiple-choice data needs a training file")
            train_data = read_race(cfg.train_file, limit=cfg.max_train_samples)
        evals = {"dev": read_race(cfg.validation_file, limit=cfg.max_eval_samples)}
        tests = {}
        if cfg.predict:
            if cfg.test_file is None:
                raise ValueError("--predict with custom data needs a test file")
            tests = {"test": read_race(cfg.test_file, labelled=False)}
        metrics = metrics_for(evals["dev"])
    return TaskData(train_data, evals, tests, metrics, _main_metric(cfg.main_metric, metrics), task=cfg.task)


def read_examples(path: str | os.PathLike, *, limit: int | None = None) -> QuestionSet:
    """Labelled questions from a RACE JSON-lines file (plain or .gz)."""
    return read_race(path, limit=limit)


def make_examples(
    passages: Sequence[str], questions: Sequence[str], options: Sequence[Sequence[str]]
) -> QuestionSet:
    """Unlabelled questions from Python values: passages[i], questions[i] and options[i] make example i. Every
    example needs the same number of options (at least 2)."""
    if not len(passages) == len(questions) == len(options):
        raise ValueError(
            f"got {len(passages)} passages, {len(questions)} questions and {len(options)} option lists; "
            f"give one of each per example"
        )
    if not passages:
        raise ValueError("no examples: give at least one passage, question and option list")
    out = []
    for i, (passage, question, opts) in enumerate(zip(passages, questions, options, strict=True)):
        if not isinstance(passage, str) or not passage.strip():
            raise ValueError(f"example {i}: the passage must be a non-empty string")
        if not isinstance(question, str):
            raise ValueError(f"example {i}: the question must be a string, got {type(question).__name__}")
        if isinstance(opts, str) or not all(isinstance(o, str) and o.strip() for o in opts):
            raise ValueError(f"example {i}: options must be a list of non-empty strings")
        if len(opts) < 2:
            raise ValueError(f"example {i}: {len(opts)} option(s); a question needs at least 2")
        if len(opts) != len(options[0]):
            raise ValueError(
                f"example {i}: {len(opts)} options, but example 0 has {len(options[0])}; every example needs "
                f"the same number of options"
            )
        out.append(Question(passage, question, tuple(opts), None, str(i)))
    return QuestionSet(out, "the given examples")


def sample_examples() -> QuestionSet:
    """Three small built-in questions (four options each), one of them with a blank."""
    passage = (
        "Tom's school is near the river. Every morning he walks there with his sister Anna, and after school they "
        "play football in the park before they go home for dinner."
    )
    rows = (
        ("Where is Tom's school?", ("in the park", "near the river", "at home", "in town"), 1),
        ("Tom goes to school _ .", ("by bus", "by bike", "on foot", "by car"), 2),
        ("What do they do after school?", ("swim", "read books", "cook dinner", "play football"), 3),
    )
    questions = [Question(passage, q, o, y, f"sample-{i}", "middle") for i, (q, o, y) in enumerate(rows)]
    return QuestionSet(questions, "sample_examples")


# --------------------------------------------------------------------------------------------------- model
def build_model(
    folder: str | os.PathLike,
    labels: Any = None,
    *,
    classifier_dropout: float | None = None,
    dropout: float | None = None,
) -> RobertaForMultipleChoice:
    """A multiple-choice head on the encoder in `folder` (`labels` is unused: the head scores any number of
    options). `dropout` replaces the encoder's dropout, `classifier_dropout` the head's (None: the folder's
    setting, else the encoder's dropout).

    The scorer is kept when the folder holds a multiple-choice model (continued finetuning) and freshly
    initialised otherwise; the pooler is kept whenever the folder has one (roberta-base does)."""
    folder = resolve_model_dir(folder)
    source = RobertaConfig.from_pretrained(folder)
    values = source.to_dict()
    for key in ("id2label", "label2id", "architectures", "num_labels", "problem_type"):
        values.pop(key, None)
    if dropout is not None:
        values.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    if classifier_dropout is not None:
        values["classifier_dropout"] = classifier_dropout
    model = RobertaForMultipleChoice(RobertaConfig.from_dict(values))
    state = load_state_dict(folder)
    # Another head's classifier.* (a tagger's, say) means something else: only a multiple-choice scorer is kept.
    if not any(a.endswith("ForMultipleChoice") for a in source.architectures or []):
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    if load_weights(model, state, source=str(folder)):
        logger.info("new multiple-choice head")
    return model


def labels_from_config(config: RobertaConfig) -> None:
    """A multiple-choice head has no label names: it scores whatever options it is given."""
    return None


# --------------------------------------------------------------------------------------------- features
def option_text(question: str, option: str) -> str:
    """The second segment of an option's sequence: the option written into the question's blank(s) `_` when it
    has any (RACE's cloze questions), else the question and the option."""
    if BLANK in question:
        return question.replace(BLANK, option)
    return f"{question} {option}" if question.strip() else option


def encode(tokenizer: Any, examples: QuestionSet, *, max_length: int, stride: int | None = None) -> Features:
    """One feature per question: input_ids (C, T) (int32 to save memory; `collate` makes them int64), each
    option's `<s> passage </s></s> question option </s>` padded with `<pad>` to the longest of the C;
    option_lengths (C,); labels () when known. A feature's length is its longest option.

    The passage's line breaks are read as spaces. Only the passage is truncated (from its end) to fit `max_length`. A question and option that alone leave no
    room within `max_length` are themselves cut from their end, with the passage left empty."""
    if max_length < 4:
        raise ValueError(f"max_length must be at least 4 (room for <s> </s></s> </s>), got {max_length}")
    budget = max_length - 4
    counts = {len(q.options) for q in examples}
    if len(counts) > 1:
        raise DataError(
            f"{examples.source}: questions with {sorted(counts)} options; every question needs the same number"
        )
    unique = list(dict.fromkeys(q.passage for q in examples))
    # Line breaks become spaces, as in fairseq's RACE preprocessing (RoBERTa's pretraining text has none).
    flat = [p.replace("\n", " ") for p in unique]
    encoded = tokenizer.encode_batch(flat, max_length=None, add_special_tokens=False)
    passage_ids = dict(zip(unique, encoded, strict=True))
    texts = [option_text(q.question, o) for q in examples for o in q.options]
    option_ids = iter(tokenizer.encode_batch(texts, max_length=None, add_special_tokens=False))
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids, lengths, labels = [], [], []
    for q in examples:
        passage = passage_ids[q.passage]
        rows = []
        for _ in q.options:
            second = next(option_ids)[:budget]
            rows.append([bos, *passage[: budget - len(second)], eos, eos, *second, eos])
        option_lengths = np.asarray([len(r) for r in rows], dtype=np.int64)
        ids.append(pad_stack([np.asarray(r, dtype=np.int32) for r in rows], tokenizer.pad_token_id))
        lengths.append(option_lengths)
        labels.append(q.label)
    inputs: dict[str, list[np.ndarray]] = {"input_ids": ids, "option_lengths": lengths}
    if examples.has_labels:
        inputs["labels"] = [np.asarray(y, dtype=np.int64) for y in labels]
    longest = np.asarray([int(n.max()) for n in lengths], dtype=np.int64)
    return Features(inputs, np.arange(len(ids)), longest)


def collate(tokenizer: Any, features: Features, rows: Any) -> dict[str, torch.Tensor]:
    """Pad to the longest option of the batch: input_ids (B, C, T), attention_mask (B, C, T) (absent when
    nothing is padded) and labels (B,) when the features have them."""
    rows = [int(r) for r in rows]
    ids = [features.inputs["input_ids"][r] for r in rows]
    counts = sorted({a.shape[0] for a in ids})
    if len(counts) > 1:
        raise ValueError(
            f"a batch mixes questions with {counts} options; every question needs the same number"
        )
    input_ids = pad_stack(ids, tokenizer.pad_token_id)  # (B, C, T)
    lengths = np.stack([features.inputs["option_lengths"][r] for r in rows])  # (B, C)
    mask = np.arange(input_ids.shape[-1]) < lengths[..., None]  # (B, C, T)
    batch = drop_unneeded_mask(
        {"input_ids": torch.from_numpy(input_ids).long(), "attention_mask": torch.from_numpy(mask).long()}
    )
    if "labels" in features.inputs:
        batch["labels"] = torch.tensor([int(features.inputs["labels"][r]) for r in rows], dtype=torch.long)
    return batch


# ------------------------------------------------------------------------------------------ predictions
def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def postprocess(
    outputs: list[dict[str, np.ndarray]],
    features: Features,
    examples: QuestionSet,
    data: Any = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """One prediction per question: {"label": index of the best option, "scores": softmax probability of each
    option, in option order}."""
    predictions: dict[int, dict[str, Any]] = {}
    for i, output in enumerate(outputs):
        logits = np.asarray(output["logits"], dtype=np.float64)  # (C,)
        predictions[int(features.example[i])] = {
            "label": int(logits.argmax()),
            "scores": [float(p) for p in _softmax(logits)],
        }
    missing = [i for i in range(len(examples)) if i not in predictions]
    if missing:
        raise ValueError(f"no model output for example(s) {missing[:8]}")
    return [predictions[i] for i in range(len(examples))]


def score(predictions: list[dict[str, Any]], examples: QuestionSet, data: Any = None) -> dict[str, float]:
    """accuracy, and accuracy_middle / accuracy_high over the questions of each level present."""
    if not examples.has_labels:
        raise DataError(f"{examples.source}: has no answers to evaluate against")
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} questions")
    right = np.asarray([p["label"] == q.label for p, q in zip(predictions, examples, strict=True)])
    scores = {"accuracy": float(right.mean())}
    levels = np.asarray([q.level for q in examples], dtype=object)
    for level in examples.levels:
        scores[f"accuracy_{level}"] = float(right[levels == level].mean())
    return scores


def agreement(reference: list[dict[str, Any]], candidate: list[dict[str, Any]]) -> dict[str, float]:
    """Share of questions on which two models choose the same option."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference predictions but {len(candidate)} candidate predictions")
    if not reference:
        raise ValueError("no predictions to compare")
    same = [r["label"] == c["label"] for r, c in zip(reference, candidate, strict=True)]
    return {"choice_agreement": float(np.mean(same))}


def write_predictions(
    predictions: list[dict[str, Any]], examples: QuestionSet, data: Any, split: str, folder: Path
) -> Path:
    """FOLDER/SPLIT_predictions.jsonl: one line per question, {"id", "label" (option index), "answer" (its
    letter), "scores" (probability per option)}."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} questions")
    lines = [
        json.dumps(
            {"id": q.id, "label": p["label"], "answer": chr(ord("A") + p["label"]), "scores": p["scores"]}
        )
        for p, q in zip(predictions, examples, strict=True)
    ]
    path = Path(folder) / f"{split}_predictions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode("utf-8"))
    return path


# ------------------------------------------------------------------------------------------- evaluation
def evaluation_data(model: RobertaForMultipleChoice, request: Any) -> TaskData:
    """The questions `rtoolkit evaluate` scores: RACE's split `request.split` from `request.data_dir`, or a custom
    labelled file in RACE's format (`request.validation_file`)."""
    if request.task is not None:
        if request.task not in PRESETS:
            raise ValueError(
                f"unknown multiple-choice task {request.task!r}; choose one of {', '.join(PRESETS)}"
            )
        if request.data_dir is None:
            raise ValueError(
                f"task {request.task} needs data_dir (the folder with its .jsonl or .jsonl.gz files)"
            )
        sets = {request.split: read_split(request.data_dir, request.split, limit=request.max_samples)}
        metrics = METRICS
    else:
        sets = {"dev": read_race(request.validation_file, limit=request.max_samples)}
        metrics = metrics_for(sets["dev"])
    return TaskData(None, sets, {}, metrics, "accuracy", task=request.task)


__all__ = [
    "CUSTOM",
    "HEAD",
    "INPUT_RANK",
    "NAME",
    "OUTPUTS",
    "PRESETS",
    "TOKEN_OUTPUTS",
    "Question",
    "QuestionSet",
    "agreement",
    "build_model",
    "collate",
    "encode",
    "evaluation_data",
    "labels_from_config",
    "load_data",
    "make_examples",
    "metrics_for",
    "option_text",
    "postprocess",
    "read_examples",
    "read_race",
    "read_split",
    "sample_examples",
    "score",
    "split_files",
    "write_predictions",
]
