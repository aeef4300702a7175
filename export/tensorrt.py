"""TensorRT engines built from the exported ONNX with the `tensorrt` Python API (the runner is rtoolkit.runtime).

Precision comes from the ONNX tensor types on every supported TensorRT version: networks are built strongly typed,
fp16 engines from `model.fp16.onnx` (made by `convert_fp16` when missing; its LayerNorm and Softmax stay fp32, since
RoBERTa's LayerNorm overflows in fp16, TensorRT issue #3101) and fp32 engines from `model.onnx`. No FP16 builder flag
is used: TensorRT 10.12 deprecated `BuilderFlag.FP16`/`INT8` and 11.0 removed them, with weak typing altogether. The one
difference left between the versions is how a strongly typed network is asked for (`network_creation_flags`).

One optimization profile covers (1, 1) .. (max_batch, max_seq_len) for both inputs, tuned for (opt_batch,
opt_seq_len). Engines are cached under a key made of the TensorRT version, GPU name, profile, precision and the ONNX
file's hash, and the manifest records the machine each engine was built for (TensorRT version, GPU, compute
capability), so a Predictor on another GPU falls back to ONNX instead of loading a plan it cannot run. The timing cache
(`engines/timing.cache`) is reused only by the TensorRT version and GPU that wrote it (`engines/timing.cache.json`).

`tensorrt` is imported inside the functions that need it (this module imports without it) and every call into it is
type-checked against the TensorRT 10 stubs in `make lint`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from rtoolkit.runtime.ort import RuntimeUnavailable
from rtoolkit.runtime.tensorrt import MachineTag, TensorRTRunner, machine_tag, tag_mismatch

from .spec import (
    ENGINES_DIR,
    INPUT_NAMES,
    ONNX_FP16,
    ONNX_FP32,
    TIMING_CACHE,
    Artifact,
    ExportError,
    Manifest,
    file_sha256,
)

logger = logging.getLogger(__name__)

WORKSPACE_BYTES = 4 << 30
TIMING_CACHE_TAG = TIMING_CACHE + ".json"


def require_tensorrt() -> None:
    """Raise ExportError (one line) naming what is missing: the tensorrt package or a GPU."""
    from rtoolkit.runtime.tensorrt import require_tensorrt as require

    try:
        require("--trt")
    except RuntimeUnavailable as exc:
        raise ExportError(str(exc)) from None


def network_creation_flags(trt_version: str) -> int:
    """Flags for `Builder.create_network` that give a strongly typed network on this TensorRT version.

    TensorRT 10 builds weakly typed networks unless `NetworkDefinitionCreationFlag.STRONGLY_TYPED` is set. TensorRT
    11.0 made every network strongly typed and deprecated that flag ("Strongly typed mode is always enabled",
    NvInfer.h of 11.0), so there it passes no flag. This is the only version branch of the builder.
    """
    if int(trt_version.split(".")[0]) >= 11:
        return 0
    import tensorrt as trt

    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def read_timing_cache(cache: Path, machine: MachineTag) -> bytes:
    """The saved timing cache's bytes when this TensorRT version and GPU wrote it, else b"" (a fresh cache).

    A cache from another version or GPU is never handed to TensorRT: it is ignored, with a log line saying why.
    """
    tag_file = cache.with_name(TIMING_CACHE_TAG)
    if not cache.is_file():
        return b""
    try:
        recorded = json.loads(tag_file.read_text(encoding="utf-8")) if tag_file.is_file() else None
    except (OSError, json.JSONDecodeError):
        recorded = None
    reason = tag_mismatch(recorded, machine)
    if reason is not None:
        logger.info("%s: not reused (%s); starting a new timing cache", cache, reason)
        return b""
    return cache.read_bytes()


def write_timing_cache(cache: Path, data: bytes, machine: MachineTag) -> None:
    """Save a timing cache and the tag of the machine that made it."""
    from rtoolkit.checkpoint import atomic_write_bytes

    atomic_write_bytes(cache, data)
    atomic_write_bytes(
        cache.with_name(TIMING_CACHE_TAG), (json.dumps(machine.to_dict(), indent=2) + "\n").encode("utf-8")
    )


def profile_shapes(
    *, max_batch: int, max_seq_len: int, opt_batch: int | None = None, opt_seq_len: int | None = None
) -> dict[str, tuple[int, int]]:
    """min / opt / max (batch, sequence) shapes of the one optimization profile."""
    opt = (min(opt_batch or 1, max_batch), min(opt_seq_len or 128, max_seq_len))
    return {"min": (1, 1), "opt": opt, "max": (max_batch, max_seq_len)}


def engine_key(
    *, trt_version: str, gpu: str, shapes: dict[str, tuple[int, int]], precision: str, onnx_sha: str
) -> str:
    """A file-name-safe cache key: TensorRT version, GPU name, profile, precision, source ONNX hash."""
    gpu_slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
    profile = "_".join(f"{k}{b}x{s}" for k, (b, s) in shapes.items())
    return f"trt{trt_version}_{gpu_slug}_{profile}_{precision}_{onnx_sha[:12]}"


def build_engine(
    export_dir: str | os.PathLike,
    *,
    precision: str = "fp16",
    max_batch: int | None = None,
    max_seq_len: int | None = None,
    opt_batch: int | None = None,
    opt_seq_len: int | None = None,
    validate: bool = True,
    rebuild: bool = False,
    texts: Sequence[str] | None = None,
    eval_data: str | os.PathLike | None = None,
) -> Path:
    """Build (or reuse from the cache) a TensorRT engine for an export folder; returns `engines/<key>.engine`.

    `precision`: "fp16" or "fp32". Shape limits default to the manifest's max_batch / max_seq_len. Validation runs
    the engine with TensorRTRunner and compares with model.onnx in ONNX Runtime at task level.
    """
    if precision not in ("fp16", "fp32"):
        raise ExportError(f"TensorRT precision must be fp16 or fp32, got {precision!r}")
    require_tensorrt()
    folder = Path(export_dir)
    manifest = Manifest.load(folder)
    max_batch = max_batch or manifest.max_batch
    max_seq_len = max_seq_len or manifest.max_seq_len
    if max_seq_len > manifest.max_seq_len:
        raise ExportError(
            f"--max-seq-len {max_seq_len} is beyond this export's limit of {manifest.max_seq_len} tokens"
        )
    machine = machine_tag()
    source_name = ONNX_FP16 if precision == "fp16" else ONNX_FP32
    source = folder / source_name
    if not source.is_file():
        if source_name != ONNX_FP16:
            raise ExportError(f"{source}: file not found; export the model first")
        from .quantize import convert_fp16

        convert_fp16(folder, validate=validate, texts=texts, eval_data=eval_data)
    shapes = profile_shapes(
        max_batch=max_batch, max_seq_len=max_seq_len, opt_batch=opt_batch, opt_seq_len=opt_seq_len
    )
    key = engine_key(
        trt_version=machine.tensorrt,
        gpu=machine.gpu,
        shapes=shapes,
        precision=precision,
        onnx_sha=file_sha256(source),
    )
    engines = folder / ENGINES_DIR
    engines.mkdir(exist_ok=True)
    engine_path = engines / f"{key}.engine"
    relative = f"{ENGINES_DIR}/{engine_path.name}"
    if engine_path.is_file() and not rebuild:
        logger.info("reusing cached TensorRT engine %s", engine_path)
    else:
        plan = _build_plan(source, shapes, precision=precision, machine=machine, cache=engines / TIMING_CACHE)
        from rtoolkit.checkpoint import atomic_write_bytes

        atomic_write_bytes(engine_path, plan)
    artifact = Artifact(
        file=relative,
        format="tensorrt",
        precision=precision,
        optimized=True,
        details={
            "source": source_name,
            **machine.to_dict(),  # tensorrt, gpu, compute_capability: where this engine may run
            "strongly_typed": True,
            "profile": {k: list(v) for k, v in shapes.items()},
            "size_bytes": engine_path.stat().st_size,
        },
    )
    manifest = Manifest.load(folder)
    manifest.put(artifact)
    manifest.save(folder)
    if validate:
        from .validate import validate_outputs

        runner = TensorRTRunner(engine_path)
        run = lambda feeds: runner.run(feeds)[runner.output_names[0]]  # noqa: E731
        validate_outputs(
            folder,
            relative,
            run,
            texts=texts,
            eval_data=eval_data,
            max_batch=max_batch,
            max_seq_len=max_seq_len,
            runtime=f"tensorrt {machine.tensorrt} on {machine.gpu}",
        )
    return engine_path


def _build_plan(
    source: Path, shapes: dict[str, tuple[int, int]], *, precision: str, machine: MachineTag, cache: Path
) -> bytes:
    import tensorrt as trt

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(network_creation_flags(machine.tensorrt))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {source.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    timing = config.create_timing_cache(read_timing_cache(cache, machine))
    if not config.set_timing_cache(timing, False):  # still refused: start from an empty cache
        logger.info("%s was refused by TensorRT %s; starting a new timing cache", cache, machine.tensorrt)
        config.set_timing_cache(config.create_timing_cache(b""), False)
    profile = builder.create_optimization_profile()
    for name in INPUT_NAMES:
        profile.set_shape(name, *(trt.Dims(list(shapes[k])) for k in ("min", "opt", "max")))
    config.add_optimization_profile(profile)
    logger.info(
        "building a TensorRT %s engine from %s (profile %s); this takes a while", precision, source, shapes
    )
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(
            f"TensorRT failed to build an engine from {source.name} (see the TensorRT log above)"
        )
    write_timing_cache(cache, bytes(memoryview(config.get_timing_cache().serialize())), machine)
    return bytes(memoryview(plan))


__all__ = [
    "TensorRTRunner",
    "build_engine",
    "engine_key",
    "network_creation_flags",
    "profile_shapes",
    "read_timing_cache",
    "require_tensorrt",
    "write_timing_cache",
]
