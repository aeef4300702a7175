"""TensorRT engines built from the exported ONNX with the `tensorrt` Python API, and a runner for them.

Precision, by TensorRT version (the API changed under users' feet):
- TensorRT 10 (up to 10.x): weakly typed networks; fp16 is `BuilderFlag.FP16` on the fp32 graph `model.onnx`.
- TensorRT >= 11: networks are always strongly typed and `BuilderFlag.FP16` is gone; precision comes from the ONNX
  tensor types, so fp16 engines are built from `model.fp16.onnx` (made by `convert_fp16` when missing).

One optimization profile covers (1, 1) .. (max_batch, max_seq_len) for both inputs, tuned for (opt_batch,
opt_seq_len). A timing cache (`engines/timing.cache`) speeds up rebuilds, and engines are cached under a key made of
the TensorRT version, GPU name, profile, precision and the ONNX file's hash, so a new GPU, profile or export never
reuses a stale engine. Device memory and the CUDA stream come from torch (no pycuda / cuda-python needed).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rtoolkit.export.spec import (
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


def require_tensorrt():
    """Return the `tensorrt` module, or raise ExportError (one line) naming what is missing: the package or a GPU."""
    try:
        import tensorrt as trt
    except ImportError:
        raise ExportError(
            "--trt needs the tensorrt Python package and a CUDA GPU: tensorrt is not installed "
            "(pip install 'rtoolkit[gpu]')"
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise ExportError(
            f"--trt needs a CUDA GPU: tensorrt {trt.__version__} is installed, but torch sees no CUDA device "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})"
        )
    return trt


def trt_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def strongly_typed(trt) -> bool:
    """True where precision must come from the ONNX types (TensorRT >= 11, or a build without BuilderFlag.FP16)."""
    return trt_major(trt) >= 11 or not hasattr(trt.BuilderFlag, "FP16")


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
    trt = require_tensorrt()
    import torch

    folder = Path(export_dir)
    manifest = Manifest.load(folder)
    max_batch = max_batch or manifest.max_batch
    max_seq_len = max_seq_len or manifest.max_seq_len
    if max_seq_len > manifest.max_seq_len:
        raise ExportError(
            f"--max-seq-len {max_seq_len} is beyond this export's limit of {manifest.max_seq_len} tokens"
        )
    typed = strongly_typed(trt)
    source_name = ONNX_FP16 if (typed and precision == "fp16") else ONNX_FP32
    source = folder / source_name
    if not source.is_file():
        if source_name != ONNX_FP16:
            raise ExportError(f"{source}: file not found; export the model first")
        from rtoolkit.export.quantize import convert_fp16

        convert_fp16(folder, validate=validate, texts=texts, eval_data=eval_data)
    shapes = profile_shapes(
        max_batch=max_batch, max_seq_len=max_seq_len, opt_batch=opt_batch, opt_seq_len=opt_seq_len
    )
    gpu = torch.cuda.get_device_name()
    key = engine_key(
        trt_version=trt.__version__, gpu=gpu, shapes=shapes, precision=precision, onnx_sha=file_sha256(source)
    )
    engines = folder / ENGINES_DIR
    engines.mkdir(exist_ok=True)
    engine_path = engines / f"{key}.engine"
    relative = f"{ENGINES_DIR}/{engine_path.name}"
    if engine_path.is_file() and not rebuild:
        logger.info("reusing cached TensorRT engine %s", engine_path)
    else:
        plan = _build_plan(
            trt, source, shapes, precision=precision, typed=typed, cache=engines / TIMING_CACHE
        )
        from rtoolkit.checkpoint import atomic_write_bytes

        atomic_write_bytes(engine_path, plan)
    artifact = Artifact(
        file=relative,
        format="tensorrt",
        precision=precision,
        optimized=True,
        details={
            "source": source_name,
            "tensorrt": trt.__version__,
            "gpu": gpu,
            "strongly_typed": typed,
            "profile": {k: list(v) for k, v in shapes.items()},
            "size_bytes": engine_path.stat().st_size,
        },
    )
    manifest = Manifest.load(folder)
    manifest.put(artifact)
    manifest.save(folder)
    if validate:
        from rtoolkit.export.validate import validate_outputs

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
        )
    return engine_path


def _build_plan(trt, source: Path, shapes, *, precision: str, typed: bool, cache: Path) -> bytes:
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    if trt_major(trt) >= 11:
        network = builder.create_network(0)  # always strongly typed
    elif typed:
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    else:
        network = builder.create_network(0)  # explicit batch is the default in TensorRT 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {source.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16" and not typed:
        config.set_flag(trt.BuilderFlag.FP16)  # TensorRT 10: weakly typed, the builder picks fp16 kernels
    timing = config.create_timing_cache(cache.read_bytes() if cache.is_file() else b"")
    if not config.set_timing_cache(timing, False):  # a cache from another GPU or TensorRT: start a fresh one
        logger.info("%s was made by another GPU or TensorRT version; starting a new timing cache", cache)
        config.set_timing_cache(config.create_timing_cache(b""), False)
    profile = builder.create_optimization_profile()
    for name in INPUT_NAMES:
        profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    logger.info(
        "building a TensorRT %s engine from %s (profile %s); this takes a while", precision, source, shapes
    )
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(
            f"TensorRT failed to build an engine from {source.name} (see the TensorRT log above)"
        )
    from rtoolkit.checkpoint import atomic_write_bytes

    atomic_write_bytes(cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(plan))


class TensorRTRunner:
    """Runs a serialized engine: `run({"input_ids": (B, T) int, "attention_mask": (B, T) int}) -> {name: array}`.

    Inputs are copied to the GPU, the context runs with `execute_async_v3` on a torch CUDA stream, and outputs come
    back as float32 numpy arrays. Shapes must fit the engine's optimization profile (checked, with a clear error).
    Not thread-safe: use one runner per thread.
    """

    def __init__(self, engine_path: str | os.PathLike, *, device: int = 0):
        trt = require_tensorrt()
        import torch

        self._torch = torch
        self.device = torch.device("cuda", device)
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise ExportError(f"TensorRT engine not found: {self.path}")
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise ExportError(
                    f"{self.path}: TensorRT {trt.__version__} cannot load this engine (built by another TensorRT "
                    f"version or for another GPU); rebuild it with `rtoolkit export --trt`"
                )
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._dtypes = {n: _torch_dtype(torch, trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.profile = {
            n: tuple(tuple(s) for s in self.engine.get_tensor_profile_shape(n, 0)) for n in self.input_names
        }

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ExportError(f"missing engine inputs {missing}; the engine takes {self.input_names}")
        buffers: dict[str, Any] = {}
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            for name in self.input_names:
                array = np.ascontiguousarray(feeds[name])
                lo, _, hi = self.profile[name]
                if any(d < a or d > b for d, a, b in zip(array.shape, lo, hi, strict=True)):
                    raise ExportError(
                        f"input {name} of shape {tuple(array.shape)} is outside the engine's profile "
                        f"{tuple(lo)}..{tuple(hi)}; rebuild with larger --max-batch / --max-seq-len"
                    )
                tensor = torch.from_numpy(array).to(self.device, dtype=self._dtypes[name], non_blocking=True)
                buffers[name] = tensor
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                out = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
                buffers[name] = out
                self.context.set_tensor_address(name, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ExportError(f"TensorRT failed to run {self.path.name}")
            self.stream.synchronize()
        return {n: buffers[n].float().cpu().numpy() for n in self.output_names}


def _torch_dtype(torch, trt, dtype):
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT8: torch.int8,
        trt.DataType.BOOL: torch.bool,
    }
    if hasattr(trt.DataType, "INT64"):
        table[trt.DataType.INT64] = torch.int64
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    if dtype not in table:
        raise ExportError(f"unsupported TensorRT tensor type {dtype}")
    return table[dtype]
