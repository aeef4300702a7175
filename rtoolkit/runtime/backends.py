"""How a model or export folder is run: the PyTorch, ONNX Runtime and TensorRT backends, and the auto-pick between
them. The Predictor turns texts into batches and hands them to the backend `load_backend` returns.

A backend has `tasks` (what the folder can serve), `name`, `artifact`, `precision`, optional shape limits
(`max_batch`, `max_length`), `pad_width(width, limit)` and three calls on padded numpy batches: `mask_logits`,
`class_logits` and `hidden_states`. The folder's format is read through rtoolkit.runtime.artifacts, ONNX Runtime
sessions come from rtoolkit.runtime.ort and TensorRT engines run through rtoolkit.runtime.tensorrt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from rtoolkit.checkpoint import has_weights
from rtoolkit.config import RobertaConfig
from rtoolkit.runtime.artifacts import (
    ENGINES_DIR,
    MANIFEST_NAME,
    ONNX_FP16,
    ONNX_FP32,
    ONNX_INT8,
    ONNX_OPTIMIZED,
    Manifest,
    folder_task,
)

logger = logging.getLogger(__name__)
_R = TypeVar("_R")

BACKENDS = ("auto", "torch", "onnx", "tensorrt")
PRECISIONS = (None, "fp32", "fp16", "bf16", "int8")

# The Predictor names what it serves after its calls (fill_mask, classify, embed); this is the one mapping from the
# tasks (rtoolkit.runtime.artifacts.TASKS: a folder's head, an export's task) to those names.
FILL_MASK, CLASSIFY, EMBED = "fill-mask", "classify", "embed"
ANSWER, CHOOSE, TAG = "answer", "choose", "tag"
PREDICTOR_TASKS = {
    "fill-mask": FILL_MASK,
    "classification": CLASSIFY,
    "embedding": EMBED,
    "question-answering": ANSWER,
    "multiple-choice": CHOOSE,
    "token-classification": TAG,
}
# What a model folder serves, by the task of its head (every encoder also embeds).
FOLDER_SERVES = {task: frozenset({call, EMBED}) for task, call in PREDICTOR_TASKS.items()}


class PredictorError(ValueError):
    """Input or a model folder a user has to fix; the message says what is wrong and what was expected."""


# ------------------------------------------------------------------------------------------------ backends
class TorchBackend:
    """A model folder run by PyTorch. The LM head runs only on the masked positions.

    fp16/bf16 cast the weights (CUDA only). `compile=True` compiles the encoder with torch.compile, on CUDA with
    CUDA graphs (mode "reduce-overhead": one graph replay per call instead of hundreds of kernel launches); texts are
    then padded to a power-of-two length (16, 32, ..., max) so a few graphs serve every call. A batch without
    padding runs attention with no mask (flash-eligible on CUDA), decided on the host.
    """

    name = "torch"
    max_batch: int | None = None
    max_length: int | None = None

    def __init__(
        self,
        folder: Path,
        config: RobertaConfig,
        *,
        device: str,
        precision: str | None,
        compile: bool = False,
    ):
        from rtoolkit.tasks import head_class

        if precision not in (None, "fp32", "fp16", "bf16"):
            raise PredictorError(
                f"precision {precision!r} is not available on the torch backend (fp32, or fp16/bf16 on CUDA); "
                f"int8 needs an export folder made with `rtoolkit export --quantize int8`"
            )
        if precision in ("fp16", "bf16") and not device.startswith("cuda"):
            raise PredictorError(f"precision {precision!r} on the torch backend needs device='cuda'")
        self.head = folder_task(folder)  # the task of the folder's head
        model = head_class(self.head).from_pretrained(folder)
        if precision in ("fp16", "bf16"):
            model = model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.tasks = FOLDER_SERVES[self.head]
        self.artifact = folder
        self.precision = precision or "fp32"
        self.compiled = compile
        self._lock = threading.Lock()  # CUDA graph replays share their output buffers: one call at a time
        if compile:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._encoder().compile(mode=mode, dynamic=False)

    def _inputs(
        self, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids = torch.from_numpy(input_ids).to(self.device)
        if attention_mask.all():  # no padding: attention without a mask (host check, no device sync)
            return ids, None
        return ids, torch.from_numpy(attention_mask).to(self.device)

    def _encoder(self):
        return self.model if self.head == "embedding" else self.model.roberta

    def _run(self, forward: Callable[[], torch.Tensor]) -> np.ndarray:
        """Run `forward` (which ends in a float32 tensor) and bring its result to the host."""
        return self._call(lambda: forward().cpu().numpy())

    def _call(self, call: Callable[[], _R]) -> _R:
        """`call()`, one at a time and as a new CUDA-graph step when the encoder is compiled."""
        if not self.compiled:
            return call()
        with self._lock:
            if self.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            return call()

    def pad_width(self, width: int, limit: int) -> int:
        """The padded length of a batch whose longest text is `width` tokens: itself, or when compiled the next power
        of two from 16 (at most `limit`), so that a few compiled graphs serve all lengths."""
        if not self.compiled:
            return width
        return min(max(16, 1 << (width - 1).bit_length()), max(limit, width))

    @torch.inference_mode()
    def mask_logits(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, rows: np.ndarray, cols: np.ndarray
    ) -> np.ndarray:
        """(B, T) ids and mask, N (row, column) positions -> (N, V) float32 logits."""

        def forward() -> torch.Tensor:
            hidden = self._encoder()(*self._inputs(input_ids, attention_mask)).last_hidden_state  # (B, T, H)
            picked = hidden[
                torch.from_numpy(rows).to(self.device), torch.from_numpy(cols).to(self.device)
            ]  # (N, H)
            return self.model.lm_head(picked).float()  # (N, V)

        return self._run(forward)

    @torch.inference_mode()
    def class_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(B, T) -> (B, C) float32."""
        return self._run(lambda: self.model(*self._inputs(input_ids, attention_mask)).logits.float())

    @torch.inference_mode()
    def hidden_states(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(B, T) -> (B, T, H) float32."""
        return self._run(
            lambda: self._encoder()(*self._inputs(input_ids, attention_mask)).last_hidden_state.float()
        )

    @torch.inference_mode()
    def outputs(self, feeds: dict[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The head's named outputs (float32) for feeds input_ids (and attention_mask), any input rank."""
        mask = feeds.get("attention_mask")
        inputs = self._inputs(feeds["input_ids"], np.ones_like(feeds["input_ids"]) if mask is None else mask)

        def call() -> dict[str, np.ndarray]:
            out = self.model(*inputs)
            return {n: getattr(out, n).float().cpu().numpy() for n in names}

        return self._call(call)


class GraphBackend:
    """An exported graph (ONNX Runtime session or TensorRT engine) with inputs input_ids/attention_mask.

    Its one output is "logits" ((B, T, V) for fill-mask, (B, C) for classification) or "last_hidden_state"
    ((B, T, H), the embedding export), so it serves exactly one task.
    """

    def __init__(
        self,
        *,
        name: str,
        run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
        task: str,
        artifact: Path,
        precision: str,
        max_batch: int | None = None,
        max_length: int | None = None,
    ):
        self.name = name
        self._run = run
        self.task = task
        self.tasks = frozenset({task})
        self.output = "last_hidden_state" if task == EMBED else "logits"
        self.artifact = artifact
        self.precision = precision
        self.max_batch = max_batch
        self.max_length = max_length

    def pad_width(self, width: int, limit: int) -> int:
        return width

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        outputs = self._run({"input_ids": input_ids, "attention_mask": attention_mask})
        return np.asarray(outputs[self.output], dtype=np.float32)

    def mask_logits(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, rows: np.ndarray, cols: np.ndarray
    ) -> np.ndarray:
        return self._forward(input_ids, attention_mask)[rows, cols]  # (B, T, V) -> (N, V)

    def class_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._forward(input_ids, attention_mask)  # (B, C)

    def hidden_states(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._forward(input_ids, attention_mask)  # (B, T, H)

    def outputs(self, feeds: dict[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The graph's named outputs for feeds input_ids and attention_mask (all ones when none is given)."""
        ids = feeds["input_ids"]
        mask = feeds.get("attention_mask")
        out = self._run({"input_ids": ids, "attention_mask": np.ones_like(ids) if mask is None else mask})
        return {n: np.asarray(out[n], dtype=np.float32) for n in names}


# ------------------------------------------------------------------------------------- export folders
@dataclass(frozen=True)
class ArtifactFile:
    """One file of an export folder, as its manifest describes it."""

    path: Path
    format: str  # "onnx" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "int8"
    optimized: bool
    passed: bool | None  # validation result; None when the folder has no manifest
    details: dict[str, Any] | None = None  # the manifest's details (a TensorRT engine's machine tag, ...)


def read_manifest(folder: Path) -> Manifest | None:
    """The folder's export manifest (read by its one owner, rtoolkit.runtime.artifacts), or None without one."""
    if not (folder / MANIFEST_NAME).is_file():
        return None
    return Manifest.load(folder)


_STANDARD_FILES = {  # a folder without a manifest: what its file names say
    ONNX_FP32: ("fp32", False),
    ONNX_OPTIMIZED: ("fp32", True),
    ONNX_INT8: ("int8", False),
    ONNX_FP16: ("fp16", False),
}


def artifact_files(folder: Path, manifest: Manifest | None) -> list[ArtifactFile]:
    """The exported files that exist on disk, from the manifest or (without one) from the standard file names."""
    if manifest is not None:
        return [
            ArtifactFile(folder / a.file, a.format, a.precision, a.optimized, a.passed, a.details or None)
            for a in manifest.artifacts
            if (folder / a.file).is_file()
        ]
    found = [
        ArtifactFile(folder / name, "onnx", precision, optimized, None)
        for name, (precision, optimized) in _STANDARD_FILES.items()
        if (folder / name).is_file()
    ]
    found.extend(
        ArtifactFile(p, "tensorrt", "fp16" if "fp16" in p.name else "fp32", False, None)
        for p in sorted((folder / ENGINES_DIR).glob("*.engine"))
    )
    return found


def pick(candidates: list[ArtifactFile], what: str, folder: Path) -> ArtifactFile:
    """The first candidate that passed validation; else the first one, with a warning."""
    if not candidates:
        raise PredictorError(f"{folder} holds no {what}; make one with `rtoolkit export`")
    for artifact in candidates:
        if artifact.passed is not False:
            return artifact
    logger.warning(
        "%s: every %s failed validation against PyTorch (see %s); using %s anyway",
        folder,
        what,
        MANIFEST_NAME,
        candidates[0].path.name,
    )
    return candidates[0]


def onnx_order(artifacts: list[ArtifactFile], precision: str | None, device: str) -> list[ArtifactFile]:
    """ONNX files in order of preference: the asked precision, else fp16 on CUDA then fp32; optimized first."""
    if precision is not None:
        prefs = [precision]
    else:  # int8 trades accuracy for speed: only on request
        prefs = ["fp16", "fp32"] if device.startswith("cuda") else ["fp32"]
    wanted = [a for a in artifacts if a.format == "onnx" and a.precision in prefs]
    return sorted(wanted, key=lambda a: (prefs.index(a.precision), not a.optimized))


def onnx_backend(artifact: ArtifactFile, *, device: str, num_threads: int | None) -> GraphBackend:
    """An ONNX Runtime session (the same builder export validation uses); on CUDA it runs with IO binding. Its axes
    are dynamic, so the manifest's shape limits do not apply."""
    from rtoolkit.runtime.ort import OrtRunner, RuntimeUnavailable, create_session

    try:
        session = create_session(artifact.path, device=device, threads=num_threads)
    except RuntimeUnavailable as exc:
        raise PredictorError(str(exc)) from None
    except ImportError as exc:
        raise ImportError(str(exc)) from None
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise PredictorError(f"{artifact.path}: ONNX Runtime cannot load it ({exc})") from None
    runner = OrtRunner(session, device=device)
    if sorted(runner.input_names) != ["attention_mask", "input_ids"]:
        raise PredictorError(
            f"{artifact.path}: expected inputs input_ids and attention_mask, found {sorted(runner.input_names)}; "
            f"re-export with `rtoolkit export`"
        )
    manifest = read_manifest(artifact.path.parent)
    if manifest is not None and manifest.task in PREDICTOR_TASKS:
        task = PREDICTOR_TASKS[manifest.task]
    else:
        task = graph_task(artifact.path, runner.output_names, len(session.get_outputs()[0].shape))
    return GraphBackend(
        name="onnx",
        run=runner.run,
        task=task,
        artifact=artifact.path,
        precision=artifact.precision,
    )


def graph_task(path: Path, output_names: list[str], rank: int) -> str:
    """The task an exported graph serves, from its first output: logits (B, T, V) / (B, C), or hidden states."""
    if "last_hidden_state" in output_names:
        return EMBED
    if "logits" in output_names:
        return FILL_MASK if rank == 3 else CLASSIFY
    raise PredictorError(
        f"{path}: expected an output named 'logits' or 'last_hidden_state', found {output_names}"
    )


def tensorrt_backend(
    folder: Path, artifact: ArtifactFile, manifest: Manifest | None, *, device: str
) -> GraphBackend:
    """A TensorRT engine; batches and texts are kept within its optimization profile."""
    from rtoolkit.runtime.ort import RuntimeUnavailable, device_index
    from rtoolkit.runtime.tensorrt import TensorRTRunner

    try:
        runner = TensorRTRunner(artifact.path, device=device_index(device))
    except RuntimeUnavailable as exc:
        raise PredictorError(str(exc)) from None
    lock = threading.Lock()  # one execution context: one batch at a time

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with lock:
            return runner.run(feeds)

    task = PREDICTOR_TASKS.get(manifest.task if manifest is not None else "")
    if task is None:
        raise PredictorError(
            f"{folder / MANIFEST_NAME}: 'task' must be one of {sorted(PREDICTOR_TASKS)} to serve a TensorRT engine"
        )
    # The engine's optimization profile bounds the shapes it runs: (min, opt, max) per input.
    profile = getattr(runner, "profile", {}).get("input_ids")
    if profile:
        max_batch, max_length = profile[2]
    else:
        max_batch, max_length = (manifest or {}).get("max_batch"), (manifest or {}).get("max_seq_len")
    return GraphBackend(
        name="tensorrt",
        run=run,
        task=task,
        artifact=artifact.path,
        precision=artifact.precision,
        max_batch=int(max_batch) if max_batch else None,
        max_length=int(max_length) if max_length else None,
    )


def tensorrt_available() -> bool:
    """tensorrt (the library, not only its type stubs) and a CUDA GPU are there."""
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder") and torch.cuda.is_available()


def machine_tag_for(device: str):
    """This machine's TensorRT tag (version, GPU, compute capability) for `device`."""
    from rtoolkit.runtime.ort import device_index
    from rtoolkit.runtime.tensorrt import machine_tag

    return machine_tag(device_index(device))


def runnable_engines(engines: list[ArtifactFile], device: str, folder: Path) -> list[ArtifactFile]:
    """The engines built for this machine's GPU and TensorRT version; the others are skipped, with one warning
    (an export folder moved to another GPU falls back to ONNX instead of failing)."""
    from rtoolkit.runtime.tensorrt import tag_mismatch

    machine = machine_tag_for(device)
    reasons = {engine.path.name: tag_mismatch(engine.details, machine) for engine in engines}
    skipped = [(name, why) for name, why in reasons.items() if why is not None]
    if skipped:
        name, why = skipped[0]
        more = f" (and {len(skipped) - 1} more engine(s))" if len(skipped) > 1 else ""
        logger.warning("%s: not using TensorRT engine %s%s: %s", folder, name, more, why)
    return [engine for engine in engines if reasons[engine.path.name] is None]


def onnxruntime_available(device: str) -> bool:
    """onnxruntime is installed and, for CUDA, has its CUDA execution provider (onnxruntime-gpu)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return not device.startswith("cuda") or "CUDAExecutionProvider" in ort.get_available_providers()


def check_device(device: str) -> str:
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise PredictorError(f"device={device!r} but no CUDA GPU is visible; use device='cpu'")
        return device
    raise PredictorError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def load_backend(
    folder: Path,
    config: RobertaConfig,
    *,
    backend: str,
    device: str,
    precision: str | None,
    num_threads: int | None,
    compile: bool = False,
):
    manifest = read_manifest(folder)
    artifacts = artifact_files(folder, manifest)
    is_export = bool(artifacts) or manifest is not None
    engines = [a for a in artifacts if a.format == "tensorrt"]
    if backend == "auto":
        if device.startswith("cuda") and engines and tensorrt_available():
            engines = runnable_engines(engines, device, folder)
        if device.startswith("cuda") and engines and tensorrt_available():
            backend = "tensorrt"
        elif onnx_order(artifacts, precision, device) and onnxruntime_available(device):
            backend = "onnx"
        elif has_weights(folder):
            backend = "torch"
        elif is_export:
            raise PredictorError(
                f"{folder} is an export folder, but no backend can run it here: install onnxruntime "
                f"(pip install 'rtoolkit[onnx]') or pass a model folder"
            )
        else:
            raise PredictorError(
                f"{folder} is neither a model folder (config.json + model.safetensors) nor an export folder "
                f"(model.onnx + {MANIFEST_NAME})"
            )
        logger.info("%s: backend 'auto' chose %s", folder, backend)
    if backend == "torch":
        if not has_weights(folder):
            raise PredictorError(
                f"{folder} holds no PyTorch weights (model.safetensors); it looks like an export folder: "
                f"use backend='onnx' or 'tensorrt', or pass the model folder it was exported from"
            )
        return TorchBackend(folder, config, device=device, precision=precision, compile=compile)
    if backend == "onnx":
        if not any(a.format == "onnx" for a in artifacts):
            raise PredictorError(
                f"{folder} holds no ONNX model; export one with `rtoolkit export {folder} --out DIR` and pass DIR"
            )
        choice = pick(onnx_order(artifacts, precision, device), f"{precision or 'fp32'} ONNX model", folder)
        return onnx_backend(choice, device=device, num_threads=num_threads)
    if backend == "tensorrt":
        if not device.startswith("cuda"):
            raise PredictorError("backend='tensorrt' needs device='cuda'")
        if engines and tensorrt_available():
            from rtoolkit.runtime.tensorrt import tag_mismatch

            machine = machine_tag_for(device)
            reasons = {e.path.name: tag_mismatch(e.details, machine) for e in engines}
            if all(reasons.values()):
                first = next(iter(reasons.items()))
                raise PredictorError(
                    f"{folder}: no TensorRT engine here can run on this machine ({first[0]}: {first[1]}); rebuild "
                    f"one with `rtoolkit export --trt`, or use backend='onnx'"
                )
            engines = [e for e in engines if reasons[e.path.name] is None]
        order = ["fp16", "fp32", "int8"] if precision is None else [precision]
        candidates = [a for p in order for a in engines if a.precision == p]
        choice = pick(candidates, f"{precision} TensorRT engine" if precision else "TensorRT engine", folder)
        return tensorrt_backend(folder, choice, manifest, device=device)
    raise PredictorError(f"backend must be one of {BACKENDS}, got {backend!r}")
