"""Every artifact is run and compared with its reference before it is called done; the numbers go to the manifest.

References: the fp32 `model.onnx` is compared with the PyTorch model; every derived artifact (optimized, int8, fp16,
TensorRT) with `model.onnx` run in ONNX Runtime, which is itself within 1e-4 of PyTorch.

Inputs: real sentences (the `texts` given, the sentences of `eval_data`, or a few built-in ones) tokenized by the
folder's tokenizer, in padded batches of several shapes plus one unpadded single sentence. For fill-mask every fifth
word piece is replaced by `<mask>` and the top-k predictions are compared there.

Criteria (see TOLERANCES): fp32 max |diff| <= 1e-4 on attended positions and fill-mask top-5 agreement; fp16 and
int8 task-level agreement (top-1 for fill-mask and classification, Pearson r for regression, cosine similarity for
embeddings) and, when a labeled dev set is given, the accuracy drop in points.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rtoolkit.export.spec import (
    INPUT_NAMES,
    ONNX_FP32,
    Artifact,
    ExportError,
    Manifest,
    ValidationError,
)

from rtoolkit.config import RobertaConfig

logger = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]

# A few plain sentences used when no text is given (written for this purpose; any real English works).
DEFAULT_TEXTS = (
    "The museum opens at nine in the morning and closes at five.",
    "She poured the tea, sat down by the window and read the letter twice.",
    "A strong wind blew across the harbour all night.",
    "The film was slow at first, but the ending made up for it.",
    "Prices rose sharply after the storm damaged the harvest.",
    "He forgot his keys again.",
    "The committee will meet next week to discuss the new budget and the school building.",
    "Children played in the park while their parents talked on the benches.",
    "It was a dull, predictable story with no surprises.",
    "The river flooded the lower streets of the old town in early spring.",
    "Our train was late, so we missed the first half of the concert.",
    "What a wonderful, warm and funny performance!",
)

# Pass criteria per precision. Keys absent for a task are not checked. `min_agreement` applies to every agreement
# a task family reports (answers, chosen options, word tags: rtoolkit.tasks, `agreement`).
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_diff": 1e-4, "min_top5_agreement": 0.99, "min_agreement": 0.99},
    "fp16": {
        "min_top1_agreement": 0.98, "min_pearson": 0.999, "min_cosine": 0.999, "max_accuracy_drop": 1.0,
        "min_agreement": 0.95,
    },
    "int8": {
        "min_top1_agreement": 0.90, "min_pearson": 0.98, "min_cosine": 0.98, "max_accuracy_drop": 1.0,
        "min_agreement": 0.85,
    },
}  # fmt: skip
# The tasks of one output validated on sentences (logits, agreement, dev metric); every other task is validated
# through its family (rtoolkit.tasks): real examples encoded, decoded and compared as predictions. TensorRT engines
# are built for these tasks only.
SINGLE_OUTPUT_TASKS = ("fill-mask", "classification", "embedding")
MASK_EVERY = 5  # fill-mask validation masks every fifth word piece (at least one per sentence)
BATCH_SIZE = 8


# ------------------------------------------------------------------------------------------- labeled data
@dataclass
class LabeledData:
    """A labeled dev set: texts (and second texts for pair tasks) with integer labels or float scores."""

    path: Path
    texts: list[str]
    pairs: list[str] | None
    labels: np.ndarray  # (N,) int64 class ids, or float32 scores for regression


_TEXT_COLUMNS = (
    ("sentence1", "sentence2"),
    ("question", "sentence"),
    ("question1", "question2"),
    ("sentence",),
)
_LABEL_COLUMNS = ("label", "score", "gold_label")


def read_labeled_tsv(path: str | os.PathLike, config: RobertaConfig) -> LabeledData:
    """Read a GLUE-style TSV (header row; `sentence` or `sentence1`/`sentence2`; `label` or `score`).

    String labels map through config.label2id; integer labels must be below num_labels. Errors name the line.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"--eval-data {path}: file not found")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if len(rows) < 2:
        raise ExportError(f"{path}: expected a header row and at least one example")
    header = [h.strip() for h in rows[0]]
    text_cols = next((cols for cols in _TEXT_COLUMNS if all(c in header for c in cols)), None)
    label_col = next((c for c in _LABEL_COLUMNS if c in header), None)
    if text_cols is None or label_col is None:
        raise ExportError(
            f"{path}: line 1: expected columns 'sentence' (or 'sentence1' and 'sentence2') and 'label' "
            f"(or 'score'), found {header}"
        )
    regression = config.is_regression
    idx = [header.index(c) for c in text_cols]
    li = header.index(label_col)
    texts, pairs, labels = [], [], []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(*idx, li):
            raise ExportError(
                f"{path}: line {line_no}: expected {len(header)} tab-separated fields, got {len(row)}"
            )
        raw = row[li].strip()
        if regression:
            try:
                labels.append(float(raw))
            except ValueError:
                raise ExportError(f"{path}: line {line_no}: score {raw!r} is not a number") from None
        elif config.label2id and raw in config.label2id:
            labels.append(config.label2id[raw])
        elif raw.lstrip("-").isdigit() and 0 <= int(raw) < config.num_labels:
            labels.append(int(raw))
        else:
            known = sorted(config.label2id) if config.label2id else list(range(config.num_labels))
            raise ExportError(
                f"{path}: line {line_no}: label {raw!r} is not one of the model's labels {known}"
            )
        texts.append(row[idx[0]])
        if len(idx) > 1:
            pairs.append(row[idx[1]])
    dtype = np.float32 if regression else np.int64
    return LabeledData(path, texts, pairs if len(idx) > 1 else None, np.asarray(labels, dtype=dtype))


# ------------------------------------------------------------------------------------------------ inputs
@dataclass
class ValidationInputs:
    """Batches of feeds, and for fill-mask the (B, T) bool positions where `<mask>` was put."""

    batches: list[Feeds]
    masked: list[np.ndarray] | None
    from_text: bool


def build_inputs(
    export_dir: Path,
    task: str,
    *,
    max_seq_len: int,
    texts: Sequence[str] | None = None,
    pairs: Sequence[str] | None = None,
    batch_size: int = BATCH_SIZE,
) -> ValidationInputs:
    """Tokenize the texts with the folder's tokenizer into padded batches (random ids without a tokenizer)."""
    config = RobertaConfig.from_pretrained(export_dir)
    pad = config.pad_token_id
    has_tokenizer = (export_dir / "tokenizer.json").is_file() or (export_dir / "vocab.json").is_file()
    if has_tokenizer:
        from rtoolkit.tokenizer import Tokenizer

        tok = Tokenizer.from_pretrained(export_dir)
        texts = list(texts) if texts else list(DEFAULT_TEXTS)
        ids = tok.encode_batch(texts, list(pairs) if pairs else None, max_length=max_seq_len)
        mask_id, specials = tok.mask_token_id, set(tok.special_ids)
    else:
        rng = np.random.default_rng(0)
        lengths = rng.integers(4, min(max_seq_len, 40) + 1, size=12)
        low = 4
        ids = [
            [
                config.bos_token_id,
                *rng.integers(low, config.vocab_size - 1, n - 2).tolist(),
                config.eos_token_id,
            ]
            for n in lengths
        ]
        mask_id, specials = config.vocab_size - 1, {0, 1, 2, 3, config.vocab_size - 1}
    groups = [ids[:1]] + [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    batches, masked = [], []
    for group in groups:
        width = max(len(s) for s in group)
        input_ids = np.full((len(group), width), pad, dtype=np.int64)
        attention = np.zeros((len(group), width), dtype=np.int64)
        where = np.zeros((len(group), width), dtype=bool)
        for row, seq in enumerate(group):
            seq = list(seq)
            if task == "fill-mask":
                candidates = [p for p, t in enumerate(seq) if t not in specials]
                chosen = candidates[MASK_EVERY // 2 :: MASK_EVERY] or candidates[:1]
                for p in chosen:
                    seq[p] = mask_id
                    where[row, p] = True
            input_ids[row, : len(seq)] = seq
            attention[row, : len(seq)] = 1
        batches.append({"input_ids": input_ids, "attention_mask": attention})
        masked.append(where)
    return ValidationInputs(batches, masked if task == "fill-mask" else None, has_tokenizer)


# ------------------------------------------------------------------------------------------------ runners
def onnx_session(path: str | os.PathLike, *, device: str = "cpu", threads: int | None = None):
    """An ONNX Runtime session on `path`, built by the same function the Predictor uses (rtoolkit.runtime.ort)."""
    from rtoolkit.runtime.ort import RuntimeUnavailable, create_session

    try:
        return create_session(path, device=device, threads=threads)
    except RuntimeUnavailable as exc:
        raise ExportError(str(exc)) from None


def default_device() -> str:
    """Where a CUDA-bound artifact (fp16) is validated: "cuda" when a GPU and ONNX Runtime's CUDA provider are both
    there, else "cpu" (and the record says so)."""
    try:
        import onnxruntime as ort
        import torch
    except ImportError:
        return "cpu"
    cuda_ready = torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()
    return "cuda" if cuda_ready else "cpu"


def session_runner(session, *, device: str = "cpu") -> Callable[[Feeds], np.ndarray]:
    """The graph's first output for a batch of feeds, run as the Predictor runs it (IO binding on CUDA)."""
    from rtoolkit.runtime.ort import OrtRunner

    runner = OrtRunner(session, device=device)
    if sorted(runner.input_names) != sorted(INPUT_NAMES):
        raise ExportError(f"the ONNX model's inputs are {runner.input_names}; expected {list(INPUT_NAMES)}")
    first = runner.output_names[0]
    return lambda feeds: runner.run(feeds)[first]


def torch_runner(module) -> Callable[[Feeds], np.ndarray]:
    import torch

    def run(feeds: Feeds) -> np.ndarray:
        with torch.no_grad():
            out = module(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"]))
        return out.float().numpy()

    return run


# ------------------------------------------------------------------------------------------------ metrics
def _topk(x: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-x, axis=-1, kind="stable")[..., :k]


def compare(
    task: str,
    reference: list[np.ndarray],
    candidate: list[np.ndarray],
    inputs: ValidationInputs,
    *,
    regression: bool = False,
) -> dict[str, float]:
    """Numbers comparing two runs over the same batches (attended positions only)."""
    diffs, ref_rows, cand_rows = [], [], []
    for i, (ref, cand) in enumerate(zip(reference, candidate, strict=True)):
        if ref.shape != cand.shape:
            raise ValidationError(f"output shape {cand.shape} differs from the reference {ref.shape}")
        if task == "classification":
            rows_ref, rows_cand = ref, cand  # (B, C)
        elif task == "fill-mask":
            where = inputs.masked[i]
            rows_ref, rows_cand = ref[where], cand[where]  # (N, V) at masked positions
            attended = inputs.batches[i]["attention_mask"].astype(bool)
            diffs.append(np.abs(ref[attended] - cand[attended]).ravel())
        else:
            attended = inputs.batches[i]["attention_mask"].astype(bool)
            rows_ref, rows_cand = ref[attended], cand[attended]  # (N, H)
        if task == "classification":
            diffs.append(np.abs(ref - cand).ravel())
        elif task == "embedding":
            diffs.append(np.abs(rows_ref - rows_cand).ravel())
        ref_rows.append(rows_ref)
        cand_rows.append(rows_cand)
    diff = np.concatenate(diffs)
    ref_all, cand_all = np.concatenate(ref_rows), np.concatenate(cand_rows)
    numbers: dict[str, float] = {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "nan_count": int(np.isnan(cand_all).sum()),
        "compared_rows": int(ref_all.shape[0]),
    }
    if task == "embedding":
        num = (ref_all * cand_all).sum(-1)
        den = np.linalg.norm(ref_all, axis=-1) * np.linalg.norm(cand_all, axis=-1) + 1e-12
        cosine = num / den
        numbers["cosine_min"] = float(cosine.min())
        numbers["cosine_mean"] = float(cosine.mean())
    elif regression:
        numbers["pearson"] = _pearson(ref_all[:, 0], cand_all[:, 0])
    else:
        numbers["top1_agreement"] = float((ref_all.argmax(-1) == cand_all.argmax(-1)).mean())
        if task == "fill-mask":
            k = min(5, ref_all.shape[-1])
            same = [set(a) == set(b) for a, b in zip(_topk(ref_all, k), _topk(cand_all, k), strict=True)]
            numbers["top5_agreement"] = float(np.mean(same))
    return numbers


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float(np.allclose(a, b))
    return float(np.corrcoef(a, b)[0, 1])


def task_metric(logits: np.ndarray, labels: np.ndarray, *, regression: bool) -> float:
    """Accuracy in percent for classification; Pearson r x 100 for regression (GLUE's STS-B metric)."""
    if regression:
        return 100.0 * _pearson(logits[:, 0], labels)
    return 100.0 * float((logits.argmax(-1) == labels).mean())


def check(numbers: dict[str, float], tolerances: dict[str, float]) -> list[str]:
    """The criteria `numbers` fails, as readable strings (empty when it passes)."""
    failures = []
    if numbers.get("nan_count"):
        failures.append(f"{numbers['nan_count']} NaN outputs")
    t = tolerances
    if t.get("max_abs_diff") is not None and numbers["max_abs_diff"] > t["max_abs_diff"]:
        failures.append(f"max |diff| {numbers['max_abs_diff']:.3g} > {t['max_abs_diff']:.3g}")
    for key, limit in (
        ("top5_agreement", t.get("min_top5_agreement")),
        ("top1_agreement", t.get("min_top1_agreement")),
        ("pearson", t.get("min_pearson")),
        ("cosine_min", t.get("min_cosine")),
    ):
        if limit is not None and key in numbers and numbers[key] < limit:
            failures.append(f"{key.replace('_', ' ')} {numbers[key]:.4f} < {limit}")
    if t.get("min_agreement") is not None:
        for key, value in numbers.items():
            if (
                key.endswith("_agreement")
                and key not in ("top1_agreement", "top5_agreement")
                and value < t["min_agreement"]
            ):
                failures.append(f"{key.replace('_', ' ')} {value:.4f} < {t['min_agreement']}")
    drop = numbers.get("accuracy_drop")
    if drop is not None and "max_accuracy_drop" in t and drop > t["max_accuracy_drop"]:
        failures.append(f"dev metric drop {drop:.2f} points > {t['max_accuracy_drop']}")
    return failures


# ---------------------------------------------------------------------------------------------- validate
def validate_outputs(
    export_dir: str | os.PathLike,
    file: str,
    run: Callable[[Feeds], np.ndarray],
    *,
    reference_run: Callable[[Feeds], np.ndarray] | None = None,
    reference_name: str | None = None,
    texts: Sequence[str] | None = None,
    eval_data: str | os.PathLike | LabeledData | None = None,
    tolerances: dict[str, float] | None = None,
    max_batch: int | None = None,
    max_seq_len: int | None = None,
    runtime: str | None = None,
) -> dict[str, Any]:
    """Compare `run` (the artifact `file`) with `reference_run`, record the numbers, raise on failure.

    `runtime` names what ran the artifact (e.g. "onnxruntime CUDAExecutionProvider"); it goes into the record.

    `max_batch` / `max_seq_len` bound the validation batches (a TensorRT engine's profile); by default the
    manifest's max_seq_len and batches of 8.

    Default reference: `model.onnx` in ONNX Runtime on CPU. The record is stored in the artifact's manifest entry
    (`validation`, `passed`) before ValidationError is raised, so a failed artifact is never mistaken for a good one.
    """
    folder = Path(export_dir)
    manifest = Manifest.load(folder)
    artifact = manifest.artifact(file)
    if artifact is None:
        raise ExportError(f"{folder / file}: not listed in {folder}/export_manifest.json")
    config = RobertaConfig.from_pretrained(folder)
    regression = manifest.task == "classification" and config.is_regression
    labeled = (
        eval_data
        if isinstance(eval_data, LabeledData) or eval_data is None
        else read_labeled_tsv(eval_data, config)
    )
    if labeled is not None and manifest.task != "classification":
        # fill-mask and embedding have no labels to score: the sentences still serve as validation text.
        texts = texts or labeled.texts
    pairs = None
    if labeled is not None and manifest.task == "classification":
        texts, pairs = labeled.texts, labeled.pairs
    inputs = build_inputs(
        folder,
        manifest.task,
        max_seq_len=min(max_seq_len or manifest.max_seq_len, manifest.max_seq_len),
        texts=texts,
        pairs=pairs,
        batch_size=min(BATCH_SIZE, max_batch or BATCH_SIZE),
    )
    if reference_run is None:
        reference_run = session_runner(onnx_session(folder / ONNX_FP32))
        reference_name = ONNX_FP32
    reference = [reference_run(b) for b in inputs.batches]
    candidate = [run(b) for b in inputs.batches]
    numbers = compare(manifest.task, reference, candidate, inputs, regression=regression)
    if labeled is not None and manifest.task == "classification":
        # The first batch repeats sentence 0 unpadded; score the rest, which cover the dev set once, in order.
        ref_logits, cand_logits = np.concatenate(reference[1:]), np.concatenate(candidate[1:])
        numbers["eval_data"] = str(labeled.path)
        numbers["eval_examples"] = len(labeled.labels)
        numbers["metric"] = "pearson" if regression else "accuracy"
        numbers["reference_score"] = task_metric(ref_logits, labeled.labels, regression=regression)
        numbers["score"] = task_metric(cand_logits, labeled.labels, regression=regression)
        numbers["accuracy_drop"] = numbers["reference_score"] - numbers["score"]
    record = {
        "reference": reference_name or "pytorch",
        "runtime": runtime,
        "shapes": [list(b["input_ids"].shape) for b in inputs.batches],
        "inputs": "text" if inputs.from_text else "random ids (no tokenizer in the folder)",
        **numbers,
    }
    return _record(folder, file, artifact, record, tolerances)


def _record(
    folder: Path, file: str, artifact: Artifact, record: dict[str, Any], tolerances: dict[str, float] | None
) -> dict[str, Any]:
    """Check the numbers against the artifact precision's criteria, store the record in the manifest, raise
    ValidationError on failure."""
    limits = dict(TOLERANCES[artifact.precision])
    limits.update(tolerances or {})
    failures = check(record, limits)
    record = {**record, "criteria": limits, "failures": failures}
    artifact = Artifact.from_dict({**artifact.to_dict(), "validation": record, "passed": not failures})
    manifest = Manifest.load(folder)  # re-read: keep any record written meanwhile
    manifest.put(artifact)
    manifest.save(folder)
    summary = ", ".join(
        f"{k} {v:.4g}" for k, v in record.items() if k in _SUMMARY_KEYS or k.endswith("_agreement")
    )
    if failures:
        raise ValidationError(
            f"validation failed for {file} against {record['reference']}: {'; '.join(failures)} ({summary})",
            record,
        )
    logger.info("validated %s against %s: %s", file, record["reference"], summary)
    return record


_SUMMARY_KEYS = (
    "max_abs_diff",
    "top1_agreement",
    "top5_agreement",
    "pearson",
    "cosine_min",
    "reference_score",
    "score",
    "accuracy_drop",
)


def validate_onnx(
    export_dir: str | os.PathLike,
    file: str = ONNX_FP32,
    *,
    reference_model=None,
    texts: Sequence[str] | None = None,
    eval_data: str | os.PathLike | LabeledData | None = None,
    device: str = "cpu",
    tolerances: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Run the ONNX artifact `file` of an export folder in ONNX Runtime and compare it with its reference.

    `model.onnx` is compared with the PyTorch model (`reference_model`, a module taking (input_ids,
    attention_mask) and returning the exported tensor; loaded from the manifest's source folder when not given);
    any other file with `model.onnx`. It runs on `device` through the Predictor's own session builder, and the
    record names the provider. Returns the validation record; raises ValidationError when it fails.
    """
    folder = Path(export_dir)
    if not (folder / file).is_file():
        raise ExportError(f"{folder / file}: file not found")
    session = onnx_session(folder / file, device=device)
    task = Manifest.load(folder).task
    if task not in SINGLE_OUTPUT_TASKS:
        return validate_family(
            folder, file, session, device=device, reference_model=reference_model if file == ONNX_FP32 else None,
            eval_data=eval_data, tolerances=tolerances,
        )  # fmt: skip
    run = session_runner(session, device=device)
    reference_run, reference_name = None, None
    if file == ONNX_FP32:
        if reference_model is None:
            from rtoolkit.export.onnx import OnnxWrapper, load_for_task

            manifest = Manifest.load(folder)
            model, task = load_for_task(manifest.source["path"], manifest.task)
            reference_model = OnnxWrapper(model, task).eval()
        reference_run, reference_name = torch_runner(reference_model), "pytorch"
    return validate_outputs(
        folder,
        file,
        run,
        reference_run=reference_run,
        reference_name=reference_name,
        texts=texts,
        eval_data=eval_data,
        tolerances=tolerances,
        runtime=f"onnxruntime {session.get_providers()[0]}",
    )


def validate_family(
    folder: Path,
    file: str,
    session,
    *,
    device: str = "cpu",
    reference_model=None,
    eval_data: str | os.PathLike | LabeledData | None = None,
    tolerances: dict[str, float] | None = None,
    limit: int = 48,
) -> dict[str, Any]:
    """Validate a graph of a task family (question answering, multiple choice, token classification) on real
    examples: `eval_data` (a file in the family's format; its first `limit` examples) or the family's built-in
    ones. Both runs are decoded the family's way and compared as predictions (the family's `agreement`), besides
    the outputs' max |diff|. The reference is PyTorch for model.onnx, else model.onnx in ONNX Runtime."""
    import torch

    from rtoolkit import tasks
    from rtoolkit.runtime.ort import OrtRunner
    from rtoolkit.tasks.common import TaskData, length_order, split_rows
    from rtoolkit.tokenizer import Tokenizer

    manifest = Manifest.load(folder)
    artifact = manifest.artifact(file)
    if artifact is None:
        raise ExportError(f"{folder / file}: not listed in {folder}/export_manifest.json")
    fam = tasks.family(manifest.task)
    config = RobertaConfig.from_pretrained(folder)
    tokenizer = Tokenizer.from_pretrained(folder)
    if eval_data is not None and not isinstance(eval_data, LabeledData):
        examples = fam.read_examples(Path(eval_data), limit=limit)
    else:
        examples = fam.sample_examples()
    features = fam.encode(
        tokenizer, examples, max_length=min(manifest.max_seq_len, config.max_tokens), stride=None
    )
    candidate_runner = OrtRunner(session, device=device)
    if reference_model is not None:
        reference_name = "pytorch"

        def reference(feeds: Feeds) -> dict[str, np.ndarray]:
            with torch.no_grad():
                out = reference_model(
                    torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
                )
            values = out if isinstance(out, tuple) else (out,)
            return {n: v.float().numpy() for n, v in zip(fam.OUTPUTS, values, strict=True)}
    else:
        reference_name = ONNX_FP32
        reference = OrtRunner(onnx_session(folder / ONNX_FP32)).run
    order = length_order(features)
    groups = [order[:1]] + [order[i : i + BATCH_SIZE] for i in range(0, len(order), BATCH_SIZE)]
    ref_rows: list[Any] = [None] * len(features)
    cand_rows: list[Any] = [None] * len(features)
    diffs, shapes = [], []
    for rows in groups:
        batch = fam.collate(tokenizer, features, rows)
        ids = batch["input_ids"].numpy()
        mask = batch["attention_mask"].numpy() if "attention_mask" in batch else np.ones_like(ids)
        feeds = {"input_ids": ids, "attention_mask": mask}
        shapes.append(list(ids.shape))
        ref, cand = reference(feeds), candidate_runner.run(feeds)
        for name in fam.OUTPUTS:
            if ref[name].shape != cand[name].shape:
                raise ValidationError(
                    f"output {name} has shape {cand[name].shape}, the reference {ref[name].shape}"
                )
            diffs.append(np.abs(ref[name] - cand[name]).ravel())
        lengths = features.lengths[rows]
        for row, r, c in zip(
            rows,
            split_rows(ref, lengths, fam.TOKEN_OUTPUTS),
            split_rows(cand, lengths, fam.TOKEN_OUTPUTS),
            strict=True,
        ):
            ref_rows[row], cand_rows[row] = r, c
    data = TaskData(None, {}, {}, (), "", labels=fam.labels_from_config(config))
    diff = np.concatenate(diffs)
    record = {
        "reference": reference_name,
        "runtime": f"onnxruntime {session.get_providers()[0]}",
        "shapes": shapes,
        "inputs": str(eval_data) if eval_data is not None else f"{fam.NAME} built-in examples",
        "examples": len(examples) if hasattr(examples, "__len__") else None,
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "nan_count": int(sum(int(np.isnan(c[n]).sum()) for c in cand_rows for n in fam.OUTPUTS)),
        "compared_rows": len(features),
        **fam.agreement(
            fam.postprocess(ref_rows, features, examples, data),
            fam.postprocess(cand_rows, features, examples, data),
        ),
    }
    return _record(folder, file, artifact, record, tolerances)
