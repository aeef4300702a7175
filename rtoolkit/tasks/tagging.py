"""Token classification: a BIO tag per word, named entities from the tags (CoNLL-2003 English NER).

Data. CoNLL column files: one word per line with its columns separated by whitespace (CoNLL-2003: `WORD POS
CHUNK NER`), the tag in the LAST column, a blank line after each sentence, `-DOCSTART-` lines skipped. Tags are
`O`, `B-TYPE` or `I-TYPE` in IOB1 (CoNLL-2003's own files: `B-` only between two touching entities of one type) or
IOB2; both are read as IOB2, where every entity starts with `B-` (`to_iob2`). The named task `conll2003` trains on
eng.train and evaluates on eng.testa (dev); custom files (`family="token-classification"`) use the same format.

Labels. `O` first, then the `B-`/`I-` tags of every entity type seen in the training file, sorted (CoNLL-2003: O,
B-LOC, B-MISC, B-ORG, B-PER, I-LOC, I-MISC, I-ORG, I-PER); saved as the model's id2label. Both tags of a type are
in the set even when training only shows one of them (an entity type whose training entities are all one word
long). An evaluation file with a type the training file does not have is an error naming the file and line.

Features. A sentence's words are joined with single spaces into one text and tokenized word by word (byte-level
BPE: a word after the first is preceded by its space, so it starts with a `Ġ` piece; the ids equal those of the
whole text). Only each word's FIRST sub-token carries its tag; later sub-tokens, `<s>` and `</s>` carry -100.
A sentence longer than `max_length` tokens is cut: the words whose first sub-token falls past the cut get no
prediction and are tagged `O` (there is no sliding window; `stride` is not used). CoNLL-2003's longest sentence
(124 words) fits well inside 512 tokens.

Predictions. One dict per sentence, as `Predictor.tag` returns it:

    {"tags": ["B-PER", "I-PER", "O", ...],                        one BIO tag per word
     "entities": [{"entity": "PER", "text": "George Washington", "start": 0, "end": 17, "score": 0.93}, ...]}

`start`/`end` are character offsets (end exclusive) into the sentence's text: the words joined by single spaces
for file data, the ORIGINAL text for `make_examples`. `score` is the mean, over the entity's words, of the
probability of their predicted tag. Entities follow conlleval's chunk rules: an entity starts at `B-X`, or at an
`I-X` after `O` or after another type, and runs over the `I-X` tags that follow it.

Metrics. Entity-level precision, recall and F1 micro-averaged over the entity types, as conlleval (and seqeval's
default mode) computes them, plus word-level tag accuracy; all are FRACTIONS in [0, 1] (seqeval's convention, the
one the classification metrics use), not conlleval's percentages. F1 picks best/.

Recipe. RoBERTa's paper has no NER experiment. The preset follows Hugging Face's token-classification example
(transformers' examples/pytorch/token-classification/run_ner.py: learning rate 5e-5, 3 epochs, linear decay) at a
batch of 32 sentences (the batch of its published roberta-base CoNLL-2003 runs), with fairseq's 6% warmup and
BERT's weight decay 0.01. Custom data takes the same settings.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtoolkit.checkpoint import load_state_dict, load_weights, resolve_model_dir
from rtoolkit.config import RobertaConfig
from rtoolkit.data.batching import drop_unneeded_mask
from rtoolkit.data.glue import DataError
from rtoolkit.model import IGNORE_INDEX, RobertaForTokenClassification
from rtoolkit.runtime.artifacts import TASK_OUTPUTS
from rtoolkit.tasks.common import Features, Preset, TaskData, pad_stack

logger = logging.getLogger(__name__)

NAME = "token-classification"
HEAD = RobertaForTokenClassification
OUTPUTS = tuple(TASK_OUTPUTS[NAME])  # the graph outputs the export writes, in order
TOKEN_OUTPUTS: frozenset[str] = frozenset({"logits"})
INPUT_RANK = 2
# Hugging Face's run_ner.py settings (5e-5, 3 epochs) at batch 32, fairseq's warmup, BERT's decay: see above.
PRESETS = {"conll2003": Preset(lr=5e-5, batch_size=32, epochs=3, warmup_ratio=0.06, weight_decay=0.01)}
CUSTOM = PRESETS["conll2003"]
METRICS = ("f1", "precision", "recall", "accuracy")
OUTSIDE = "O"
DOCSTART = "-DOCSTART-"
# The named task's files: eng.train and eng.testa (dev) as distributed, eng.testb (test) when present.
CONLL_FILES = {"train": "eng.train", "dev": "eng.testa", "test": "eng.testb"}
PREDICTIONS_SUFFIX = "_predictions.conll"
_TAG = re.compile(r"^(B|I)-(\S+)$")
_WORD = re.compile(r"\S+")


# --------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Sentence:
    """One example: its words, the text they lie in and where (`starts[i]`: word i's first character in `text`),
    its IOB2 tags when labelled, and where it came from (`line`: the line of its first word, 1-based; word i is
    on line `line + i`; 0 for texts that come from no file)."""

    words: tuple[str, ...]
    text: str
    starts: tuple[int, ...]
    tags: tuple[str, ...] | None = None
    line: int = 0

    @classmethod
    def from_words(
        cls, words: Sequence[str], tags: Sequence[str] | None = None, *, line: int = 0
    ) -> Sentence:
        """A sentence whose text is its words joined by single spaces."""
        starts, at = [], 0
        for w in words:
            starts.append(at)
            at += len(w) + 1
        return cls(tuple(words), " ".join(words), tuple(starts), None if tags is None else tuple(tags), line)


@dataclass
class Sentences:
    """A split: its sentences, the file they came from (or a description of where) and the label names that tag
    ids index (None: the tags are not turned into model labels)."""

    sentences: list[Sentence]
    source: str
    labels: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.sentences)

    def __iter__(self) -> Iterator[Sentence]:
        return iter(self.sentences)

    def __getitem__(self, index: int) -> Sentence:
        return self.sentences[index]

    @property
    def labelled(self) -> bool:
        return all(s.tags is not None for s in self.sentences)

    def first(self, n: int | None) -> Sentences:
        """The first `n` sentences (all of them for None)."""
        if n is None or n >= len(self.sentences):
            return self
        return Sentences(self.sentences[:n], self.source, self.labels)


def tag_type(tag: str) -> str | None:
    """The entity type of a BIO tag (`B-PER` -> PER), None for O."""
    return None if tag == OUTSIDE else tag[2:]


def to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 (or IOB2) tags -> IOB2: an `I-X` that starts an entity (first word, after O, or after another type)
    becomes `B-X`. IOB2 input comes back unchanged."""
    out = []
    previous = OUTSIDE
    for tag in tags:
        if tag.startswith("I-") and tag_type(previous) != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first word, end word exclusive) of every entity in BIO tags, with conlleval's chunk rules: an entity
    starts at `B-X`, or at `I-X` after O or after another type, and goes on over the `I-X` that follow."""
    spans: list[tuple[str, int, int]] = []
    kind: str | None = None
    begin = 0
    for i, tag in enumerate(tags):
        this = tag_type(tag)
        if kind is not None and (this != kind or tag.startswith("B-")):
            spans.append((kind, begin, i))
            kind = None
        if this is not None and kind is None:
            kind, begin = this, i
    if kind is not None:
        spans.append((kind, begin, len(tags)))
    return spans


def label_names(sentences: Sentences) -> tuple[str, ...]:
    """O, then B- and I- of every entity type the sentences hold, sorted."""
    kinds = {tag_type(t) for s in sentences for t in (s.tags or ())} - {None}
    return (OUTSIDE, *sorted(f"{p}-{k}" for k in kinds for p in "BI"))


def _check_tag(tag: str, where: str) -> None:
    if tag != OUTSIDE and not _TAG.match(tag):
        raise DataError(
            f"{where}: tag {tag!r} is not a BIO tag; expected O, B-TYPE or I-TYPE (IOB1 or IOB2) in the last column"
        )


def _open_lines(path: Path) -> Iterator[str]:
    if not path.is_file():
        raise DataError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            yield from handle
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start}); convert it to UTF-8"
        ) from None


def read_conll(
    path: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    known_from: str = "the training data",
    require_tags: bool = True,
    limit: int | None = None,
) -> Sentences:
    """Sentences of a CoNLL column file, tags in IOB2.

    The first word line sets the file's column count (CoNLL-2003: 4); every word line must have as many, and with
    `require_tags` at least two (the word and, last, its tag). Without `require_tags` a file of one-column lines
    is read as unlabelled words. With `labels`, a tag outside them is an error naming the file and line (they are
    `known_from` the training data). Raises DataError naming the file and line for anything malformed.
    """
    path = Path(path)
    allowed = None if labels is None else set(labels)
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    first_line = 0
    columns: tuple[int, int] | None = None  # (count, line that set it)
    valid: set[str] = set()  # tags already checked

    def finish() -> None:
        nonlocal words, tags
        if words:
            iob2 = to_iob2(tags) if columns is not None and columns[0] > 1 else None
            for j, tag in enumerate(iob2 or ()):
                if allowed is not None and tag not in allowed:
                    raise DataError(
                        f"{path}:{first_line + j}: tag {tags[j]!r} (IOB2 {tag}) was not seen in {known_from} "
                        f"(known: {', '.join(labels or ())})"
                    )
            sentences.append(Sentence.from_words(words, iob2, line=first_line))
        words, tags = [], []

    for number, raw in enumerate(_open_lines(path), start=1):
        if limit is not None and len(sentences) >= limit:
            break
        parts = raw.split()
        if not parts:
            finish()
            continue
        if parts[0] == DOCSTART:
            finish()
            continue
        if columns is None:
            if len(parts) < 2 and require_tags:
                raise DataError(
                    f"{path}:{number}: one column ({parts[0]!r}); expected the word and its tag in the last column, "
                    f"separated by whitespace"
                )
            columns = (len(parts), number)
        elif len(parts) != columns[0]:
            raise DataError(
                f"{path}:{number}: {len(parts)} column(s), but line {columns[1]} has {columns[0]}; every word line needs "
                f"the same columns (the word first, the tag last)"
            )
        if not words:
            first_line = number
        words.append(parts[0])
        if columns[0] > 1:
            tag = parts[-1]
            if tag not in valid:
                _check_tag(tag, f"{path}:{number}")
                valid.add(tag)
            tags.append(tag)
    finish()
    if not sentences:
        raise DataError(f"{path}: no sentences (expected word lines, a blank line after each sentence)")
    return Sentences(sentences, str(path), None if labels is None else tuple(labels))


def read_examples(path: str | os.PathLike, *, limit: int | None = None) -> Sentences:
    """Labelled sentences of a CoNLL column file (the first `limit`), label names from the file's own tags."""
    data = read_conll(path, limit=limit)
    return Sentences(data.sentences, data.source, label_names(data))


def make_examples(texts: Sequence[str]) -> Sentences:
    """Unlabelled sentences from texts: each split into words on whitespace, offsets into the original text.
    An empty or blank text raises DataError naming it."""
    if isinstance(texts, str):
        texts = [texts]
    sentences = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"texts[{i}] must be a string, got {type(text).__name__}")
        found = list(_WORD.finditer(text))
        if not found:
            raise DataError(
                f"texts[{i}] is {'empty' if not text else 'blank'}: a sentence needs at least one word"
            )
        sentences.append(Sentence(tuple(m.group() for m in found), text, tuple(m.start() for m in found)))
    if not sentences:
        raise DataError("no texts to tag")
    return Sentences(sentences, "texts")


def sample_examples() -> Sentences:
    """Three short built-in sentences (unlabelled), for checking a model or an export without data."""
    return make_examples(
        [
            "George Washington went to Washington to meet the board of Acme Corporation .",
            "EU rejects German call to boycott British lamb .",
            "The Peace Prize was awarded in Oslo on Friday .",
        ]
    )


def conll_file(data_dir: str | os.PathLike, split: str) -> Path:
    """The named task's file for `split` (train, dev, test) in `data_dir` or in its conll2003/ folder."""
    if split not in CONLL_FILES:
        raise DataError(f"conll2003 has no split {split!r}; choose one of {', '.join(CONLL_FILES)}")
    name = CONLL_FILES[split]
    folder = Path(data_dir)
    for candidate in (folder / name, folder / "conll2003" / name):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{folder}: no {name} (the CoNLL-2003 {split} file) here or in {folder / 'conll2003'}; data_dir must be "
        f"the folder with eng.train and eng.testa"
    )


def _task_folder(task: str, data_dir: str | os.PathLike | None) -> Path:
    """The data folder of the named task `task`; an unknown task or a missing folder is a DataError."""
    if task not in PRESETS:
        raise DataError(f"unknown token-classification task {task!r}; choose one of {', '.join(PRESETS)}")
    if data_dir is None:
        raise DataError(f"task {task} needs data_dir (the folder with eng.train and eng.testa)")
    return Path(data_dir)


def load_data(cfg: Any, *, train: bool = True) -> TaskData:
    """CoNLL-2003's (or custom files') training sentences, dev sentences and, with `cfg.predict`, test sentences.
    The label set comes from the whole training file, before `max_train_samples` cuts it."""
    if cfg.task is not None:
        folder = _task_folder(cfg.task, cfg.data_dir)
        train_path = conll_file(folder, "train")
        eval_paths = {"dev": conll_file(folder, "dev")}
        test_paths = {"test": conll_file(folder, "test")} if cfg.predict else {}
    else:
        if cfg.train_file is None or cfg.validation_file is None:
            raise DataError("custom token-classification data needs train_file and validation_file")
        train_path, eval_paths = Path(cfg.train_file), {"dev": Path(cfg.validation_file)}
        test_paths = {}
        if cfg.predict:
            if cfg.test_file is None:
                raise DataError("--predict with custom data needs a test file")
            test_paths = {"test": Path(cfg.test_file)}
    training = read_conll(train_path)
    labels = label_names(training)
    train_data = (
        Sentences(training.sentences, training.source, labels).first(cfg.max_train_samples) if train else None
    )
    evals = {
        split: read_conll(p, labels=labels, known_from=str(train_path)).first(cfg.max_eval_samples)
        for split, p in eval_paths.items()
    }
    tests = {
        split: read_conll(p, labels=labels, known_from=str(train_path), require_tags=False)
        for split, p in test_paths.items()
    }
    main = cfg.main_metric or "f1"
    if main not in METRICS:
        raise DataError(f"main metric {main!r} is not reported here; choose one of {', '.join(METRICS)}")
    return TaskData(train_data, evals, tests, METRICS, main, labels=labels, task=cfg.task)


# -------------------------------------------------------------------------------------------------- model
def build_model(
    folder: str | os.PathLike,
    labels: Sequence[str],
    *,
    classifier_dropout: float | None = None,
) -> RobertaForTokenClassification:
    """A token classifier predicting `labels` (TaskData.labels) on the encoder in `folder`; `classifier_dropout`
    replaces the head's dropout (None: the folder's setting, else the encoder's dropout).

    The classifier is kept when the folder has one for the same label names (continued finetuning) and freshly
    initialised otherwise (a pretrained encoder, a sequence classifier, or a tagger for other labels).
    """
    folder = resolve_model_dir(folder)
    config = RobertaConfig.from_pretrained(folder)
    values = config.to_dict()
    for key in ("id2label", "label2id", "architectures", "problem_type"):
        values.pop(key, None)
    values.update(
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    if classifier_dropout is not None:
        values["classifier_dropout"] = classifier_dropout
    model = RobertaForTokenClassification(RobertaConfig.from_dict(values))
    state = load_state_dict(folder)
    own = model.state_dict()
    head = [k for k in state if k.startswith("classifier.")]
    fits = all(k in own and own[k].shape == state[k].shape for k in head)
    previous = None if config.id2label is None else labels_from_config(config)
    if head and not (fits and previous in (None, tuple(labels))):
        logger.info(
            "%s: its classifier predicts other labels; starting a new token-classification head", folder
        )
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    if load_weights(model, state, source=str(folder)):
        logger.info("new token-classification head with %d labels", len(labels))
    return model


def labels_from_config(config: RobertaConfig) -> tuple[str, ...]:
    """The tag names a trained token classifier predicts, in id order (LABEL_i when its config names none)."""
    names = config.id2label or {i: f"LABEL_{i}" for i in range(config.num_labels)}
    return tuple(names[i] for i in range(config.num_labels))


# ----------------------------------------------------------------------------------------------- features
def encode(tokenizer: Any, examples: Sentences, *, max_length: int, stride: int | None = None) -> Features:
    """One feature per sentence: `<s>`, the sub-tokens of its words, `</s>`, cut to `max_length` tokens; labels
    (when the sentences are labelled) hold the tag id at each word's first sub-token and -100 elsewhere.
    `info[i]` is (W,) the token position of each word the feature covers (W may be fewer than the sentence's words
    when it was cut). `stride` is not used: long sentences are cut, not windowed."""
    if max_length < 3:
        raise ValueError(f"max_length must be at least 3 (<s>, one token, </s>), got {max_length}")
    index = None
    if examples.labels is not None and examples.labelled:
        index = {name: i for i, name in enumerate(examples.labels)}
    pieces = (w if j == 0 else " " + w for s in examples for j, w in enumerate(s.words))
    word_ids = tokenizer.iter_encode(pieces)
    budget = max_length - 2
    rows, positions, label_rows = [], [], []
    for sentence in examples:
        ids = [tokenizer.bos_token_id]
        firsts = []
        for _ in sentence.words:
            piece = next(word_ids)
            room = budget - (len(ids) - 1)
            if room > 0:
                firsts.append(len(ids))
                ids.extend(piece[:room])
        ids.append(tokenizer.eos_token_id)
        rows.append(np.asarray(ids, dtype=np.int64))
        positions.append(np.asarray(firsts, dtype=np.int64))
        if index is not None:
            assert sentence.tags is not None
            labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
            labels[firsts] = [index[t] for t in sentence.tags[: len(firsts)]]
            label_rows.append(labels)
    inputs: dict[str, list[np.ndarray]] = {"input_ids": rows}
    if index is not None:
        inputs["labels"] = label_rows
    lengths = np.asarray([len(r) for r in rows], dtype=np.int64)
    return Features(inputs, np.arange(len(rows)), lengths, positions)


def collate(tokenizer: Any, features: Features, rows: Any) -> dict[str, torch.Tensor]:
    """Pad to the longest row: input_ids (B, T), attention_mask (B, T; absent when nothing is padded) and labels
    (B, T) with -100 on padding."""
    batch = drop_unneeded_mask(tokenizer.pad([features.inputs["input_ids"][r].tolist() for r in rows]))
    if "labels" in features.inputs:
        labels = pad_stack([features.inputs["labels"][r] for r in rows], IGNORE_INDEX)
        batch["labels"] = torch.from_numpy(labels)
    return batch


# -------------------------------------------------------------------------------------------- predictions
def entities(
    tags: Sequence[str], sentence: Sentence, scores: Sequence[float] | None = None
) -> list[dict[str, Any]]:
    """The entities of a sentence's BIO tags: {"entity", "text", "start", "end", "score"} with character offsets
    (end exclusive) into `sentence.text`; score is the mean of `scores` (one per word) over the entity's words."""
    found = []
    for kind, first, end in entity_spans(tags):
        start = sentence.starts[first]
        stop = sentence.starts[end - 1] + len(sentence.words[end - 1])
        score = float(np.mean(scores[first:end])) if scores is not None else 1.0
        found.append(
            {"entity": kind, "text": sentence.text[start:stop], "start": start, "end": stop, "score": score}
        )
    return found


def postprocess(
    outputs: list[dict[str, np.ndarray]],
    features: Features,
    examples: Sentences,
    data: TaskData,
    **options: Any,
) -> list[dict[str, Any]]:
    """One {"tags", "entities"} per sentence (module docstring): each word takes the most likely tag at its first
    sub-token; words cut off by max_length are tagged O. Takes no options (any given are ignored)."""
    names = data.labels
    if names is None:
        raise ValueError("token classification needs the label names (TaskData.labels) to name its tags")
    predictions: list[dict[str, Any] | None] = [None] * len(examples)
    for i, out in enumerate(outputs):
        sentence = examples[int(features.example[i])]
        logits = out["logits"][features.info[i]].astype(np.float64)  # (W, L)
        logits -= logits.max(axis=-1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=-1, keepdims=True)
        best = probs.argmax(axis=-1)  # (W,)
        missing = len(sentence.words) - len(best)
        tags = [names[j] for j in best] + [OUTSIDE] * missing
        scores = probs[np.arange(len(best)), best].tolist() + [1.0] * missing
        predictions[int(features.example[i])] = {"tags": tags, "entities": entities(tags, sentence, scores)}
    if any(p is None for p in predictions):
        raise ValueError("some sentences have no feature: postprocess needs the outputs of every feature")
    return predictions  # type: ignore[return-value]


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (micro-averaged over types, conlleval's chunks) and word accuracy of
    predicted BIO tag sequences against gold ones, as fractions; 0 where a ratio has nothing to count."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    correct = n_gold = n_pred = words = same = 0
    for i, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        gold_spans, pred_spans = set(entity_spans(g)), set(entity_spans(p))
        correct += len(gold_spans & pred_spans)
        n_gold += len(gold_spans)
        n_pred += len(pred_spans)
        words += len(g)
        same += sum(a == b for a, b in zip(g, p, strict=True))
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "accuracy": same / words if words else 0.0}


def score(predictions: list[dict[str, Any]], examples: Sentences, data: TaskData) -> dict[str, float]:
    """f1, precision, recall (entity level, conlleval) and accuracy (word level), as fractions."""
    if not examples.labelled:
        raise ValueError(f"{examples.source}: has no tags to evaluate against")
    return entity_scores([s.tags or () for s in examples], [p["tags"] for p in predictions])


def agreement(reference: list[dict[str, Any]], candidate: list[dict[str, Any]]) -> dict[str, float]:
    """How far two models' predictions agree: the share of words with the same tag, and the share of sentences
    whose entities (type and character span; scores aside) are all the same."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference predictions but {len(candidate)} candidate ones")
    words = same = same_entities = 0
    for ref, cand in zip(reference, candidate, strict=True):
        words += len(ref["tags"])
        same += sum(a == b for a, b in zip(ref["tags"], cand["tags"], strict=False))
        same_entities += _spans(ref) == _spans(cand)
    return {
        "tag_agreement": same / words if words else 1.0,
        "entity_agreement": same_entities / len(reference) if reference else 1.0,
    }


def _spans(prediction: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(e["entity"], e["start"], e["end"]) for e in prediction["entities"]]


def write_predictions(
    predictions: list[dict[str, Any]], examples: Sentences, data: TaskData, split: str, folder: Path
) -> Path:
    """`{split}_predictions.conll` in `folder`: one word per line as `WORD GOLD PREDICTED` when the sentences are
    labelled (the input conlleval reads), `WORD PREDICTED` otherwise; a blank line after each sentence."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}{PREDICTIONS_SUFFIX}"
    lines = []
    for sentence, prediction in zip(examples, predictions, strict=True):
        gold = sentence.tags
        for j, word in enumerate(sentence.words):
            lines.append(
                f"{word} {gold[j]} {prediction['tags'][j]}" if gold else f"{word} {prediction['tags'][j]}"
            )
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- evaluation
def evaluation_data(model: RobertaForTokenClassification, request: Any) -> TaskData:
    """The sentences `rtoolkit evaluate` scores `model` on: CoNLL-2003's dev (eng.testa) or test (eng.testb)
    file, or a custom labelled file; their tags must be among the model's labels."""
    labels = labels_from_config(model.config)
    known_from = f"the labels of {request.model}"
    if request.task is not None:
        path = conll_file(_task_folder(request.task, request.data_dir), request.split)
        split, task = request.split, request.task
    else:
        path, split, task = Path(request.validation_file), "dev", None
    _check_bio_labels(labels, request.model)
    examples = read_conll(path, labels=labels, known_from=known_from).first(request.max_samples)
    return TaskData(None, {split: examples}, {}, METRICS, "f1", labels=labels, task=task)


def _check_bio_labels(labels: Sequence[str], model: Any) -> None:
    bad = [name for name in labels if name != OUTSIDE and not _TAG.match(name)]
    if bad:
        raise DataError(
            f"{model} predicts labels {list(labels)}, which are not BIO tags (O, B-TYPE, I-TYPE): it is not a tagger "
            f"trained by this toolkit"
        )


__all__ = [
    "CUSTOM",
    "HEAD",
    "INPUT_RANK",
    "METRICS",
    "NAME",
    "OUTPUTS",
    "PRESETS",
    "TOKEN_OUTPUTS",
    "Sentence",
    "Sentences",
    "agreement",
    "build_model",
    "collate",
    "conll_file",
    "encode",
    "entities",
    "entity_scores",
    "entity_spans",
    "evaluation_data",
    "label_names",
    "labels_from_config",
    "load_data",
    "make_examples",
    "postprocess",
    "read_conll",
    "read_examples",
    "sample_examples",
    "score",
    "to_iob2",
    "write_predictions",
]
