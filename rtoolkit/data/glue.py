"""GLUE task specs with the fairseq finetuning recipe, readers for the official GLUE files, and readers for
custom CSV / TSV / JSONL data.

The GLUE files are read as distributed: tab-separated with quoting disabled (sentences hold bare `"`), columns
found by header name, CoLA's headerless train/dev files by position, MNLI's dev_matched / dev_mismatched splits.
Every row must have as many fields as the header; anything else raises `DataError` naming the file and line.

Labels: a classification dataset holds label ids (int) in a `LabelSpace` order; a regression dataset holds floats.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

DataFormat = Literal["csv", "tsv", "jsonl"]
FORMATS: tuple[str, ...] = typing.get_args(DataFormat)


class DataError(ValueError):
    """Data a user has to fix; the message names the file, the line and what was expected."""


# ------------------------------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: where its files are, which columns hold text and label, its metrics and fairseq recipe."""

    name: str
    """Short name used on the command line (`sst2`)."""
    folder: str
    """Folder name in the GLUE download (`SST-2`)."""
    text_columns: tuple[str, ...]
    """Header names of the text (and text-pair) columns."""
    label_column: str
    """Header name of the label column (train and dev files)."""
    labels: tuple[str, ...] | None
    """Labels as written in the files, in id order; None for regression."""
    label_names: tuple[str, ...] | None
    """Readable names for `id2label`, in id order; None for regression."""
    metrics: tuple[str, ...]
    """Metrics reported on dev (names in `rtoolkit.train.metrics.METRICS`)."""
    main_metric: str
    """The metric that picks the best checkpoint."""
    files: dict[str, str]
    """Split name -> file name inside the task folder."""
    eval_splits: tuple[str, ...] = ("dev",)
    """The labelled splits evaluated during finetuning (the first one picks the best checkpoint)."""
    submissions: dict[str, str] = field(default_factory=dict)
    """Test split -> GLUE submission file name."""
    headerless_columns: tuple[str, ...] | None = None
    """Column names for train/dev files that have no header row (CoLA)."""
    test_id_column: str = "index"
    """Column of test files holding the example id used in submissions."""
    lr: float = 1e-5
    """Peak learning rate of the fairseq recipe."""
    batch_size: int = 32
    """Sentences per update in the fairseq recipe."""
    epochs: int = 10
    """Epochs in the fairseq recipe."""
    warmup_ratio: float = 0.06
    """Share of the updates spent warming the learning rate up from 0."""
    classifier_dropout: float = 0.0
    """Dropout in the classification head (fairseq's pooler_dropout; Hugging Face's default would be 0.1)."""

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def test_splits(self) -> tuple[str, ...]:
        return tuple(self.submissions)

    def label_space(self) -> LabelSpace:
        return LabelSpace(self.label_names)


def _task(name: str, folder: str, **kw: Any) -> GlueTask:
    files = kw.pop("files", {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"})
    submissions = kw.pop("submissions", {"test": f"{folder}.tsv"})
    return GlueTask(name=name, folder=folder, files=files, submissions=submissions, **kw)


_BINARY = ("0", "1")
# The fairseq recipe (examples/roberta/config/finetuning/*.yaml): lr, batch size, 10 epochs, 6% warmup.
GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        _task(
            "cola",
            "CoLA",
            text_columns=("sentence",),
            label_column="label",
            labels=_BINARY,
            label_names=("unacceptable", "acceptable"),
            metrics=("mcc", "accuracy"),
            main_metric="mcc",
            headerless_columns=("source", "label", "original_label", "sentence"),
            batch_size=16,
        ),
        _task(
            "sst2",
            "SST-2",
            text_columns=("sentence",),
            label_column="label",
            labels=_BINARY,
            label_names=("negative", "positive"),
            metrics=("accuracy",),
            main_metric="accuracy",
        ),
        _task(
            "mrpc",
            "MRPC",
            text_columns=("#1 String", "#2 String"),
            label_column="Quality",
            labels=_BINARY,
            label_names=("not_equivalent", "equivalent"),
            metrics=("f1", "accuracy"),
            main_metric="f1",
            batch_size=16,
        ),
        _task(
            "stsb",
            "STS-B",
            text_columns=("sentence1", "sentence2"),
            label_column="score",
            labels=None,
            label_names=None,
            metrics=("pearson", "spearman"),
            main_metric="pearson",
            lr=2e-5,
            batch_size=16,
        ),
        _task(
            "qqp",
            "QQP",
            text_columns=("question1", "question2"),
            label_column="is_duplicate",
            labels=_BINARY,
            label_names=("not_duplicate", "duplicate"),
            metrics=("f1", "accuracy"),
            main_metric="f1",
            test_id_column="id",
        ),
        _task(
            "mnli",
            "MNLI",
            text_columns=("sentence1", "sentence2"),
            label_column="gold_label",
            labels=("entailment", "neutral", "contradiction"),
            label_names=("entailment", "neutral", "contradiction"),
            metrics=("accuracy",),
            main_metric="accuracy",
            files={
                "train": "train.tsv",
                "dev_matched": "dev_matched.tsv",
                "dev_mismatched": "dev_mismatched.tsv",
                "test_matched": "test_matched.tsv",
                "test_mismatched": "test_mismatched.tsv",
            },
            eval_splits=("dev_matched", "dev_mismatched"),
            submissions={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
        ),
        _task(
            "qnli",
            "QNLI",
            text_columns=("question", "sentence"),
            label_column="label",
            labels=("entailment", "not_entailment"),
            label_names=("entailment", "not_entailment"),
            metrics=("accuracy",),
            main_metric="accuracy",
        ),
        _task(
            "rte",
            "RTE",
            text_columns=("sentence1", "sentence2"),
            label_column="label",
            labels=("entailment", "not_entailment"),
            label_names=("entailment", "not_entailment"),
            metrics=("accuracy",),
            main_metric="accuracy",
            lr=2e-5,
            batch_size=16,
        ),
        # Not in the fairseq table (RoBERTa's WNLI result uses a WSC-specific setup); the small-task settings.
        _task(
            "wnli",
            "WNLI",
            text_columns=("sentence1", "sentence2"),
            label_column="label",
            labels=_BINARY,
            label_names=("not_entailment", "entailment"),
            metrics=("accuracy",),
            main_metric="accuracy",
            batch_size=16,
        ),
    )
}


def get_task(name: str) -> GlueTask:
    """The GlueTask called `name` (case and `-` insensitive: `SST-2`, `sst2`)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise DataError(f"unknown GLUE task {name!r}; choose one of {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


# ---------------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class LabelSpace:
    """The label names in id order (classification), or None (regression)."""

    names: tuple[str, ...] | None

    @property
    def is_regression(self) -> bool:
        return self.names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.names is None else len(self.names)

    @property
    def id2label(self) -> dict[int, str] | None:
        return None if self.names is None else dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int] | None:
        return None if self.names is None else {n: i for i, n in enumerate(self.names)}


@dataclass
class TextDataset:
    """Texts (and text pairs) with their labels, row ids and the file lines they came from.

    `labels` holds label ids (classification), floats (regression), or is None (unlabelled test data).
    """

    texts: list[str]
    pairs: list[str] | None
    labels: list[int] | list[float] | None
    ids: list[str]
    lines: list[int]
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    def __post_init__(self) -> None:
        n = len(self.texts)
        for name in ("pairs", "labels"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{self.source}: {len(value)} {name} for {n} texts")
        if len(self.ids) != n or len(self.lines) != n:
            raise ValueError(f"{self.source}: ids/lines do not match the {n} texts")


# ------------------------------------------------------------------------------------------- raw reading
def _open_text(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return path.open("r", encoding="utf-8-sig", newline="")


def _iter_delimited(
    path: Path, *, delimiter: str, quoting: int, header: Sequence[str] | None = None
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row dict) from a delimited file; blank lines are skipped.

    With `header` None the first non-blank line is the header. Each row must have one field per column.
    """
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting, strict=quoting != csv.QUOTE_NONE)
        columns: list[str] | None = list(header) if header is not None else None
        next_line = 1  # the line the next record starts on (a quoted CSV field may span lines)
        rows = 0
        try:
            for fields in reader:
                line, next_line = next_line, reader.line_num + 1
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                if columns is None:
                    columns = [c.strip() for c in fields]
                    dupes = sorted({c for c in columns if columns.count(c) > 1})
                    if dupes:
                        raise DataError(f"{path}:{line}: header repeats column(s) {dupes}")
                    continue
                if len(fields) != len(columns):
                    raise DataError(
                        f"{path}:{line}: malformed row: expected {len(columns)} fields "
                        f"({', '.join(columns)}), got {len(fields)}"
                    )
                rows += 1
                yield line, dict(zip(columns, fields, strict=True))
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: malformed row: {exc}") from None
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if columns is None:
        raise DataError(f"{path}: file is empty")
    if rows == 0:
        raise DataError(f"{path}: has a header ({', '.join(columns)}) but no data rows")


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    rows = 0
    with _open_text(path) as f:
        try:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{path}:{line_no}: malformed row: invalid JSON ({exc.msg} at column {exc.colno})"
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(
                        f"{path}:{line_no}: malformed row: expected a JSON object, got {type(row).__name__}"
                    )
                rows += 1
                yield line_no, row
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if rows == 0:
        raise DataError(f"{path}: file is empty")


def detect_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """`csv`, `tsv` or `jsonl`: `fmt` when given, else from the file suffix."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise DataError(f"unknown data format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    aliases = {"csv": "csv", "tsv": "tsv", "tab": "tsv", "jsonl": "jsonl", "ndjson": "jsonl", "json": "jsonl"}
    if suffix not in aliases:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {Path(path).suffix!r}; "
            f"use .csv, .tsv or .jsonl (or pass the format explicitly)"
        )
    return aliases[suffix]


def iter_rows(path: str | os.PathLike, *, fmt: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a CSV (header row, standard quoting), TSV (header row, no quoting) or JSONL file."""
    path = Path(path)
    kind = detect_format(path, fmt)
    if kind == "jsonl":
        return _iter_jsonl(path)
    if kind == "csv":
        return _iter_delimited(path, delimiter=",", quoting=csv.QUOTE_MINIMAL)
    return _iter_delimited(path, delimiter="\t", quoting=csv.QUOTE_NONE)


# ----------------------------------------------------------------------------------------------- GLUE
def glue_file(task: GlueTask, data_dir: str | os.PathLike, split: str) -> Path:
    """The file of `split` for `task`, in `data_dir` itself or in its `<GLUE folder>` / `<task name>` subfolder."""
    if split == "dev" and "dev" not in task.files:
        split = task.eval_splits[0]
    if split not in task.files:
        raise DataError(f"{task.name} has no split {split!r}; choose one of {', '.join(task.files)}")
    name = task.files[split]
    data_dir = Path(data_dir)
    candidates = [data_dir / name, data_dir / task.folder / name, data_dir / task.name / name]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{task.name} {split} file not found: looked for {name} in {data_dir} and its {task.folder}/ "
        f"and {task.name}/ subfolders"
    )


def read_glue(task: GlueTask | str, data_dir: str | os.PathLike, split: str) -> TextDataset:
    """Read one split of a GLUE task from the official files; test splits come back without labels."""
    task = get_task(task) if isinstance(task, str) else task
    path = glue_file(task, data_dir, split)
    labelled = not split.startswith("test")
    header = task.headerless_columns if labelled else None
    texts: list[str] = []
    pairs: list[str] | None = [] if len(task.text_columns) > 1 else None
    labels: list[Any] | None = [] if labelled else None
    ids: list[str] = []
    lines: list[int] = []
    raw_to_id = {raw: i for i, raw in enumerate(task.labels or ())}
    wanted = (*task.text_columns, task.label_column) if labelled else task.text_columns
    for line, row in _iter_delimited(path, delimiter="\t", quoting=csv.QUOTE_NONE, header=header):
        if not lines:
            missing = [c for c in wanted if c not in row]
            if missing:
                raise DataError(f"{path}: no column(s) {missing} for {task.name}; the header has {list(row)}")
        texts.append(row[task.text_columns[0]].strip())
        if pairs is not None:
            pairs.append(row[task.text_columns[1]].strip())
        if labels is not None:
            raw = row[task.label_column].strip()
            if task.labels is None:
                labels.append(_parse_float(raw, path, line, task.label_column))
            elif raw in raw_to_id:
                labels.append(raw_to_id[raw])
            else:
                raise DataError(
                    f"{path}:{line}: label {raw!r} is not a {task.name} label (expected one of {task.labels})"
                )
        ids.append(row[task.test_id_column].strip() if not labelled and task.test_id_column in row else "")
        lines.append(line)
    if not labelled or not all(ids):
        ids = [i or str(n) for n, i in enumerate(ids)]
    return TextDataset(texts=texts, pairs=pairs, labels=labels, ids=ids, lines=lines, source=str(path))


def write_glue_submission(
    task: GlueTask | str,
    split: str,
    ids: Sequence[str],
    predictions: Sequence[int] | Sequence[float],
    out_dir: str | os.PathLike,
) -> Path:
    """Write predictions in the GLUE submission format (`index<TAB>prediction`, labels as the files write them)."""
    task = get_task(task) if isinstance(task, str) else task
    if split not in task.submissions:
        raise DataError(
            f"{task.name} has no test split {split!r}; choose one of {', '.join(task.submissions)}"
        )
    if len(ids) != len(predictions):
        raise ValueError(f"{len(ids)} ids but {len(predictions)} predictions")
    out = Path(out_dir) / task.submissions[split]
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = ["index\tprediction"]
    for i, p in zip(ids, predictions, strict=True):
        value = f"{min(5.0, max(0.0, float(p))):.3f}" if task.labels is None else task.labels[int(p)]
        rows.append(f"{i}\t{value}")
    out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


# ------------------------------------------------------------------------------------------ custom data
@dataclass
class RawRows:
    """Custom-data rows before label encoding: labels are canonical strings (None when the file has none)."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[str] | None
    numeric: list[bool]
    """Per row: the label is a number written with a fraction or exponent (a float), which implies regression."""
    lines: list[int]
    source: str


def _text_value(value: Any, path: Path, line: int, column: str) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise DataError(
        f"{path}:{line}: column {column!r} holds {type(value).__name__}, expected text"
        if value is not None
        else f"{path}:{line}: column {column!r} is null, expected text"
    )


def _label_value(value: Any, path: Path, line: int, column: str) -> tuple[str, bool]:
    """The canonical label string and whether it is a float (has a fraction or exponent)."""
    if isinstance(value, bool):
        return ("true" if value else "false"), False
    if isinstance(value, int):
        return str(value), False
    if isinstance(value, float):
        return repr(value), True
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise DataError(f"{path}:{line}: empty label in column {column!r}")
        return text, _looks_like_float(text)
    raise DataError(
        f"{path}:{line}: label in column {column!r} is "
        f"{'null' if value is None else type(value).__name__}, expected a string or a number"
    )


def _looks_like_float(text: str) -> bool:
    try:
        int(text)
        return False
    except ValueError:
        pass
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _parse_float(text: str, path: Path | str, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            f"{path}:{line}: label {text!r} in column {column!r} is not a number (regression needs numbers)"
        ) from None
    if not math.isfinite(value):
        raise DataError(f"{path}:{line}: label {text!r} in column {column!r} is not a finite number")
    return value


def read_rows(
    path: str | os.PathLike,
    *,
    text_column: str,
    text_pair_column: str | None = None,
    label_column: str | None = "label",
    require_label: bool = True,
    fmt: str | None = None,
) -> RawRows:
    """Read a custom CSV / TSV / JSONL file's text, optional text pair and label columns.

    With `require_label` False a file without the label column reads as unlabelled (for predictions).
    """
    path = Path(path)
    texts: list[str] = []
    pairs: list[str] | None = [] if text_pair_column else None
    labels: list[str] | None = [] if label_column else None
    numeric: list[bool] = []
    lines: list[int] = []
    wanted = [c for c in (text_column, text_pair_column) if c]
    for line, row in iter_rows(path, fmt=fmt):
        if not lines:
            if labels is not None and label_column not in row and not require_label:
                labels = None
            missing = [c for c in (*wanted, *([label_column] if labels is not None else [])) if c not in row]
            if missing:
                raise DataError(
                    f"{path}: missing column {', '.join(repr(c) for c in missing)}; "
                    f"the file has columns {list(row)}"
                )
        else:
            absent = [c for c in wanted if c not in row]
            if labels is not None and label_column not in row:
                absent.append(label_column)
            if absent:
                raise DataError(
                    f"{path}:{line}: malformed row: missing key(s) {absent} (the row has {list(row)})"
                )
        texts.append(_text_value(row[text_column], path, line, text_column))
        if pairs is not None:
            pairs.append(_text_value(row[text_pair_column], path, line, text_pair_column))
        if labels is not None:
            label, is_float = _label_value(row[label_column], path, line, label_column)
            labels.append(label)
            numeric.append(is_float)
        lines.append(line)
    return RawRows(texts=texts, pairs=pairs, labels=labels, numeric=numeric, lines=lines, source=str(path))


def infer_label_space(rows: RawRows, *, regression: bool | None = None) -> LabelSpace:
    """The label space of training rows: regression when `regression` is set or any label is a float.

    Classification names are sorted, numerically when every label is an integer (so "2" < "10").
    """
    if rows.labels is None:
        raise DataError(f"{rows.source}: training data needs a label column")
    if regression is None:
        regression = any(rows.numeric)
    if regression:
        for text, line in zip(rows.labels, rows.lines, strict=True):
            _parse_float(text, rows.source, line, "label")
        return LabelSpace(None)
    distinct = set(rows.labels)
    try:
        names = sorted(distinct, key=int)
    except ValueError:
        names = sorted(distinct)
    if len(names) < 2:
        raise DataError(
            f"{rows.source}: every row has the label {names[0]!r}; classification needs at least two labels "
            f"(for a numeric target, ask for regression)"
        )
    return LabelSpace(tuple(names))


def encode_rows(
    rows: RawRows,
    space: LabelSpace,
    *,
    ids: Sequence[str] | None = None,
    known_from: str = "the training data",
) -> TextDataset:
    """Turn raw rows into a TextDataset with label ids (or floats) of `space`; unknown labels are errors.

    `known_from` says where the label space came from, for the error message.
    """
    labels: list[Any] | None = None
    if rows.labels is not None:
        if space.is_regression:
            labels = [
                _parse_float(t, rows.source, n, "label") for t, n in zip(rows.labels, rows.lines, strict=True)
            ]
        else:
            index = space.label2id
            labels = []
            for text, line in zip(rows.labels, rows.lines, strict=True):
                if text not in index:
                    raise DataError(
                        f"{rows.source}:{line}: label {text!r} never appears in {known_from} "
                        f"(known labels: {', '.join(space.names)})"
                    )
                labels.append(index[text])
    return TextDataset(
        texts=rows.texts,
        pairs=rows.pairs,
        labels=labels,
        ids=list(ids) if ids is not None else [str(i) for i in range(len(rows.texts))],
        lines=rows.lines,
        source=rows.source,
    )


def write_predictions(
    path: str | os.PathLike,
    data: TextDataset,
    predictions: Sequence[int] | Sequence[float],
    space: LabelSpace,
) -> Path:
    """Write `id<TAB>prediction` (label names, or floats for regression) for custom data."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = ["index\tprediction"]
    for i, p in zip(data.ids, predictions, strict=True):
        rows.append(f"{i}\t{float(p):.6g}" if space.is_regression else f"{i}\t{space.names[int(p)]}")
    out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------- a task's data
@dataclass
class TaskData:
    """Training rows, the labelled evaluation splits, the test splits and how to score them."""

    train: TextDataset | None
    evals: dict[str, TextDataset]
    tests: dict[str, TextDataset]
    space: LabelSpace
    metrics: tuple[str, ...]
    main_metric: str
    task: GlueTask | None = None

    @property
    def main_key(self) -> str:
        """metrics.jsonl key of the metric that picks best/, e.g. `dev/accuracy`."""
        return f"{next(iter(self.evals))}/{self.main_metric}"


def first_rows(data: TextDataset, n: int | None) -> TextDataset:
    """The first `n` rows of a dataset (all of it for None)."""
    if n is None or n >= len(data):
        return data
    return TextDataset(
        texts=data.texts[:n],
        pairs=data.pairs[:n] if data.pairs is not None else None,
        labels=data.labels[:n] if data.labels is not None else None,
        ids=data.ids[:n],
        lines=data.lines[:n],
        source=data.source,
    )


def custom_metrics(space: LabelSpace) -> tuple[str, ...]:
    """What custom data is scored with: Pearson/Spearman (regression), accuracy/F1 (two labels), accuracy/MCC."""
    if space.is_regression:
        return ("pearson", "spearman")
    return ("accuracy", "f1") if space.num_labels == 2 else ("accuracy", "mcc")


def load_task_data(
    *,
    task: str | None = None,
    data_dir: str | os.PathLike | None = None,
    train_file: str | os.PathLike | None = None,
    validation_file: str | os.PathLike | None = None,
    test_file: str | os.PathLike | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    regression: bool = False,
    data_format: str | None = None,
    predict: bool = False,
    main_metric: str | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    train: bool = True,
) -> TaskData:
    """Read a GLUE task's (or custom files') training, evaluation and, with `predict`, test data."""
    glue_task = None
    if task is not None:
        glue_task = get_task(task)
        train_data = read_glue(glue_task, data_dir, "train") if train else None
        evals = {s: read_glue(glue_task, data_dir, s) for s in glue_task.eval_splits}
        tests = {s: read_glue(glue_task, data_dir, s) for s in glue_task.test_splits} if predict else {}
        space, metrics, main = glue_task.label_space(), glue_task.metrics, glue_task.main_metric
    else:
        columns = dict(
            text_column=text_column,
            text_pair_column=text_pair_column,
            label_column=label_column,
            fmt=data_format,
        )
        train_rows = read_rows(train_file, **columns)
        space = infer_label_space(train_rows, regression=True if regression else None)
        train_data = encode_rows(train_rows, space) if train else None
        evals = {"dev": encode_rows(read_rows(validation_file, **columns), space)}
        tests = {}
        if predict:
            if test_file is None:
                raise ValueError("--predict with custom data needs a test file")
            tests = {"test": encode_rows(read_rows(test_file, require_label=False, **columns), space)}
        metrics = custom_metrics(space)
        main = metrics[0]
    if main_metric is not None:
        if main_metric not in metrics:
            raise ValueError(f"main metric {main_metric!r} is not reported here; choose one of {metrics}")
        main = main_metric
    if train_data is not None:
        train_data = first_rows(train_data, max_train_samples)
    evals = {k: first_rows(v, max_eval_samples) for k, v in evals.items()}
    return TaskData(train_data, evals, tests, space, tuple(metrics), main, glue_task)


__all__ = [
    "TaskData",
    "custom_metrics",
    "first_rows",
    "load_task_data",
    "DataError",
    "GlueTask",
    "GLUE_TASKS",
    "get_task",
    "LabelSpace",
    "TextDataset",
    "RawRows",
    "iter_rows",
    "detect_format",
    "glue_file",
    "read_glue",
    "write_glue_submission",
    "read_rows",
    "infer_label_space",
    "encode_rows",
    "write_predictions",
]
