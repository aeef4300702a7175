"""`export(...)`: what `rtoolkit export` does, as one Python call. Each step is also its own function."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from rtoolkit.export.onnx import DEFAULT_MAX_BATCH, export_onnx, require_onnx
from rtoolkit.export.spec import ENGINES_DIR, MANIFEST_NAME, QUANTIZE_MODES, ExportError, Manifest

from rtoolkit.checkpoint import recover_directory, replace_directory, resolve_model_dir, umask_permissions
from rtoolkit.config import CONFIG_NAME
from rtoolkit.tokenizer import TOKENIZER_FILES

logger = logging.getLogger(__name__)


def export(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    task: str = "auto",
    opset: int = 17,
    optimize: bool = False,
    quantize: str | None = None,
    per_channel: bool = False,
    exclude: Sequence[str] = (),
    fp16: bool = False,
    trt: bool = False,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_seq_len: int | None = None,
    validate: bool = True,
    eval_data: str | os.PathLike | None = None,
    texts: Sequence[str] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Manifest:
    """Export a model folder to `out_dir` and run the requested steps, validating each (unless `validate=False`).

    Steps, in order: fp32 ONNX; `optimize` (ONNX Runtime fusions); `quantize="int8"` (dynamic int8, from the
    optimized graph when there is one; `per_channel`, `exclude` node groups "embeddings" / "head"); `fp16`;
    `trt` (a TensorRT fp16 engine; on TensorRT >= 11 built from model.fp16.onnx, made when missing). `eval_data`: a labeled GLUE-style
    TSV whose dev metric is compared between precisions. `on_step(name)` is called before each step (progress).
    Requirements (onnxruntime; tensorrt and a GPU for `trt`) are checked before any work starts.

    Nothing of an earlier export is lost to a failing one: every step writes and validates in a staging folder
    beside `out_dir`, and only when all passed does that folder take `out_dir`'s place, in one step (the TensorRT
    engine cache is carried over). A failed validation raises ValidationError with its numbers, and `out_dir` is as
    it was. `out_dir` must be new, empty, or an earlier export folder (other files in it are refused, not deleted).
    Returns the manifest.
    """
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ExportError(
            f"--quantize {quantize!r} is not supported; choose one of {', '.join(QUANTIZE_MODES)}"
        )
    if (per_channel or exclude) and quantize is None:
        raise ExportError("--per-channel and --exclude apply to --quantize int8; add --quantize int8")
    require_onnx()
    if trt:
        from rtoolkit.export.onnx import detect_task
        from rtoolkit.export.tensorrt import require_tensorrt
        from rtoolkit.export.validate import SINGLE_OUTPUT_TASKS

        resolved = task if task != "auto" else detect_task(resolve_model_dir(model_dir))
        if resolved not in SINGLE_OUTPUT_TASKS:
            raise ExportError(
                f"--trt builds engines for {', '.join(SINGLE_OUTPUT_TASKS)} exports; a {resolved} export is served "
                f"with ONNX Runtime (--optimize, --fp16 for GPUs)"
            )
        require_tensorrt()
    if eval_data is not None and not Path(eval_data).is_file():
        raise ExportError(f"--eval-data {eval_data}: file not found")
    if eval_data is not None:
        from rtoolkit.export.onnx import detect_task

        resolved = task if task != "auto" else detect_task(resolve_model_dir(model_dir))
        if resolved in ("fill-mask", "embedding"):
            raise ExportError(
                f"--eval-data gives a finetuned model's own data (a classifier's dev TSV, SQuAD JSON, RACE or CoNLL "
                f"files); a {resolved} export has no labels to score (validation already runs on real sentences)"
            )
    step = on_step or (lambda name: None)
    common = {"validate": validate, "texts": texts, "eval_data": eval_data}
    out = Path(out_dir)
    check_out_dir(out, model_dir)
    recover_directory(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        if (out / ENGINES_DIR).is_dir():  # keep the TensorRT engine and timing caches
            shutil.copytree(out / ENGINES_DIR, stage / ENGINES_DIR, copy_function=_link_or_copy)
        step("onnx")
        export_onnx(
            model_dir, stage, task=task, opset=opset, max_batch=max_batch, max_seq_len=max_seq_len, **common
        )
        _run_steps(stage, step, common, optimize, quantize, per_channel, exclude, fp16, trt)
        umask_permissions(stage)
        replace_directory(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Manifest.load(out)


def check_out_dir(out: Path, model_dir: str | os.PathLike) -> None:
    """`--out` may be new, empty, or an earlier export folder, whose files an export replaces. Anything else in it
    is the user's and is refused, not deleted."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; expected a folder")
    if out.is_dir() and out.resolve() == resolve_model_dir(model_dir).resolve():
        raise ExportError(f"--out {out} is the model folder itself; choose another folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    ours = {MANIFEST_NAME, CONFIG_NAME, ENGINES_DIR, *TOKENIZER_FILES}
    others = sorted(
        p.name
        for p in out.iterdir()
        if p.name not in ours and not p.name.startswith("model") and p.name[0] != "."
    )
    if not (out / MANIFEST_NAME).is_file() or others:
        what = f"it holds {', '.join(others[:5])}" if others else f"it has no {MANIFEST_NAME}"
        raise ExportError(
            f"--out {out} is not an export folder ({what}); an export replaces its folder, so choose a new or "
            f"empty folder"
        )


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _run_steps(folder: Path, step, common, optimize, quantize, per_channel, exclude, fp16, trt) -> None:
    """The steps after the fp32 graph, each written and validated in `folder` (the staging folder)."""
    if optimize:
        from rtoolkit.export.optimize import optimize_onnx

        step("optimize")
        optimize_onnx(folder, **common)
    if quantize == "int8":
        from rtoolkit.export.quantize import quantize_int8

        step("int8")
        quantize_int8(folder, per_channel=per_channel, exclude=exclude, **common)
    if fp16:
        from rtoolkit.export.quantize import convert_fp16

        step("fp16")
        convert_fp16(folder, **common)
    if trt:
        from rtoolkit.export.tensorrt import build_engine

        step("tensorrt")
        build_engine(folder, precision="fp16", **common)
