"""PyTorch checkpoint -> fp32 ONNX (`model.onnx`), with the folder's config, tokenizer and manifest beside it.

Exporter: `torch.onnx.export(..., dynamo=False)` with `dynamic_axes`, opset 17 by default. This path is pinned on
purpose: with torch 2.13 and onnxruntime 1.32 its graph of `F.scaled_dot_product_attention` is what ONNX Runtime's
Attention fusion matches (the dynamo exporter's graph of the same model gets no Attention fusion). The fusion test in
tests/export/test_optimize.py fails loudly if a version change breaks that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from rtoolkit.export.spec import (
    HEAD_PREFIXES,
    INPUT_NAMES,
    ONNX_FP32,
    TASKS,
    Artifact,
    ExportError,
    Manifest,
    io_spec,
    source_sha256,
    tool_versions,
)
from torch import nn

from rtoolkit.checkpoint import CheckpointError, load_state_dict, load_weights, resolve_model_dir
from rtoolkit.config import CONFIG_NAME, RobertaConfig
from rtoolkit.model import RobertaModel
from rtoolkit.runtime.artifacts import TASK_OUTPUTS, folder_task, input_axes, output_names
from rtoolkit.tasks import head_class
from rtoolkit.tokenizer import TOKENIZER_FILES

logger = logging.getLogger(__name__)

MIN_OPSET = 17  # LayerNormalization is one node from opset 17 on (ORT fusion, TensorRT fp16)
MAX_OPSET = 20  # the highest opset the pinned TorchScript exporter writes
TWO_GB = 2**31
DEFAULT_MAX_BATCH = 32


def require_onnx() -> None:
    """Raise ImportError (one line, naming the install command) when onnx or onnxruntime is missing."""
    missing = []
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(
            f"exporting needs {' and '.join(missing)}: pip install 'rtoolkit[onnx]' (or 'rtoolkit[gpu]')"
        )


# --------------------------------------------------------------------------------------------- the model
class OnnxWrapper(nn.Module):
    """The graph that is exported: (input_ids, attention_mask) -> the task's outputs (TASK_OUTPUTS), one tensor or a
    tuple in that order.

    fill-mask: logits (B, T, V); classification: logits (B, num_labels); embedding: last_hidden_state (B, T, H);
    question-answering: start_logits, end_logits (B, T); multiple-choice: logits (B, C) from (B, C, T) inputs;
    token-classification: logits (B, T, num_labels).
    """

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model = model
        self.task = task
        self.names = output_names(task)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | tuple:
        out = self.model(input_ids, attention_mask)
        values = tuple(getattr(out, name) for name in self.names)
        return values[0] if len(values) == 1 else values


def detect_task(model_dir: str | os.PathLike, *, state_keys: Sequence[str] | None = None) -> str:
    """The task a model folder was saved for (rtoolkit.runtime.artifacts.folder_task)."""
    return folder_task(model_dir, state_keys=list(state_keys) if state_keys is not None else None)


def load_for_task(model_dir: str | os.PathLike, task: str = "auto") -> tuple[nn.Module, str]:
    """Load a model folder as the torch model of `task` (in eval mode) and return it with the resolved task.

    Raises ExportError when the folder is not a model folder, the task is unknown, or the checkpoint has no
    weights for the task's head (exporting a freshly initialised head would give meaningless outputs).
    """
    if task != "auto" and task not in TASKS:
        raise ExportError(f"unknown task {task!r}; choose auto or one of {', '.join(TASKS)}")
    try:
        folder = resolve_model_dir(model_dir)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    if not (folder / CONFIG_NAME).is_file():
        raise ExportError(f"{folder} is not a model folder: {CONFIG_NAME} is missing")
    config = RobertaConfig.from_pretrained(folder)
    state = load_state_dict(folder)
    if task == "auto":
        task = detect_task(folder, state_keys=list(state))
    prefix = HEAD_PREFIXES[task]
    if prefix is not None:
        normalized = {k[len("roberta.") :] if k.startswith("roberta.") else k for k in state}
        if not any(k.startswith(prefix) for k in normalized):
            have = sorted({k.split(".")[0] for k in normalized if k.startswith(("lm_head.", "classifier."))})
            raise ExportError(
                f"{folder}: the checkpoint has no {task} head (no '{prefix}*' weights"
                + (f"; it has {', '.join(h + '.*' for h in have)}" if have else "")
                + "). Export it with --task embedding, or with the task it was trained for"
            )
    if task == "embedding":
        model: nn.Module = RobertaModel(config, add_pooling_layer=False)
    else:
        model = head_class(task)(config)
    load_weights(model, state, source=str(folder))
    return model.eval(), task


# ---------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def staging_dir(out_dir: Path) -> Iterator[Path]:
    """A temporary folder inside `out_dir` (same file system, so moving out of it is a rename); always removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-tmp-", dir=out_dir))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(staged: Path, out_dir: Path, names: Sequence[str]) -> None:
    """Move finished files from the staging folder into `out_dir`, each in one rename."""
    for name in names:
        os.replace(staged / name, out_dir / name)


def save_onnx(model, path: Path, *, external_data: bool | None = None) -> list[str]:
    """Save an onnx.ModelProto; weights go to `<name>.data` when asked or when the model is over 2 GB.

    Returns the file names written (the model and, with external data, its data file).
    """
    import onnx

    if external_data is None:
        external_data = _initializer_bytes(model) > TWO_GB - (64 << 20)  # leave room for the graph itself
    if not external_data:
        onnx.save_model(model, str(path))
        return [path.name]
    data_name = path.name + ".data"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=1024,
    )
    return [path.name, data_name]


def _initializer_bytes(model) -> int:
    # Counted by hand: ModelProto.ByteSize() itself fails on protos over 2 GB.
    return sum(len(init.raw_data) for init in model.graph.initializer)


def copy_model_files(model_dir: Path, out_dir: Path) -> list[str]:
    """Copy config.json and the tokenizer files so the export folder is self-contained."""
    copied = []
    for name in (CONFIG_NAME, *TOKENIZER_FILES):
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)
            copied.append(name)
    if not any(n in copied for n in ("tokenizer.json", "vocab.json")):
        logger.warning(
            "%s has no tokenizer files: the export folder holds the model only, and validation uses "
            "random token ids instead of text",
            model_dir,
        )
    return copied


def check_limits(config: RobertaConfig, *, max_batch: int, max_seq_len: int | None) -> tuple[int, int]:
    """Resolve and check the shape limits recorded in the manifest (and used for TensorRT profiles)."""
    if not isinstance(max_batch, int) or max_batch < 1:
        raise ExportError(f"--max-batch must be a positive integer, got {max_batch!r}")
    limit = config.max_tokens
    if max_seq_len is None:
        max_seq_len = limit
    if not isinstance(max_seq_len, int) or max_seq_len < 4:
        raise ExportError(f"--max-seq-len must be an integer of at least 4, got {max_seq_len!r}")
    if max_seq_len > limit:
        raise ExportError(
            f"--max-seq-len {max_seq_len} is beyond the position table: this model takes at most {limit} "
            f"tokens (max_position_embeddings {config.max_position_embeddings}, <s> and </s> included)"
        )
    return max_batch, max_seq_len


# ---------------------------------------------------------------------------------------------- export
def export_onnx(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    task: str = "auto",
    opset: int = 17,
    validate: bool = True,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_seq_len: int | None = None,
    external_data: bool | None = None,
    texts: Sequence[str] | None = None,
    eval_data: str | os.PathLike | None = None,
) -> Path:
    """Export a model folder to `out_dir/model.onnx` (fp32) and start the folder's manifest.

    Inputs `input_ids` and `attention_mask`, int64 (batch, sequence), both axes dynamic; one output, `logits`
    or `last_hidden_state` (see OnnxWrapper). The file passes `onnx.checker`; weights go to `model.onnx.data`
    when the model is over 2 GB (or `external_data=True`). config.json and the tokenizer files are copied beside it.

    With `validate` (the default) ONNX Runtime is compared with the PyTorch model (see `validate_onnx`); a failure
    raises ValidationError with the numbers, after recording them in the manifest.
    Returns the path of model.onnx.
    """
    require_onnx()
    import onnx

    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"--opset must be between {MIN_OPSET} (one LayerNormalization node) and {MAX_OPSET}, got {opset!r}"
        )
    model, task = load_for_task(model_dir, task)
    folder = resolve_model_dir(model_dir)
    config: RobertaConfig = model.config
    max_batch, max_seq_len = check_limits(config, max_batch=max_batch, max_seq_len=max_seq_len)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; expected a folder")
    if out.resolve() == folder.resolve():
        raise ExportError(f"--out {out} is the model folder itself; choose another folder")

    wrapper = OnnxWrapper(model, task).eval()
    in_axes = input_axes(task)
    sample_ids = torch.full((2,) * (len(in_axes) - 1) + (8,), 5, dtype=torch.long)  # (2, 8) or (2, 2, 8)
    sample_ids[..., 0], sample_ids[..., -1] = config.bos_token_id, config.eos_token_id
    sample_mask = torch.ones_like(sample_ids)
    dynamic_axes = {name: dict(enumerate(in_axes)) for name in INPUT_NAMES}
    for name, axes in TASK_OUTPUTS[task].items():
        dynamic_axes[name] = {i: a for i, a in enumerate(axes) if a != "features"}

    with staging_dir(out) as tmp:
        raw = tmp / "raw.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            # The pinned TorchScript exporter announces its own deprecation on every call; the choice is deliberate.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                (sample_ids, sample_mask),
                str(raw),
                dynamo=False,
                input_names=list(INPUT_NAMES),
                output_names=list(output_names(task)),
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
            )
        proto = onnx.load(str(raw))
        # producer_name stays "pytorch": onnxruntime's optimizer checks it for model_type="bert".
        onnx.helper.set_model_props(proto, {"rtoolkit.task": task, "rtoolkit.source": folder.name})
        written = save_onnx(proto, tmp / ONNX_FP32, external_data=external_data)
        del proto
        try:
            onnx.checker.check_model(str(tmp / ONNX_FP32), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"the exported graph fails onnx.checker: {str(exc).splitlines()[0]}") from None
        # A fresh export replaces every artifact made from an older one.
        for stale in out.glob("model*.onnx*"):
            stale.unlink()
        publish(tmp, out, written)

    copy_model_files(folder, out)
    inputs, outputs = io_spec(
        task, hidden_size=config.hidden_size, vocab_size=config.vocab_size, num_labels=config.num_labels
    )
    manifest = Manifest(
        task=task,
        source={"path": str(model_dir), "sha256": source_sha256(folder)},
        opset=opset,
        max_batch=max_batch,
        max_seq_len=max_seq_len,
        inputs=inputs,
        outputs=outputs,
        tool_versions=tool_versions(),
    )
    artifact = Artifact(
        file=ONNX_FP32,
        format="onnx",
        precision="fp32",
        details={"exporter": "torch.onnx.export(dynamo=False)", "external_data": len(written) > 1},
    )
    manifest.put(artifact)
    manifest.save(out)
    logger.info("exported %s (%s, opset %d) to %s", folder, task, opset, out / ONNX_FP32)
    if validate:
        from rtoolkit.export.validate import validate_onnx

        validate_onnx(out, ONNX_FP32, reference_model=wrapper, texts=texts, eval_data=eval_data)
    return out / ONNX_FP32
