"""TensorRT at run time: which engines this machine may run, and a runner for them.

An engine (and a builder's timing cache) belongs to the TensorRT version and the GPU that made it: TensorRT refuses, or
worse mis-tunes, a plan from another version or device. Whatever builds one records a `MachineTag` (TensorRT version,
GPU name, compute capability) beside it; `tag_mismatch` says why a recorded tag does not fit this machine, so that
serving can fall back to ONNX with one clear warning instead of failing when an export folder moves to another GPU.

    runner = TensorRTRunner("exports/sst2/engines/<key>.engine")
    outputs = runner.run({"input_ids": ids, "attention_mask": mask})     # {name: float32 array}

Device memory and the CUDA stream come from torch (no pycuda / cuda-python needed). `tensorrt` is imported inside
the functions that need it, so this module imports without it; the code is type-checked against the TensorRT 10
type stubs (`make lint`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rtoolkit.runtime.ort import RuntimeUnavailable

if TYPE_CHECKING:
    import tensorrt as trt
    import torch


def require_tensorrt(what: str = "TensorRT") -> None:
    """Raise RuntimeUnavailable (one line, starting with `what`) naming what is missing: the tensorrt library (its
    type stubs alone install an empty `tensorrt` package) or a CUDA GPU."""
    try:
        import tensorrt as trt
    except ImportError:
        trt = None
    if trt is None or not hasattr(trt, "Builder"):
        raise RuntimeUnavailable(
            f"{what} needs the tensorrt Python package and a CUDA GPU: tensorrt is not installed "
            f"(pip install 'rtoolkit[gpu]')"
        )
    import torch

    if not torch.cuda.is_available():
        raise RuntimeUnavailable(
            f"{what} needs a CUDA GPU: tensorrt {trt.__version__} is installed, but torch sees no CUDA device "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})"
        )


@dataclass(frozen=True)
class MachineTag:
    """What a TensorRT plan is bound to."""

    tensorrt: str  # full version, e.g. "10.13.3.9"
    gpu: str  # torch.cuda.get_device_name(), e.g. "NVIDIA H100 80GB HBM3"
    compute_capability: str  # e.g. "9.0"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def machine_tag(device: int = 0) -> MachineTag:
    """This machine's tag for CUDA device `device` (needs tensorrt and a GPU)."""
    require_tensorrt()
    import tensorrt as trt
    import torch

    props = torch.cuda.get_device_properties(device)
    return MachineTag(
        tensorrt=trt.__version__, gpu=props.name, compute_capability=f"{props.major}.{props.minor}"
    )


def tag_mismatch(recorded: dict[str, Any] | None, machine: MachineTag) -> str | None:
    """Why a plan recorded with `recorded` (a MachineTag's fields) cannot run on `machine`; None when it can."""
    if not recorded or not all(recorded.get(k) for k in ("tensorrt", "gpu", "compute_capability")):
        return "it does not record the TensorRT version, GPU and compute capability it was built for"
    built = MachineTag(str(recorded["tensorrt"]), str(recorded["gpu"]), str(recorded["compute_capability"]))
    if built == machine:
        return None
    return (
        f"it was built with TensorRT {built.tensorrt} for {built.gpu} (compute capability "
        f"{built.compute_capability}); this machine has TensorRT {machine.tensorrt} and {machine.gpu} (compute "
        f"capability {machine.compute_capability})"
    )


class TensorRTRunner:
    """Runs a serialized engine: `run({"input_ids": (B, T) int, "attention_mask": (B, T) int}) -> {name: array}`.

    Inputs are copied to the GPU, the context runs with `execute_async_v3` on a torch CUDA stream, and outputs come
    back as float32 numpy arrays. Shapes must fit the engine's optimization profile (checked, with a clear error).
    Not thread-safe: use one runner per thread, or a lock.
    """

    def __init__(self, engine_path: str | os.PathLike, *, device: int = 0):
        require_tensorrt()
        import tensorrt as trt
        import torch

        self.device = torch.device("cuda", device)
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"TensorRT engine not found: {self.path}")
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            engine = trt.Runtime(self._logger).deserialize_cuda_engine(self.path.read_bytes())
            if engine is None:
                raise RuntimeUnavailable(
                    f"{self.path}: TensorRT {trt.__version__} cannot load this engine (built by another TensorRT "
                    f"version or for another GPU); rebuild it with `rtoolkit export --trt`"
                )
            self.engine: trt.ICudaEngine = engine
            self.context: trt.IExecutionContext = engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._dtypes = {n: torch_dtype(engine.get_tensor_dtype(n)) for n in names}
        self.profile: dict[str, tuple[tuple[int, ...], ...]] = {
            n: tuple(dims(shape) for shape in engine.get_tensor_profile_shape(n, 0)) for n in self.input_names
        }

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"missing engine inputs {missing}; the engine takes {self.input_names}")
        buffers: dict[str, torch.Tensor] = {}
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            for name in self.input_names:
                array = np.ascontiguousarray(feeds[name])
                lo, _, hi = self.profile[name]
                if any(d < a or d > b for d, a, b in zip(array.shape, lo, hi, strict=True)):
                    raise ValueError(
                        f"input {name} of shape {tuple(array.shape)} is outside the engine's profile "
                        f"{tuple(lo)}..{tuple(hi)}; rebuild with larger --max-batch / --max-seq-len"
                    )
                tensor = torch.from_numpy(array).to(self.device, dtype=self._dtypes[name], non_blocking=True)
                buffers[name] = tensor
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
            for name in self.output_names:
                shape = dims(self.context.get_tensor_shape(name))
                out = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
                buffers[name] = out
                self.context.set_tensor_address(name, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run {self.path.name}")
            self.stream.synchronize()
        return {n: buffers[n].float().cpu().numpy() for n in self.output_names}


def dims(shape: trt.Dims) -> tuple[int, ...]:
    """A TensorRT Dims as a tuple of ints."""
    return tuple(shape[i] for i in range(len(shape)))


def torch_dtype(dtype: trt.DataType) -> torch.dtype:
    """The torch dtype of a TensorRT tensor type."""
    import tensorrt as trt
    import torch

    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.BF16: torch.bfloat16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.INT8: torch.int8,
        trt.DataType.BOOL: torch.bool,
    }
    if dtype not in table:
        raise ValueError(f"unsupported TensorRT tensor type {dtype}")
    return table[dtype]


__all__ = [
    "MachineTag",
    "TensorRTRunner",
    "dims",
    "machine_tag",
    "require_tensorrt",
    "tag_mismatch",
    "torch_dtype",
]
