"""Lower precision: dynamic int8 for CPUs (`model.int8.onnx`) and fp16 for GPUs (`model.fp16.onnx`).

int8: onnxruntime's `quantize_dynamic` (int8 weights, activations quantized on the fly; no calibration data). It
works on the fused graph too: onnxruntime 1.32's quantizer cannot infer the types of the outputs of contrib ops
(Attention, SkipLayerNormalization, ...) and stops with "Unable to find data type for weight_name", unless it is told
the default tensor type (float), which is done here. Node groups can be left in fp32 when accuracy needs it:
"embeddings" (the embedding Gathers) and "head" (the LM head or the classifier).

fp16: every weight and activation in fp16 except the ops in `keep_fp32` (LayerNormalization by default: its mean
and variance overflow fp16 on large activations), converted from the plain graph so TensorRT (which cannot parse
ONNX Runtime's contrib ops) can build from it; inputs and outputs stay int64 / float32. The attention mask is the
model's finite fill (-1e4), representable in fp16, so padded rows never give -inf - -inf = NaN.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from rtoolkit.export.onnx import publish, require_onnx, save_onnx, staging_dir
from rtoolkit.export.spec import (
    EXCLUDE_GROUPS,
    ONNX_FP16,
    ONNX_FP32,
    ONNX_INT8,
    ONNX_OPTIMIZED,
    Artifact,
    ExportError,
    Manifest,
    graph_path,
)

logger = logging.getLogger(__name__)

# Name fragments of the exported nodes in each excludable group (names come from the torch module paths).
GROUP_NODES = dict(zip(EXCLUDE_GROUPS, [("/embeddings/",), ("/lm_head/", "/classifier/")], strict=True))
# LayerNorm variance and softmax sums overflow or lose precision in fp16 (TensorRT issue #3101): they stay fp32.
DEFAULT_KEEP_FP32 = ("LayerNormalization", "Softmax")


class _DropQuantizerRecords(logging.Filter):
    """onnxruntime.quantization logs every tensor on the root logger; keep those records out of the user's way."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "/onnxruntime/quantization/" not in record.pathname.replace(os.sep, "/")


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    root, dropper = logging.getLogger(), _DropQuantizerRecords()
    root.addFilter(dropper)
    try:
        yield
    finally:
        root.removeFilter(dropper)


def nodes_in_groups(model, groups: Sequence[str]) -> list[str]:
    """Names of the nodes of an onnx.ModelProto that belong to the named groups (see EXCLUDE_GROUPS)."""
    unknown = [g for g in groups if g not in GROUP_NODES]
    if unknown:
        raise ExportError(f"unknown node group(s) {unknown} to exclude; choose from {sorted(GROUP_NODES)}")
    fragments = tuple(f for g in groups for f in GROUP_NODES[g])
    names = []
    for node in model.graph.node:
        if node.name and any(f in node.name for f in fragments):
            names.append(node.name)
            if node.op_type == "Gemm":
                # The quantizer first rewrites Gemm as MatMul + Add, naming the MatMul "<gemm>_MatMul".
                names.append(node.name + "_MatMul")
    return names


def quantize_int8(
    export_dir: str | os.PathLike,
    *,
    source: str | None = None,
    per_channel: bool = False,
    exclude: Sequence[str] = (),
    validate: bool = True,
    texts: Sequence[str] | None = None,
    eval_data: str | os.PathLike | None = None,
) -> Path:
    """Dynamic int8 quantization of an export folder's graph into `model.int8.onnx`.

    `source`: the graph to quantize, `model.optimized.onnx` when present, else `model.onnx`. `per_channel`: one
    scale per output channel of each weight. `exclude`: node groups kept in fp32 ("embeddings", "head").
    Validation compares with model.onnx at task level (top-1 agreement; the dev-set metric drop with
    `eval_data`). Returns the path of model.int8.onnx.
    """
    require_onnx()
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = Path(export_dir)
    manifest = Manifest.load(folder)
    if source is None:
        source = ONNX_OPTIMIZED if (folder / ONNX_OPTIMIZED).is_file() else ONNX_FP32
    src = graph_path(folder, source)
    graph = onnx.load(str(src), load_external_data=False)
    excluded = nodes_in_groups(graph, exclude)
    if exclude and not excluded:
        raise ExportError(
            f"no node of {src.name} is in the group(s) {list(exclude)}; nothing would be excluded"
        )
    del graph
    with staging_dir(folder) as tmp, _quiet_quantizer():
        quantize_dynamic(
            str(src),
            str(tmp / ONNX_INT8),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            nodes_to_exclude=excluded,
            use_external_data_format=(folder / (source + ".data")).is_file(),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        written = [n for n in (ONNX_INT8, ONNX_INT8 + ".data") if (tmp / n).is_file()]
        for stale in folder.glob(ONNX_INT8 + "*"):
            stale.unlink()
        publish(tmp, folder, written)
    from rtoolkit.export.optimize import fused_operator_counts

    quantized = onnx.load(str(folder / ONNX_INT8), load_external_data=False)
    artifact = Artifact(
        file=ONNX_INT8,
        format="onnx",
        precision="int8",
        optimized=source == ONNX_OPTIMIZED,
        fused_operators=fused_operator_counts(quantized),
        details={
            "source": source,
            "method": "onnxruntime.quantization.quantize_dynamic",
            "weight_type": "int8",
            "per_channel": per_channel,
            "excluded_groups": list(exclude),
            "excluded_nodes": len(excluded),
            "size_bytes": sum((folder / n).stat().st_size for n in written),
        },
    )
    manifest.put(artifact)
    manifest.save(folder)
    if validate:
        from rtoolkit.export.validate import validate_onnx

        validate_onnx(folder, ONNX_INT8, texts=texts, eval_data=eval_data)
    return folder / ONNX_INT8


def convert_fp16(
    export_dir: str | os.PathLike,
    *,
    keep_fp32: Sequence[str] = DEFAULT_KEEP_FP32,
    validate: bool = True,
    device: str | None = None,
    texts: Sequence[str] | None = None,
    eval_data: str | os.PathLike | None = None,
) -> Path:
    """Convert `model.onnx` of an export folder to `model.fp16.onnx` (fp16 inside, int64/float32 at the edges).

    `keep_fp32`: op types left in fp32 (casts are inserted around them): LayerNormalization, whose variance
    overflows in fp16 (TensorRT issue #3101), and onnxruntime's own list of numerically sensitive ops. Validation
    runs on `device` (default: CUDA when a GPU and ONNX Runtime's CUDA provider are there, else the CPU; the
    manifest records which) and compares with model.onnx at task level.
    """
    require_onnx()
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    folder = Path(export_dir)
    manifest = Manifest.load(folder)
    src = graph_path(folder, ONNX_FP32)
    model = onnx.load(str(src))
    half = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(keep_fp32)
    )
    with staging_dir(folder) as tmp:
        written = save_onnx(half, tmp / ONNX_FP16)
        for stale in folder.glob(ONNX_FP16 + "*"):
            stale.unlink()
        publish(tmp, folder, written)
    artifact = Artifact(
        file=ONNX_FP16,
        format="onnx",
        precision="fp16",
        details={
            "source": ONNX_FP32,
            "method": "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)",
            "kept_fp32": list(keep_fp32),
            "size_bytes": sum((folder / n).stat().st_size for n in written),
        },
    )
    manifest.put(artifact)
    manifest.save(folder)
    if validate:
        from rtoolkit.export.validate import default_device, validate_onnx

        chosen = device or default_device()
        if chosen == "cpu":
            logger.info("validating %s on the CPU (no GPU with ONNX Runtime's CUDA provider here)", ONNX_FP16)
        validate_onnx(folder, ONNX_FP16, device=chosen, texts=texts, eval_data=eval_data)
    return folder / ONNX_FP16
