"""The export layer: PyTorch checkpoints -> validated ONNX, ONNX Runtime fusions, int8, fp16 and TensorRT engines.

Importing this package imports neither onnx, onnxruntime nor tensorrt; each step imports what it needs.
"""

from rtoolkit.export.onnx import export_onnx, load_for_task
from rtoolkit.export.optimize import expected_fusions, optimize_onnx
from rtoolkit.export.pipeline import export
from rtoolkit.export.quantize import convert_fp16, quantize_int8
from rtoolkit.export.spec import (
    MANIFEST_NAME,
    ONNX_FP16,
    ONNX_FP32,
    ONNX_INT8,
    ONNX_OPTIMIZED,
    TASKS,
    Artifact,
    ExportError,
    Manifest,
    ValidationError,
)
from rtoolkit.export.tensorrt import TensorRTRunner, build_engine
from rtoolkit.export.validate import validate_onnx

__all__ = [
    "export",
    "export_onnx",
    "optimize_onnx",
    "quantize_int8",
    "convert_fp16",
    "build_engine",
    "validate_onnx",
    "TensorRTRunner",
    "expected_fusions",
    "load_for_task",
    "Artifact",
    "Manifest",
    "ExportError",
    "ValidationError",
    "TASKS",
    "MANIFEST_NAME",
    "ONNX_FP32",
    "ONNX_OPTIMIZED",
    "ONNX_INT8",
    "ONNX_FP16",
]
