"""ONNX Runtime sessions, built one way for export validation and for serving, so "validated" is what is served.

    session = create_session("exports/sst2/model.fp16.onnx", device="cuda")   # CUDA provider, or a clear error
    runner = OrtRunner(session, device="cuda")                                  # IO binding on CUDA
    outputs = runner.run({"input_ids": ids, "attention_mask": mask})           # {name: float32 array}

On CUDA the runner binds the inputs as device OrtValues and the outputs to device memory (IO binding), so ONNX Runtime
makes no host round trip of its own between them; the results are copied to the host once, at the end. A CUDA session
whose CUDA provider did not come up (missing libraries, a CPU-only onnxruntime) is refused with the reason instead of
quietly running on the CPU.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run here as asked (package or provider missing); the message says what to install."""


def device_index(device: str) -> int:
    """ "cuda" -> 0, "cuda:2" -> 2."""
    return int(device.split(":", 1)[1]) if ":" in device else 0


def providers_for(device: str) -> list[Any]:
    """The ONNX Runtime providers for `device` ("cpu", "cuda", "cuda:N"): CUDA first, with the CPU for the few ops
    the CUDA provider does not implement."""
    if device == "cpu":
        return [CPU_PROVIDER]
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        return [(CUDA_PROVIDER, {"device_id": device_index(device)}), CPU_PROVIDER]
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def require_onnxruntime(device: str = "cpu"):
    """The onnxruntime module, checked to have the provider `device` needs."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeUnavailable(
            "ONNX Runtime is not installed: pip install 'rtoolkit[onnx]' (CPU) or 'rtoolkit[gpu]' (CUDA)"
        ) from None
    if device != "cpu" and CUDA_PROVIDER not in ort.get_available_providers():
        raise RuntimeUnavailable(
            f"device={device!r} needs ONNX Runtime's CUDA provider, which onnxruntime {ort.__version__} does not "
            f"have (providers: {ort.get_available_providers()}); install onnxruntime-gpu (pip install 'rtoolkit[gpu]')"
        )
    return ort


def create_session(path: str | os.PathLike, *, device: str = "cpu", threads: int | None = None):
    """An InferenceSession on `path` for `device`; `threads` sets the intra-op threads (CPU)."""
    ort = require_onnxruntime(device)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers_for(device))
    if device != "cpu" and CUDA_PROVIDER not in session.get_providers():
        raise RuntimeUnavailable(
            f"{path}: ONNX Runtime could not start its CUDA provider (it fell back to {session.get_providers()}); "
            f"check that the CUDA 12 and cuDNN 9 libraries onnxruntime-gpu needs are installed"
        )
    return session


def session_provider(session) -> str:
    """The provider that runs a session's graph: "CUDAExecutionProvider" or "CPUExecutionProvider"."""
    return session.get_providers()[0]


class OrtRunner:
    """Runs a session: `run(feeds) -> {output name: float32 array}`; thread-safe (a new binding per call).

    `io_binding` (default: on for CUDA) binds inputs and outputs on the session's device.
    """

    def __init__(self, session, *, device: str = "cpu", io_binding: bool | None = None):
        self.session = session
        self.device = device
        self.io_binding = device != "cpu" if io_binding is None else io_binding
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.provider = session_provider(session)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.io_binding:
            outputs = self.session.run(self.output_names, feeds)
            return {
                n: np.asarray(v, dtype=np.float32) for n, v in zip(self.output_names, outputs, strict=True)
            }
        import onnxruntime as ort

        kind = "cpu" if self.device == "cpu" else "cuda"
        index = 0 if kind == "cpu" else device_index(self.device)
        binding = self.session.io_binding()
        for name in self.input_names:
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(feeds[name]), kind, index)
            binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, kind, index)
        self.session.run_with_iobinding(binding)
        outputs = binding.copy_outputs_to_cpu()
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(self.output_names, outputs, strict=True)}


__all__ = [
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "OrtRunner",
    "RuntimeUnavailable",
    "create_session",
    "device_index",
    "providers_for",
    "require_onnxruntime",
    "session_provider",
]
