"""Export-side helpers for the export folder's manifest: input/output specs, source hashes, tool versions.

The format itself (file names, tasks, `Artifact`, `Manifest`, the errors) is owned by rtoolkit.runtime.artifacts,
which the runtime reads and this package writes; its names are re-exported here for the export modules.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

from rtoolkit.runtime.artifacts import (  # noqa: F401 - the format's names, re-exported for the export modules
    ARCHITECTURE_TASKS,
    DYNAMIC_AXES,
    ENGINES_DIR,
    EXCLUDE_GROUPS,
    HEAD_PREFIXES,
    INPUT_NAMES,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    ONNX_FP16,
    ONNX_FP32,
    ONNX_INT8,
    ONNX_OPTIMIZED,
    QUANTIZE_MODES,
    TASK_OUTPUTS,
    TASKS,
    TIMING_CACHE,
    VALIDATION_KEYS,
    Artifact,
    ExportError,
    Manifest,
    ValidationError,
    graph_path,
    input_axes,
    output_axes,
    output_name,
    output_names,
)


def io_spec(task: str, *, hidden_size: int, vocab_size: int, num_labels: int) -> tuple[list, list]:
    """The manifest's `inputs` and `outputs` entries (names, dtypes, symbolic shapes; `features` resolved to the
    vocabulary, label or hidden size)."""
    inputs = [{"name": n, "dtype": "int64", "shape": list(input_axes(task))} for n in INPUT_NAMES]
    features = {"fill-mask": vocab_size, "embedding": hidden_size}.get(task, num_labels)
    outputs = [
        {"name": name, "dtype": "float32", "shape": [features if a == "features" else a for a in axes]}
        for name, axes in TASK_OUTPUTS[task].items()
    ]
    return inputs, outputs


def source_sha256(model_dir: str | os.PathLike) -> str:
    """sha256 over config.json and the weight files of a model folder, in name order (names included)."""
    folder = Path(model_dir)
    names = sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and (p.name == "config.json" or p.suffix in (".safetensors", ".bin"))
    )
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode("utf-8") + b"\0")
        with open(folder / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the artifacts (those installed; tensorrt only when present)."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    dists = (
        "rtoolkit",
        "torch",
        "onnx",
        "onnxruntime",
        "onnxruntime-gpu",
        "onnxscript",
        "tensorrt",
        "tensorrt-cu12",
    )
    for dist in dists:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return versions
