"""Predictor: fill-mask, classification and sentence embeddings over one of three backends.

    predictor = Predictor.from_pretrained("runs/quickstart/final")
    predictor.fill_mask("The old man looked at the <mask> and smiled.")
    # [{"token": 1234, "token_str": " sea", "score": 0.41, "sequence": "The old man looked at the sea ..."}, ...]

`path` is a model folder (from pretrain/finetune, or a Hugging Face RoBERTa folder), served by PyTorch, or an export
folder written by `rtoolkit export` (model.onnx, export_manifest.json, optional TensorRT engines), served by ONNX
Runtime or TensorRT. `backend="auto"` picks the fastest one available for the path: a TensorRT engine on CUDA, then the
optimized ONNX graph, then the plain ONNX graph, then PyTorch.

Every call encodes all texts, sorts them by length into buckets of `batch_size`, pads each bucket only to its own
longest text, runs it, and returns the results in input order. A Predictor holds no per-call state, so one instance
can serve many threads at once (a web server); only a TensorRT execution context is run under a lock.

Shapes: B = batch, T = sequence length, H = hidden size, V = vocabulary, C = labels, N = masked positions.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtoolkit.config import CONFIG_NAME, RobertaConfig
from rtoolkit.tokenizer import MASK, Tokenizer

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "tensorrt")
PRECISIONS = (None, "fp32", "fp16", "bf16", "int8")
POOLINGS = ("mean", "cls")
MANIFEST_NAME = "export_manifest.json"
DEFAULT_BATCH_SIZE = 32

# What each kind of checkpoint can do: the head a folder holds decides the tasks it serves.
FILL_MASK, CLASSIFY, EMBED = "fill-mask", "classify", "embed"
_HEAD_TASKS = {
    "mlm": frozenset({FILL_MASK, EMBED}),
    "classifier": frozenset({CLASSIFY, EMBED}),
    "encoder": frozenset({EMBED}),
}
# Export task (the manifest's "task") -> the Predictor task its graph serves.
_EXPORT_TASKS = {"fill-mask": FILL_MASK, "classification": CLASSIFY, "embedding": EMBED}


class PredictorError(ValueError):
    """Input or a model folder a user has to fix; the message says what is wrong and what was expected."""


# ------------------------------------------------------------------------------------------------ backends
class _TorchBackend:
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
        from rtoolkit.model import RobertaForMaskedLM, RobertaForSequenceClassification, RobertaModel

        if precision not in (None, "fp32", "fp16", "bf16"):
            raise PredictorError(
                f"precision {precision!r} is not available on the torch backend (fp32, or fp16/bf16 on CUDA); "
                f"int8 needs an export folder made with `rtoolkit export --quantize int8`"
            )
        if precision in ("fp16", "bf16") and not device.startswith("cuda"):
            raise PredictorError(f"precision {precision!r} on the torch backend needs device='cuda'")
        self.head = _folder_head(folder, config)
        cls = {"mlm": RobertaForMaskedLM, "classifier": RobertaForSequenceClassification}.get(
            self.head, RobertaModel
        )
        model = cls.from_pretrained(folder)
        if precision in ("fp16", "bf16"):
            model = model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.tasks = _HEAD_TASKS[self.head]
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
        return self.model if self.head == "encoder" else self.model.roberta

    def _run(self, forward: Callable[[], torch.Tensor]) -> np.ndarray:
        """Run `forward` (which ends in a float32 tensor) and bring its result to the host."""
        if not self.compiled:
            return forward().cpu().numpy()
        with self._lock:
            if self.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            return forward().cpu().numpy()

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


class _GraphBackend:
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


def _folder_head(folder: Path, config: RobertaConfig) -> str:
    """ "mlm", "classifier" or "encoder": from config.json's architectures, else from the weight names."""
    arch = (config.architectures or [""])[0]
    if arch.endswith("ForMaskedLM"):
        return "mlm"
    if arch.endswith("ForSequenceClassification"):
        return "classifier"
    if arch == "RobertaModel":
        return "encoder"
    keys = _weight_names(folder)
    if any(k.startswith("lm_head.") for k in keys):
        return "mlm"
    if any(k.startswith("classifier.") for k in keys):
        return "classifier"
    return "encoder"


def _weight_names(folder: Path) -> list[str]:
    """Tensor names of a model folder, read from the safetensors headers (no weights loaded) when possible."""
    from safetensors import safe_open

    from rtoolkit.checkpoint import WEIGHTS_INDEX_NAME, WEIGHTS_NAME, load_state_dict

    if (folder / WEIGHTS_NAME).is_file():
        with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
            return list(f.keys())
    if (folder / WEIGHTS_INDEX_NAME).is_file():
        index = json.loads((folder / WEIGHTS_INDEX_NAME).read_text(encoding="utf-8"))
        return list(index.get("weight_map", {}))
    return list(load_state_dict(folder))


def _has_weights(folder: Path) -> bool:
    from rtoolkit.checkpoint import LEGACY_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

    return any((folder / n).is_file() for n in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, LEGACY_WEIGHTS_NAME))


# ------------------------------------------------------------------------------------- export folders
@dataclass(frozen=True)
class _Artifact:
    """One file of an export folder, as its manifest describes it."""

    path: Path
    format: str  # "onnx" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "int8"
    optimized: bool
    passed: bool | None  # validation result; None when the folder has no manifest
    details: dict[str, Any] | None = None  # the manifest's details (a TensorRT engine's machine tag, ...)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PredictorError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise PredictorError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _artifacts(folder: Path, manifest: dict[str, Any] | None) -> list[_Artifact]:
    """The exported files that exist on disk, from the manifest or (without one) from the standard file names."""
    found: list[_Artifact] = []
    if manifest is not None:
        for i, entry in enumerate(manifest.get("artifacts") or []):
            if not isinstance(entry, dict) or "file" not in entry:
                raise PredictorError(f"{folder / MANIFEST_NAME}: artifacts[{i}] has no 'file' field")
            path = folder / entry["file"]
            if path.is_file():
                found.append(
                    _Artifact(
                        path=path,
                        format=str(entry.get("format", "onnx")),
                        precision=str(entry.get("precision", "fp32")),
                        optimized=bool(entry.get("optimized", False)),
                        passed=entry.get("passed"),
                        details=entry.get("details") if isinstance(entry.get("details"), dict) else None,
                    )
                )
        return found
    standard = {
        "model.onnx": ("fp32", False),
        "model.optimized.onnx": ("fp32", True),
        "model.int8.onnx": ("int8", False),
        "model.fp16.onnx": ("fp16", False),
    }
    for name, (precision, optimized) in standard.items():
        if (folder / name).is_file():
            found.append(_Artifact(folder / name, "onnx", precision, optimized, None))
    found.extend(
        _Artifact(p, "tensorrt", "fp16" if "fp16" in p.name else "fp32", False, None)
        for p in sorted((folder / "engines").glob("*.engine"))
    )
    return found


def _pick(candidates: list[_Artifact], what: str, folder: Path) -> _Artifact:
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


def _onnx_order(artifacts: list[_Artifact], precision: str | None, device: str) -> list[_Artifact]:
    """ONNX files in order of preference: the asked precision, else fp16 on CUDA then fp32; optimized first."""
    if precision is not None:
        prefs = [precision]
    else:  # int8 trades accuracy for speed: only on request
        prefs = ["fp16", "fp32"] if device.startswith("cuda") else ["fp32"]
    wanted = [a for a in artifacts if a.format == "onnx" and a.precision in prefs]
    return sorted(wanted, key=lambda a: (prefs.index(a.precision), not a.optimized))


def _onnx_backend(artifact: _Artifact, *, device: str, num_threads: int | None) -> _GraphBackend:
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
    task = _graph_task(artifact.path, runner.output_names, len(session.get_outputs()[0].shape))
    return _GraphBackend(
        name="onnx",
        run=runner.run,
        task=task,
        artifact=artifact.path,
        precision=artifact.precision,
    )


def _graph_task(path: Path, output_names: list[str], rank: int) -> str:
    """The task an exported graph serves, from its first output: logits (B, T, V) / (B, C), or hidden states."""
    if "last_hidden_state" in output_names:
        return EMBED
    if "logits" in output_names:
        return FILL_MASK if rank == 3 else CLASSIFY
    raise PredictorError(
        f"{path}: expected an output named 'logits' or 'last_hidden_state', found {output_names}"
    )


def _tensorrt_backend(
    folder: Path, artifact: _Artifact, manifest: dict[str, Any] | None, *, device: str
) -> _GraphBackend:
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

    task = _EXPORT_TASKS.get(str((manifest or {}).get("task")))
    if task is None:
        raise PredictorError(
            f"{folder / MANIFEST_NAME}: 'task' must be one of {sorted(_EXPORT_TASKS)} to serve a TensorRT engine"
        )
    # The engine's optimization profile bounds the shapes it runs: (min, opt, max) per input.
    profile = getattr(runner, "profile", {}).get("input_ids")
    if profile:
        max_batch, max_length = profile[2]
    else:
        max_batch, max_length = (manifest or {}).get("max_batch"), (manifest or {}).get("max_seq_len")
    return _GraphBackend(
        name="tensorrt",
        run=run,
        task=task,
        artifact=artifact.path,
        precision=artifact.precision,
        max_batch=int(max_batch) if max_batch else None,
        max_length=int(max_length) if max_length else None,
    )


def _tensorrt_available() -> bool:
    """tensorrt (the library, not only its type stubs) and a CUDA GPU are there."""
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder") and torch.cuda.is_available()


def _machine_tag(device: str):
    """This machine's TensorRT tag (version, GPU, compute capability) for `device`."""
    from rtoolkit.runtime.ort import device_index
    from rtoolkit.runtime.tensorrt import machine_tag

    return machine_tag(device_index(device))


def _runnable_engines(engines: list[_Artifact], device: str, folder: Path) -> list[_Artifact]:
    """The engines built for this machine's GPU and TensorRT version; the others are skipped, with one warning
    (an export folder moved to another GPU falls back to ONNX instead of failing)."""
    from rtoolkit.runtime.tensorrt import tag_mismatch

    machine = _machine_tag(device)
    reasons = {engine.path.name: tag_mismatch(engine.details, machine) for engine in engines}
    skipped = [(name, why) for name, why in reasons.items() if why is not None]
    if skipped:
        name, why = skipped[0]
        more = f" (and {len(skipped) - 1} more engine(s))" if len(skipped) > 1 else ""
        logger.warning("%s: not using TensorRT engine %s%s: %s", folder, name, more, why)
    return [engine for engine in engines if reasons[engine.path.name] is None]


def _onnxruntime_available(device: str) -> bool:
    """onnxruntime is installed and, for CUDA, has its CUDA execution provider (onnxruntime-gpu)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return not device.startswith("cuda") or "CUDAExecutionProvider" in ort.get_available_providers()


def _check_device(device: str) -> str:
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise PredictorError(f"device={device!r} but no CUDA GPU is visible; use device='cpu'")
        return device
    raise PredictorError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _load_backend(
    folder: Path,
    config: RobertaConfig,
    *,
    backend: str,
    device: str,
    precision: str | None,
    num_threads: int | None,
    compile: bool = False,
):
    manifest = _read_manifest(folder)
    artifacts = _artifacts(folder, manifest)
    is_export = bool(artifacts) or manifest is not None
    engines = [a for a in artifacts if a.format == "tensorrt"]
    if backend == "auto":
        if device.startswith("cuda") and engines and _tensorrt_available():
            engines = _runnable_engines(engines, device, folder)
        if device.startswith("cuda") and engines and _tensorrt_available():
            backend = "tensorrt"
        elif _onnx_order(artifacts, precision, device) and _onnxruntime_available(device):
            backend = "onnx"
        elif _has_weights(folder):
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
        if not _has_weights(folder):
            raise PredictorError(
                f"{folder} holds no PyTorch weights (model.safetensors); it looks like an export folder: "
                f"use backend='onnx' or 'tensorrt', or pass the model folder it was exported from"
            )
        return _TorchBackend(folder, config, device=device, precision=precision, compile=compile)
    if backend == "onnx":
        if not any(a.format == "onnx" for a in artifacts):
            raise PredictorError(
                f"{folder} holds no ONNX model; export one with `rtoolkit export {folder} --out DIR` and pass DIR"
            )
        choice = _pick(_onnx_order(artifacts, precision, device), f"{precision or 'fp32'} ONNX model", folder)
        return _onnx_backend(choice, device=device, num_threads=num_threads)
    if backend == "tensorrt":
        if not device.startswith("cuda"):
            raise PredictorError("backend='tensorrt' needs device='cuda'")
        if engines and _tensorrt_available():
            from rtoolkit.runtime.tensorrt import tag_mismatch

            machine = _machine_tag(device)
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
        choice = _pick(candidates, f"{precision} TensorRT engine" if precision else "TensorRT engine", folder)
        return _tensorrt_backend(folder, choice, manifest, device=device)
    raise PredictorError(f"backend must be one of {BACKENDS}, got {backend!r}")


# ------------------------------------------------------------------------------------------------ inputs
def _as_texts(texts: object, name: str) -> tuple[list[str], bool]:
    """A str or a list/tuple of str -> (list, was_single). Empty or non-string input raises PredictorError."""
    if isinstance(texts, str):
        items, single = [texts], True
    elif isinstance(texts, (list, tuple)):
        items, single = list(texts), False
        if not items:
            raise PredictorError(f"{name} is an empty list; pass at least one text")
    else:
        raise PredictorError(f"{name} must be a string or a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(items):
        where = ("the text" if name == "texts" else "the text pair") if single else f"{name}[{i}]"
        if not isinstance(text, str):
            raise PredictorError(f"{where} must be a string, got {type(text).__name__}: {text!r:.60}")
        if not text.strip():
            raise PredictorError(f"{where} is empty; pass some text")
    return items, single


def _buckets(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices sorted by length (longest first, so memory errors come early), cut into batches."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _mask_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each `<mask>` in a text, the whitespace before it included (the token strips it)."""
    spans, at = [], text.find(MASK)
    while at != -1:
        start = len(text[:at].rstrip())
        spans.append((start, at + len(MASK)))
        at = text.find(MASK, at + len(MASK))
    return spans


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------- Predictor
class Predictor:
    """Fill-mask, classification and embeddings from a model or export folder (see the module docstring)."""

    def __init__(
        self,
        backend: _TorchBackend | _GraphBackend,
        tokenizer: Tokenizer,
        config: RobertaConfig,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_length: int | None = None,
        source: str | os.PathLike | None = None,
    ):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise PredictorError(f"batch_size must be a positive integer, got {batch_size!r}")
        limits = [config.max_tokens, tokenizer.model_max_length, backend.max_length]
        if max_length is not None:
            if not isinstance(max_length, int) or max_length < 4:
                raise PredictorError(f"max_length must be an integer >= 4, got {max_length!r}")
            limits.append(max_length)
        self._backend = backend
        self.tokenizer = tokenizer
        self.config = config
        self.batch_size = min(batch_size, backend.max_batch) if backend.max_batch else batch_size
        self.max_length = min(n for n in limits if n)
        self.source = Path(source) if source is not None else None

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        backend: str = "auto",
        device: str = "cpu",
        precision: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_length: int | None = None,
        num_threads: int | None = None,
        compile: bool = False,
    ) -> Predictor:
        """Load a model folder or an export folder.

        backend: "auto" (fastest available), "torch", "onnx" or "tensorrt".
        device: "cpu", "cuda" or "cuda:N".
        precision: None (fp32; fp16 when exported for CUDA), or "fp32" / "fp16" / "int8" to pick that export;
        the torch backend on CUDA also runs "fp16" and "bf16".
        batch_size: texts per forward pass. max_length: token limit, `<s>` and `</s>` included (default: the
        model's, 512 for roberta-base). num_threads: ONNX Runtime intra-op threads (default: all cores).
        compile: torch backend only: torch.compile the encoder, with CUDA graphs on CUDA (the first call of each
        padded shape compiles; later calls replay).
        """
        if backend not in BACKENDS:
            raise PredictorError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if precision not in PRECISIONS:
            raise PredictorError(
                f"precision must be one of fp32, fp16, bf16, int8 (or None), got {precision!r}"
            )
        device = _check_device(device)
        from rtoolkit.checkpoint import resolve_model_dir

        folder = resolve_model_dir(path)
        if not (folder / CONFIG_NAME).is_file():
            raise PredictorError(
                f"{folder} has no {CONFIG_NAME}: expected a model folder (from pretrain/finetune or Hugging Face) "
                f"or an export folder (from `rtoolkit export`)"
            )
        config = RobertaConfig.from_pretrained(folder)
        tokenizer = Tokenizer.from_pretrained(folder)
        if tokenizer.vocab_size > config.vocab_size:
            raise PredictorError(
                f"{folder}: the tokenizer has {tokenizer.vocab_size} ids but the model only "
                f"{config.vocab_size} embedding rows; they do not belong together"
            )
        impl = _load_backend(
            folder, config, backend=backend, device=device, precision=precision, num_threads=num_threads,
            compile=compile,
        )  # fmt: skip
        if compile and impl.name != "torch":
            raise PredictorError(f"compile=True needs the torch backend; {folder} is served by {impl.name}")
        logger.info("%s: serving %s with %s (%s)", folder, sorted(impl.tasks), impl.name, impl.artifact)
        return cls(impl, tokenizer, config, batch_size=batch_size, max_length=max_length, source=folder)

    # ------------------------------------------------------------------------------------------- fields
    @property
    def backend(self) -> str:
        """ "torch", "onnx" or "tensorrt"."""
        return self._backend.name

    @property
    def artifact(self) -> Path:
        """The file or folder the backend runs (model folder, .onnx file or engine)."""
        return self._backend.artifact

    @property
    def precision(self) -> str:
        return self._backend.precision

    @property
    def tasks(self) -> frozenset[str]:
        """What this checkpoint can do: a subset of {"fill-mask", "classify", "embed"}."""
        return self._backend.tasks

    @property
    def labels(self) -> list[str]:
        """Class names in logit order (LABEL_i when the config names none)."""
        names = self.config.id2label or {}
        return [names.get(i, f"LABEL_{i}") for i in range(self.config.num_labels)]

    def __repr__(self) -> str:
        return (
            f"Predictor(source={str(self.source)!r}, backend={self.backend!r}, precision={self.precision!r}, "
            f"tasks={sorted(self.tasks)}, batch_size={self.batch_size}, max_length={self.max_length})"
        )

    # -------------------------------------------------------------------------------------------- tasks
    def fill_mask(
        self, texts: str | Sequence[str], *, top_k: int = 5, truncation: bool = True
    ) -> list[dict[str, Any]] | list[Any]:
        """Predict the token behind each `<mask>`.

        A text with one `<mask>` gives a list of `top_k` dicts {"token": id, "token_str": str, "score": float,
        "sequence": str} sorted by score (Hugging Face's pipeline shape); a text with several masks gives one such
        list per mask; a list of texts gives a list of those results, in input order.
        """
        self._require(FILL_MASK, "fill_mask")
        items, single = _as_texts(texts, "texts")
        if not isinstance(top_k, int) or top_k < 1:
            raise PredictorError(f"top_k must be a positive integer, got {top_k!r}")
        for i, text in enumerate(items):
            if MASK not in text:
                where = "the text" if single else f"texts[{i}]"
                raise PredictorError(f"{where} has no {MASK} token to fill: {text!r:.80}")
        encoded = self._encode(items, None, truncation=truncation)
        mask_id = self.tokenizer.mask_token_id
        for i, (text, ids) in enumerate(zip(items, encoded, strict=True)):
            if ids.count(mask_id) < text.count(MASK):
                raise PredictorError(
                    f"texts[{i}]: a {MASK} lies beyond the {self.max_length}-token limit and was cut off; "
                    f"shorten the text or move the {MASK} earlier"
                )
        top_k = min(top_k, self.tokenizer.vocab_size)
        results: list[Any] = [None] * len(items)
        for batch in _buckets([len(e) for e in encoded], self.batch_size):
            input_ids, attention_mask = self._pad([encoded[i] for i in batch])
            rows, cols = np.nonzero(input_ids == mask_id)  # (N,), (N,) in row-major order
            # Only the tokenizer's ids are real words: the model may have spare embedding rows beyond them.
            logits = self._backend.mask_logits(input_ids, attention_mask, rows, cols)[
                :, : self.tokenizer.vocab_size
            ]
            probs = _softmax(logits.astype(np.float64))  # (N, V)
            best = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]  # (N, k)
            per_row: dict[int, list[list[dict[str, Any]]]] = {}
            for n, (row, col) in enumerate(zip(rows, cols, strict=True)):
                ids = encoded[batch[row]]
                per_row.setdefault(int(row), []).append(
                    [
                        self._filled(items[batch[row]], ids, int(col), int(t), float(probs[n, t]))
                        for t in best[n]
                    ]
                )
            for row, index in enumerate(batch):
                masks = per_row[row]
                results[index] = masks[0] if len(masks) == 1 else masks
        return results[0] if single else results

    def _filled(self, text: str, ids: list[int], position: int, token: int, score: float) -> dict[str, Any]:
        """One prediction: the token, its text, its probability and the text with this mask filled."""
        tok = self.tokenizer
        token_str = tok.decode([token])
        if ids.count(tok.mask_token_id) == 1:
            filled = list(ids)
            filled[position] = token
            sequence = tok.decode(filled, skip_special_tokens=True)
        else:  # fill the k-th mask in the text itself, so the other masks stay visible
            k = ids[:position].count(tok.mask_token_id)
            start, end = _mask_spans(text)[k]
            sequence = text[:start] + token_str + text[end:]
        return {"token": token, "token_str": token_str, "score": score, "sequence": sequence}

    def classify(
        self,
        texts: str | Sequence[str],
        text_pairs: str | Sequence[str] | None = None,
        *,
        top_k: int | None = 1,
        truncation: bool = True,
    ) -> Any:
        """Label texts (or text pairs, encoded `<s> A </s></s> B </s>`).

        top_k=1: {"label", "score"} per text; top_k=k: the k best as a list of such dicts; top_k=None: every
        label, best first. Scores are softmax probabilities (sigmoid for multi-label models). Regression models
        (num_labels 1) give {"score": value} per text. A single text gives one result, a list a list of them.
        """
        self._require(CLASSIFY, "classify")
        items, single = _as_texts(texts, "texts")
        pairs = None
        if text_pairs is not None:
            pairs, pair_single = _as_texts(text_pairs, "text_pairs")
            if len(pairs) != len(items) or pair_single != single:
                raise PredictorError(
                    f"got {len(items)} text(s) but {len(pairs)} text_pair(s); pass one pair per text"
                )
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise PredictorError(f"top_k must be a positive integer or None (all labels), got {top_k!r}")
        encoded = self._encode(items, pairs, truncation=truncation)
        logits = np.zeros((len(items), self.config.num_labels), dtype=np.float32)  # (N, C)
        for batch in _buckets([len(e) for e in encoded], self.batch_size):
            out = self._backend.class_logits(*self._pad([encoded[i] for i in batch]))  # (B, C)
            if out.shape[-1] != self.config.num_labels:
                raise PredictorError(
                    f"the model gives {out.shape[-1]} logits but config.json names {self.config.num_labels} labels"
                )
            logits[batch] = out
        results = [self._labels(row, top_k) for row in logits]
        return results[0] if single else results

    def _labels(self, logits: np.ndarray, top_k: int | None) -> Any:
        if self.config.is_regression:
            return {"score": float(logits[0])} if logits.shape[0] == 1 else {"scores": logits.tolist()}
        if self.config.problem_type == "multi_label_classification":
            scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        else:
            scores = _softmax(logits.astype(np.float64))
        order = np.argsort(-scores, kind="stable")
        ranked = [{"label": self.labels[i], "score": float(scores[i])} for i in order]
        if top_k == 1:
            return ranked[0]
        return ranked if top_k is None else ranked[:top_k]

    def embed(
        self,
        texts: str | Sequence[str],
        *,
        pooling: str = "mean",
        normalize: bool = True,
        truncation: bool = True,
    ) -> np.ndarray:
        """Sentence embeddings from the encoder's last layer: (N, H) float32 for a list, (H,) for one text.

        pooling "mean" averages the hidden states of all tokens (`<s>` and `</s>` included, padding excluded);
        "cls" takes the `<s>` state. normalize=True scales each vector to unit L2 norm (dot product = cosine).
        """
        self._require(EMBED, "embed")
        items, single = _as_texts(texts, "texts")
        if pooling not in POOLINGS:
            raise PredictorError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        encoded = self._encode(items, None, truncation=truncation)
        out = np.zeros((len(items), self.config.hidden_size), dtype=np.float32)  # (N, H)
        for batch in _buckets([len(e) for e in encoded], self.batch_size):
            input_ids, attention_mask = self._pad([encoded[i] for i in batch])
            hidden = self._backend.hidden_states(input_ids, attention_mask)  # (B, T, H)
            if pooling == "cls":
                pooled = hidden[:, 0]  # (B, H)
            else:
                weights = attention_mask[..., None].astype(np.float32)  # (B, T, 1)
                pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)  # (B, H)
            out[batch] = pooled
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        return out[0] if single else out

    # ------------------------------------------------------------------------------------------ helpers
    def _require(self, task: str, method: str) -> None:
        if task in self.tasks:
            return
        if self.backend == "torch":
            what = {"mlm": "a masked-LM head", "classifier": "a classification head", "encoder": "no head"}
            has = what[self._backend.head]
            hint = {
                FILL_MASK: "load a pretrained (masked-LM) model folder",
                CLASSIFY: "load a finetuned classifier (rtoolkit finetune)",
                EMBED: "",
            }[task]
            raise PredictorError(f"{method}: {self.source} has {has}, so it cannot do {task}; {hint}")
        export_task = next(k for k, v in _EXPORT_TASKS.items() if v == self._backend.task)
        wanted = next(k for k, v in _EXPORT_TASKS.items() if v == task)
        raise PredictorError(
            f"{method}: {self.source} was exported for {export_task!r}, so it cannot do {task}; export with "
            f"--task {wanted}, or load the model folder with backend='torch'"
        )

    def _encode(self, texts: list[str], pairs: list[str] | None, *, truncation: bool) -> list[list[int]]:
        """Token ids with specials; texts over `max_length` are truncated (with a warning) or rejected."""
        encoded = self.tokenizer.encode_batch(texts, pairs, max_length=None)
        too_long = [i for i, ids in enumerate(encoded) if len(ids) > self.max_length]
        if not too_long:
            return encoded
        first = too_long[0]
        detail = f"texts[{first}] has {len(encoded[first])} tokens"
        if not truncation:
            raise PredictorError(
                f"{len(too_long)} text(s) exceed the {self.max_length}-token limit ({detail}); shorten them or "
                f"pass truncation=True"
            )
        logger.warning(
            "%d text(s) exceed the %d-token limit and were truncated (%s); pass truncation=False to raise instead",
            len(too_long),
            self.max_length,
            detail,
        )
        cut = self.tokenizer.encode_batch(
            [texts[i] for i in too_long],
            None if pairs is None else [pairs[i] for i in too_long],
            max_length=self.max_length,
        )
        for i, ids in zip(too_long, cut, strict=True):
            encoded[i] = ids
        return encoded

    def _pad(self, sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad to the longest in the batch: (B, T) int64 input_ids and attention_mask."""
        width = self._backend.pad_width(max(len(s) for s in sequences), self.max_length)
        input_ids = np.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(sequences), width), dtype=np.int64)
        for row, seq in enumerate(sequences):
            input_ids[row, : len(seq)] = seq
            attention_mask[row, : len(seq)] = 1
        return input_ids, attention_mask


__all__ = ["Predictor", "PredictorError", "BACKENDS"]
