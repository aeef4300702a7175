"""`export(...)`: what `rtoolkit export` does, as one Python call. Each step is also its own function."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from rtoolkit.export.onnx import DEFAULT_MAX_BATCH, export_onnx, require_onnx
from rtoolkit.export.spec import ExportError, Manifest

logger = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("int8",)


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
    Returns the manifest; a failed validation raises ValidationError after recording its numbers.
    """
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ExportError(
            f"--quantize {quantize!r} is not supported; choose one of {', '.join(QUANTIZE_CHOICES)}"
        )
    if (per_channel or exclude) and quantize is None:
        raise ExportError("--per-channel and --exclude apply to --quantize int8; add --quantize int8")
    require_onnx()
    if trt:
        from rtoolkit.export.tensorrt import require_tensorrt

        require_tensorrt()
    if eval_data is not None and not Path(eval_data).is_file():
        raise ExportError(f"--eval-data {eval_data}: file not found")
    step = on_step or (lambda name: None)
    common = {"validate": validate, "texts": texts, "eval_data": eval_data}

    step("onnx")
    path = export_onnx(
        model_dir, out_dir, task=task, opset=opset, max_batch=max_batch, max_seq_len=max_seq_len, **common
    )
    folder = path.parent
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
    return Manifest.load(folder)
