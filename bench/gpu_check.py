"""`make gpu-check`: prove rtoolkit's GPU half on one NVIDIA card in one command, and measure it.

For a bare NVIDIA machine that already has PyTorch with CUDA and no internet. Steps, in order (each is timed, and a
failing step does not stop the others):

    setup              check the packages rtoolkit needs (tokenizers, safetensors, click, tqdm, numpy), install
                       rtoolkit from this checkout with `pip install --no-deps -e .`, record card, driver, versions
    tests              the `gpu`-marked tests (`pytest -m gpu`; TensorRT ones skip without tensorrt)
    pretrain_mfu       roberta-base, seq 512, bf16: rtoolkit eager and --compile beside transformers'
                       RobertaForMaskedLM (SDPA) on the same card: tokens/s and MFU (FLOPs with the masked-rows
                       LM head, against the card's dense bf16 peak)
    pretrain_run       `pretrain()` on the bundled books on the GPU (roberta-base, bf16, DataLoader workers):
                       the loss falls, no NaN/inf, and a run resumed from its middle checkpoint gives the same
                       losses (deterministic kernels for this step)
    finetune_padding   SST-2 finetuning steps/s, padded random batches vs length-grouped (padding-free) ones
    predictor_latency  `Predictor` on CUDA, batch 1 x 128 tokens: torch fp32, bf16, fp16 and fp16 compiled with
                       CUDA graphs, beside transformers eager on the same card
    onnxruntime_gpu    ONNX Runtime's CUDA provider: run where onnxruntime-gpu is installed, else skipped
    tensorrt           `export --trt` and the engine's latency: run where tensorrt is installed, else skipped

Writes OUT/results.json (every number, each step's status and reason) and OUT/results.md (the tables), and prints
the tables. `--dry-run` runs every step at toy sizes on whatever device there is (a CPU is fine): the steps that
need CUDA skip with a reason. Exit status 1 when a step failed.

    make gpu-check                                    # python3 bench/gpu_check.py --install --out runs/gpu-check
    python bench/gpu_check.py --dry-run --out runs/gpu-check-dry
    python bench/gpu_check.py --only pretrain_mfu,predictor_latency
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ("torch", "numpy", "tokenizers", "safetensors", "click", "tqdm", "sentencex")
# Where `make gpu-wheels` puts the wheels of REQUIRED packages a GPU image may lack (installed with --install).
WHEELS = REPO / ".gpu-data" / "wheels"
OPTIONAL = {
    "transformers": "the transformers baselines",
    "pytest": "the gpu tests",
    "onnx": "ONNX export",
    "onnxruntime": "ONNX Runtime",
    "tensorrt": "TensorRT engines",
}
STEPS = (
    "setup",
    "tests",
    "pretrain_mfu",
    "pretrain_run",
    "finetune_padding",
    "predictor_latency",
    "onnxruntime_gpu",
    "tensorrt",
)


class Skip(Exception):
    """A step that cannot run here; the message says why."""


@dataclass
class Check:
    out: Path
    work: Path  # models, runs and exports the steps make (large; kept apart from the results)
    data_root: Path
    dry_run: bool
    device: Any = None  # torch.device, set by setup
    notes: dict[str, Any] = field(default_factory=dict)  # what one step leaves for the next (tokenizer, ...)

    @property
    def cuda(self) -> bool:
        return self.device is not None and self.device.type == "cuda"

    def need_cuda(self, what: str) -> None:
        if not self.cuda:
            raise Skip(f"{what} needs a CUDA GPU (none here)")


def _have(module: str) -> bool:
    if module == "tensorrt":  # its type stubs alone install an empty `tensorrt` namespace package
        try:
            import tensorrt
        except ImportError:
            return False
        return hasattr(tensorrt, "Builder")
    return importlib.util.find_spec(module) is not None


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(Exception):
        torch._dynamo.reset()  # compiled code of one step never counts against the next step's cache


# ---------------------------------------------------------------------------------------------------- setup
def require_packages() -> None:
    """Stop with one clear line when a package rtoolkit needs is missing (nothing is downloaded here)."""
    missing = [m for m in REQUIRED if not _have(m)]
    if missing:
        raise SystemExit(
            f"gpu-check: missing required packages: {', '.join(missing)}. This check expects a machine with PyTorch "
            f"(CUDA build) and {', '.join(REQUIRED[1:])}; install them, e.g. pip install {' '.join(missing)}"
        )


def install_and_restart() -> None:
    """pip install --no-deps -e . (no downloads: the machine's setuptools builds it), then start this script again
    in a fresh interpreter, which sees the editable install. Required packages the machine lacks are installed from
    the wheels `make gpu-wheels` downloaded into .gpu-data/wheels, when there are some."""
    missing = [m for m in REQUIRED if not _have(m)]
    if missing and WHEELS.is_dir():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--find-links",
             str(WHEELS), *missing],
            check=False,
        )  # fmt: skip
        importlib.invalidate_caches()
    require_packages()
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", str(REPO)],
        capture_output=True, text=True,
    )  # fmt: skip
    status = "ok" if done.returncode == 0 else f"FAILED: {done.stderr.strip()[-1500:]}"
    print(f"gpu-check: pip install --no-deps -e . {status}", flush=True)
    os.environ["RTOOLKIT_GPU_CHECK_INSTALL"] = status
    argv = [a for a in sys.argv if a != "--install"]
    os.execv(sys.executable, [sys.executable, *argv])


def step_setup(check: Check) -> dict:
    require_packages()
    info: dict[str, Any] = {"missing_optional": {m: why for m, why in OPTIONAL.items() if not _have(m)}}
    if os.environ.get("RTOOLKIT_GPU_CHECK_INSTALL"):
        info["install"] = "pip install --no-deps -e . " + os.environ["RTOOLKIT_GPU_CHECK_INSTALL"][:1500]
    found = subprocess.run(
        [sys.executable, "-c", "import rtoolkit, sys; sys.stdout.write(rtoolkit.__file__)"],
        capture_output=True, text=True, cwd="/",
    )  # fmt: skip
    if found.returncode != 0 or not found.stdout.startswith(str(REPO)):
        # Not installed from this checkout: the core still imports from the repository root (rtoolkit.export,
        # which the install maps from export/, does not).
        sys.path.insert(0, str(REPO))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        info["import"] = (
            f"from {REPO} via PYTHONPATH (not installed: {found.stderr.strip()[-300:] or found.stdout})"
        )
    import torch
    from pretrain_throughput import peak_tflops

    check.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info.update(
        python=platform.python_version(),
        torch=torch.__version__,
        cuda_runtime=torch.version.cuda,
        device=str(check.device),
        dry_run=check.dry_run,
    )
    for name in ("transformers", "onnxruntime", "tensorrt"):
        if _have(name):
            with contextlib.suppress(Exception):
                info[name] = __import__(name).__version__
    if check.cuda:
        props = torch.cuda.get_device_properties(check.device)
        info.update(
            gpu=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            cudnn=torch.backends.cudnn.version(),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
        peak, source = peak_tflops(props.name)
        check.notes["peak"] = peak
        info.update(peak_bf16_tflops=peak, peak_source=source)
        if shutil.which("nvidia-smi"):
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
                capture_output=True, text=True,
            )  # fmt: skip
            info["nvidia_smi"] = smi.stdout.strip()
            with contextlib.suppress(IndexError):
                info["driver"] = smi.stdout.split(",")[1].strip()
    elif not check.dry_run:
        raise SystemExit(
            "gpu-check: no CUDA GPU is visible; run with --dry-run to exercise the steps on a CPU"
        )
    return info


# ---------------------------------------------------------------------------------------------------- tests
def step_tests(check: Check) -> dict:
    if not _have("pytest"):
        raise Skip("pytest is not installed")
    junit = check.out / "junit-gpu.xml"
    env = {**os.environ, "RTOOLKIT_TEST_DATA": str(check.data_root)}
    env.pop("CI", None)  # absent data skips here (the real-data tests run in CI)
    # Only the files holding gpu tests: the others may import what this machine lacks (gradio, playwright).
    files = sorted(
        str(p.relative_to(REPO))
        for p in (REPO / "tests").rglob("test_*.py")
        if "mark.gpu" in p.read_text(encoding="utf-8")
    )
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
               f"--junitxml={junit}", *files]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    (check.out / "tests-gpu.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if not junit.is_file():
        raise RuntimeError(f"pytest did not run (exit {done.returncode}): {done.stderr[-1500:]}")
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    cases = []
    for case in suite.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = f"{tag}: {(node.get('message') or '')[:160]}"
        cases.append(f"{case.get('classname', '').split('.')[-1]}::{case.get('name')} {outcome}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    result = {**counts, "cases": cases, "exit_code": done.returncode}
    if counts["failures"] or counts["errors"]:
        result["failed"] = f"{counts['failures']} failed, {counts['errors']} errors (see tests-gpu.log)"
    return result


# --------------------------------------------------------------------------------------------- pretraining
def step_pretrain_mfu(check: Check) -> dict:
    if not _have("transformers"):
        raise Skip("transformers is not installed (it is the baseline)")
    from pretrain_throughput import bench_config, measure

    from rtoolkit.config import RobertaConfig

    if check.cuda:
        config, seq, batch, precision, steps, warmup = bench_config("base"), 512, 32, "bf16", 12, 3
        systems = ("rtoolkit", "rtoolkit-compiled", "transformers")
    else:
        config = RobertaConfig.tiny(vocab_size=1000)
        seq, batch, precision, steps, warmup = 64, 4, "fp32", 2, 1
        systems = ("rtoolkit", "transformers")
    result = measure(
        config=config, device=check.device, seq_len=seq, batch_size=batch, precision=precision, steps=steps,
        warmup=warmup, systems=systems, peak=check.notes.get("peak"),
    )  # fmt: skip
    if not check.cuda:
        result["not_run"] = {"rtoolkit-compiled": "compile is measured on CUDA only (dry run on a CPU)"}
    _free_memory()
    return result


def _train_records(out: Path) -> list[dict]:
    from rtoolkit.train.loop import read_metrics

    return [r for r in read_metrics(out / "metrics.jsonl") if "eval" not in r]


def step_pretrain_run(check: Check, *, steps: int) -> dict:
    """Runs in a child process: deterministic cuBLAS needs CUBLAS_WORKSPACE_CONFIG before CUDA starts, and that
    setting must not slow the other steps' matmuls."""
    result_file = check.out / "pretrain_run.json"
    result_file.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "pretrain_run", "--out", str(check.out),
               "--work", str(check.work), "--data-root", str(check.data_root), "--pretrain-steps", str(steps)]  # fmt: skip
    if check.dry_run:
        command.append("--dry-run")
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    (check.out / "pretrain_run.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if not result_file.is_file():
        raise RuntimeError(f"the pretraining child exited {done.returncode}: {done.stderr.strip()[-1500:]}")
    result = json.loads(result_file.read_text(encoding="utf-8"))
    result_file.unlink()
    check.notes["tokenizer_dir"] = check.work / "pretrain" / "straight" / "sample" / "data" / "tokenizer"
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def run_pretrain(check: Check, *, steps: int) -> dict:
    import torch

    from rtoolkit.train.loop import read_metrics
    from rtoolkit.train.pretrain import PretrainConfig, pretrain

    root = check.work / "pretrain"
    shutil.rmtree(root, ignore_errors=True)
    half = steps // 2
    if check.cuda:
        sizes = dict(
            model_config="base", seq_len=512, batch_size=32, micro_batch_size=32, lr=3e-4, precision="bf16"
        )
    else:
        sizes = dict(
            model_config="tiny", seq_len=64, batch_size=8, micro_batch_size=4, lr=1e-3, precision="fp32"
        )
    # Fixed-size blocks (--format none): padding-free batches of one shape, the flash-attention path; the recorded
    # run in docs/benchmarks.md used them (they were the full-sentences packing then).
    common = dict(
        max_steps=steps, warmup_steps=max(1, steps // 10), save_every=half, eval_every=0, log_every=1,
        progress=False, format="none", **sizes,
    )  # fmt: skip
    deterministic = "strict"
    straight, resumed = root / "straight", root / "resumed"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.use_deterministic_algorithms(True)
        try:
            t0 = time.perf_counter()
            try:
                pretrain(PretrainConfig(out=straight, **common))
            except RuntimeError as exc:  # an op without a deterministic kernel: run with the usual kernels
                if "deterministic" not in str(exc):
                    raise
                deterministic = f"off ({str(exc).splitlines()[0][:200]})"
                torch.use_deterministic_algorithms(False)
                shutil.rmtree(straight, ignore_errors=True)
                t0 = time.perf_counter()
                pretrain(PretrainConfig(out=straight, **common))
            seconds = time.perf_counter() - t0
            # The same run, interrupted after its middle checkpoint and resumed: what a restarted job does.
            (resumed / "checkpoints").mkdir(parents=True)
            middle = f"step-{half:06d}"
            shutil.copytree(straight / "checkpoints" / middle, resumed / "checkpoints" / middle)
            shutil.copy(straight / "run_config.json", resumed / "run_config.json")
            data = straight / "sample" / "data"
            pretrain(PretrainConfig(out=resumed, data=data, resume=True, **common))
        finally:
            torch.use_deterministic_algorithms(False)
    notes = sorted(
        {str(w.message).splitlines()[0][:200] for w in caught if "determinis" in str(w.message).lower()}
    )
    if notes and deterministic == "strict":
        deterministic = f"partial ({'; '.join(notes)})"
    a, b = _train_records(straight), _train_records(resumed)
    resumed_loss = {r["step"]: r["loss"] for r in b}
    after = [
        (r["loss"], resumed_loss[r["step"]]) for r in a if r["step"] > half and r["step"] in resumed_loss
    ]
    losses = [r["loss"] for r in a]
    evals = [r for r in read_metrics(straight / "metrics.jsonl") if r.get("eval") == "valid"]
    result = {
        "config": sizes,
        "steps": steps,
        "seconds": round(seconds, 1),
        "tokens_per_s_last": a[-1].get("tokens_per_s"),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
        "valid_loss_start_end": [round(evals[0]["loss"], 4), round(evals[-1]["loss"], 4)] if evals else None,
        "all_finite": all(map(lambda x: x == x and abs(x) != float("inf"), losses)),
        "skipped_steps": a[-1].get("skipped", 0),
        "deterministic_kernels": deterministic,
        "resumed_steps_compared": len(after),
        "resume_first_step_equal": bool(after) and after[0][0] == after[0][1],
        "resume_max_abs_diff": max((abs(x - y) for x, y in after), default=None),
    }
    problems = []
    if not result["all_finite"] or result["skipped_steps"]:
        problems.append("non-finite losses")
    if not losses[-1] < losses[0]:
        problems.append("the loss did not fall")
    if len(after) != steps - half:
        problems.append(f"compared {len(after)} resumed steps, expected {steps - half}")
    elif not result["resume_first_step_equal"]:
        problems.append(f"the first resumed step's loss differs: {after[0][0]!r} vs {after[0][1]!r}")
    elif deterministic == "strict" and result["resume_max_abs_diff"] != 0.0:
        problems.append(f"resumed losses differ by up to {result['resume_max_abs_diff']:.3g}")
    if problems:
        result["failed"] = "; ".join(problems)
    _free_memory()
    return result


# -------------------------------------------------------------------------------------------- finetuning
def _tokenizer(check: Check):
    from finetune_padding import sample_tokenizer

    from rtoolkit.tokenizer import Tokenizer

    folder = check.notes.get("tokenizer_dir")
    if folder is not None and (Path(folder) / "tokenizer.json").is_file():
        return Tokenizer.from_pretrained(folder)
    return sample_tokenizer(check.work)


def step_finetune_padding(check: Check) -> dict:
    from finetune_padding import measure

    from rtoolkit.config import RobertaConfig

    data_dir = check.data_root / "sst2"
    if not (data_dir / "train.tsv").is_file():
        raise Skip(f"SST-2 not found at {data_dir} (pass --data-root)")
    tokenizer = _tokenizer(check)
    if check.cuda:
        config = RobertaConfig.preset("base", vocab_size=tokenizer.vocab_size, num_labels=2)
        precision, steps, warmup = "bf16", 40, 5
    else:
        config = RobertaConfig.tiny(vocab_size=tokenizer.vocab_size, num_labels=2)
        precision, steps, warmup = "fp32", 3, 1
    result = measure(
        config=config, tokenizer=tokenizer, data_dir=data_dir, device=check.device, precision=precision,
        batch_size=32, steps=steps, warmup=warmup,
    )  # fmt: skip
    _free_memory()
    return result


# ---------------------------------------------------------------------------------------------- serving
def _classifier_folder(check: Check, *, base: bool) -> tuple[Path, str]:
    """A roberta-base-size (or tiny) 2-label classifier folder with the sample tokenizer, and a text of exactly
    128 tokens (<s> and </s> included)."""
    import torch

    from rtoolkit.config import RobertaConfig
    from rtoolkit.model import RobertaForSequenceClassification
    from rtoolkit.train.pretrain import sample_files

    tokenizer = _tokenizer(check)
    folder = check.work / ("classifier-base" if base else "classifier-tiny")
    if not (folder / "config.json").is_file():
        labels = {"id2label": {0: "negative", 1: "positive"}}
        config = (
            RobertaConfig.preset("base", num_labels=2, **labels)  # 50,265 rows, as roberta-base
            if base
            else RobertaConfig.tiny(vocab_size=tokenizer.vocab_size, num_labels=2, **labels)
        )
        torch.manual_seed(0)
        RobertaForSequenceClassification(config).eval().save_pretrained(folder, tokenizer=tokenizer)
    prose = " ".join(sample_files()[0].read_text(encoding="utf-8").split()[500:900])
    ids = tokenizer.encode(prose, max_length=None, add_special_tokens=False)
    for k in range(126, 90, -1):  # a cut that decodes and re-encodes to exactly 126 tokens + <s> </s>
        text = tokenizer.decode(ids[:k]).strip()
        if len(tokenizer.encode(text, max_length=None)) == 128:
            return folder, text
    raise RuntimeError("could not make a 128-token text from the sample books")


def _latency(call: Callable[[], Any], *, warmup: int, iters: int) -> dict:
    import torch

    for _ in range(warmup):
        call()
    times = []
    for _ in range(iters):
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "median_ms": round(statistics.median(times) * 1e3, 3),
        "p90_ms": round(times[int(0.9 * len(times))] * 1e3, 3),
    }


def step_predictor_latency(check: Check) -> dict:
    import numpy as np
    import torch

    from rtoolkit.predictor import Predictor

    folder, text = _classifier_folder(check, base=check.cuda)
    device = "cuda" if check.cuda else "cpu"
    warmup, iters = (10, 200) if check.cuda else (1, 5)
    variants = [("torch fp32", None, False)]
    not_run = {}
    if check.cuda:
        variants += [
            ("torch bf16", "bf16", False),
            ("torch fp16", "fp16", False),
            ("torch fp16 + CUDA graphs", "fp16", True),
        ]
    else:
        for name in ("torch bf16", "torch fp16", "torch fp16 + CUDA graphs"):
            not_run[name] = "needs a CUDA GPU"
    result: dict[str, Any] = {"model": "roberta-base size, 2 labels" if check.cuda else "tiny", "tokens": 128,
                              "batch": 1, "variants": {}, "not_run": not_run}  # fmt: skip
    reference = None
    for name, precision, compiled in variants:
        predictor = Predictor.from_pretrained(
            folder, backend="torch", device=device, precision=precision, compile=compiled
        )
        t0 = time.perf_counter()
        scores = predictor.classify(text, top_k=None)
        first_call_s = time.perf_counter() - t0
        probs = np.array([s["score"] for s in sorted(scores, key=lambda s: s["label"])])
        reference = probs if reference is None else reference
        entry = _latency(lambda p=predictor: p.classify(text), warmup=warmup, iters=iters)
        entry.update(
            first_call_s=round(first_call_s, 2), max_prob_diff_vs_fp32=float(np.abs(probs - reference).max())
        )
        result["variants"][name] = entry
        del predictor
        _free_memory()
    if _have("transformers"):
        import transformers

        from rtoolkit.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_pretrained(folder)
        for name, dtype in [
            ("transformers eager fp32", torch.float32),
            ("transformers eager fp16", torch.float16),
        ]:
            if dtype == torch.float16 and not check.cuda:
                not_run[name] = "needs a CUDA GPU"
                continue
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                folder, attn_implementation="eager", dtype=dtype
            ).to(device).eval()  # fmt: skip

            @torch.inference_mode()
            def call(model=model):
                ids = torch.tensor([tokenizer.encode(text)], device=device)
                return model(input_ids=ids).logits.float().softmax(-1).cpu()

            result["variants"][name] = _latency(call, warmup=warmup, iters=iters)
            del model
            _free_memory()
    else:
        not_run["transformers eager"] = "transformers is not installed"
    return result


def step_onnxruntime_gpu(check: Check) -> dict:
    check.need_cuda("ONNX Runtime's CUDA provider")
    if not _have("onnxruntime"):
        raise Skip("onnxruntime is not installed")
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        raise Skip(
            f"onnxruntime {ort.__version__} has no CUDA provider (providers: {providers}); install onnxruntime-gpu"
        )
    from rtoolkit.export.pipeline import export

    from rtoolkit.predictor import Predictor

    folder, text = _classifier_folder(check, base=True)
    out = check.work / "export-ort"
    shutil.rmtree(out, ignore_errors=True)
    export(folder, out, fp16=True)
    result: dict[str, Any] = {"variants": {}}
    for precision in ("fp32", "fp16"):
        predictor = Predictor.from_pretrained(out, backend="onnx", device="cuda", precision=precision)
        result["variants"][f"onnxruntime-gpu {precision}"] = _latency(
            lambda p=predictor: p.classify(text), warmup=10, iters=200
        )
    return result


def step_tensorrt(check: Check) -> dict:
    check.need_cuda("TensorRT")
    if not _have("tensorrt"):
        raise Skip(
            "tensorrt is not installed on this machine (pip install 'rtoolkit[gpu]' where its wheels fit)"
        )
    from rtoolkit.export.pipeline import export

    from rtoolkit.predictor import Predictor

    folder, text = _classifier_folder(check, base=True)
    out = check.work / "export-trt"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    export(
        folder, out, fp16=True, trt=True
    )  # validated against model.onnx, as `rtoolkit export --fp16 --trt`
    build_s = time.perf_counter() - t0
    predictor = Predictor.from_pretrained(out, backend="tensorrt", device="cuda")
    return {
        "build_s": round(build_s, 1),
        "variants": {"tensorrt fp16": _latency(lambda: predictor.classify(text), warmup=10, iters=200)},
    }


# ------------------------------------------------------------------------------------------------ report
def _markdown(results: dict) -> str:
    steps = results["steps"]
    setup = steps.get("setup", {})
    lines = [
        "# gpu-check results",
        "",
        f"{results['finished']} · {setup.get('gpu', setup.get('device', '?'))} · driver {setup.get('driver', '-')} · "
        f"torch {setup.get('torch', '?')} (CUDA {setup.get('cuda_runtime', '-')}) · transformers "
        f"{setup.get('transformers', '-')}{' · DRY RUN' if results['dry_run'] else ''}",
        "",
        "| step | status | seconds | note |",
        "|---|---|---|---|",
    ]
    for name, step in steps.items():
        note = step.get("reason") or step.get("failed") or step.get("error", "")
        lines.append(f"| {name} | {step['status']} | {step.get('seconds', '')} | {str(note)[:160]} |")
    mfu = steps.get("pretrain_mfu", {})
    if mfu.get("systems"):
        lines += ["", f"**Pretraining** ({mfu['config']}, seq {mfu['seq_len']}, batch {mfu['batch_size']}, "
                  f"{mfu['precision']}; {mfu['model_gflop_per_token']} GFLOP/token; peak {mfu['peak_tflops']} TFLOP/s)", "",
                  "| system | step ms | tokens/s | MFU | vs transformers |", "|---|---|---|---|---|"]  # fmt: skip
        for name, e in mfu["systems"].items():
            mfu_text = f"{e['mfu']:.1%}" if "mfu" in e else "-"
            lines.append(
                f"| {name} | {e['step_ms']} | {e['tokens_per_s']:,.0f} | {mfu_text} | {e.get('vs_transformers', '-')}× |"
            )
    run = steps.get("pretrain_run", {})
    if "loss_first" in run:
        lines += ["", f"**Pretraining run** on the bundled books ({run['config']}, {run['steps']} steps, {run['seconds']} s): "
                  f"loss {run['loss_first']} → {run['loss_last']}, held-out {run['valid_loss_start_end']}, all finite: "
                  f"{run['all_finite']}; resumed from step {run['steps'] // 2}: first step equal {run['resume_first_step_equal']}, "
                  f"max |Δloss| {run['resume_max_abs_diff']} over {run['resumed_steps_compared']} steps "
                  f"(deterministic kernels: {run['deterministic_kernels']})"]  # fmt: skip
    ft = steps.get("finetune_padding", {})
    if ft.get("plans"):
        lines += ["", f"**Finetuning SST-2** ({ft['config']}, batch {ft['batch_size']}, {ft['precision']}; "
                  f"mean {ft['mean_tokens']} tokens, max {ft['max_tokens']})", "",
                  "| batches | padding (epoch) | token slots/step | step ms | steps/s |", "|---|---|---|---|---|"]  # fmt: skip
        for name, e in ft["plans"].items():
            lines.append(
                f"| {name} | {e['padding_fraction_epoch']:.1%} | {e['token_slots_per_step']} | {e['step_ms']} | {e['steps_per_s']} |"
            )
        lines.append(f"| speedup | | | | **{ft['speedup']}×** |")
    for key in ("predictor_latency", "onnxruntime_gpu", "tensorrt"):
        step = steps.get(key, {})
        if step.get("variants"):
            lines += ["", f"**{key}** (batch 1 × 128 tokens, end to end: tokenize, run, probabilities on the host)", "",
                      "| system | median ms | p90 ms |", "|---|---|---|"]  # fmt: skip
            for name, e in step["variants"].items():
                lines.append(f"| {name} | {e['median_ms']} | {e['p90_ms']} |")
            for name, why in (step.get("not_run") or {}).items():
                lines.append(f"| {name} | not run: {why} | |")
    tests = steps.get("tests", {})
    if "cases" in tests:
        lines += ["", f"**GPU tests**: {tests['passed']} passed, {tests['failures']} failed, {tests['errors']} errors, "
                  f"{tests['skipped']} skipped", ""] + [f"- {c}" for c in tests["cases"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/gpu-check"), help="results.json, results.md, logs"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="models and runs the steps make [default: OUT/work]"
    )
    parser.add_argument("--data-root", type=Path, default=Path(os.environ.get("RTOOLKIT_TEST_DATA") or REPO.parent / "shared" / "data"),
                        help="folder with sst2/ and corpus/ (and squad1/, race/, conll2003/ for the task-family GPU tests) [default: ../shared/data or $RTOOLKIT_TEST_DATA]")  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="toy sizes on any device; CUDA-only steps skip"
    )
    parser.add_argument(
        "--install", action="store_true", help="pip install --no-deps -e . first (then restart)"
    )
    parser.add_argument(
        "--only", default=None, help=f"comma-separated steps (setup always runs): {', '.join(STEPS)}"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one step in a child process
    parser.add_argument(
        "--pretrain-steps", type=int, default=None, help="steps of the pretraining run [800; 6 dry]"
    )
    args = parser.parse_args()

    if args.install:
        install_and_restart()  # does not return
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench scripts
    if args.child == "pretrain_run":
        import torch

        check = Check(out=args.out.resolve(), work=args.work.resolve(), data_root=args.data_root.resolve(),
                      dry_run=args.dry_run, device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))  # fmt: skip
        try:
            result = run_pretrain(check, steps=args.pretrain_steps)
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
        (check.out / "pretrain_run.json").write_text(json.dumps(result, default=str), encoding="utf-8")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.work or args.out / "work").mkdir(parents=True, exist_ok=True)
    work = (args.work or args.out / "work").resolve()
    check = Check(out=args.out.resolve(), work=work, data_root=args.data_root.resolve(), dry_run=args.dry_run)
    wanted = set(STEPS) if args.only is None else {"setup", *args.only.split(",")}
    unknown = wanted - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    pretrain_steps = args.pretrain_steps or (6 if args.dry_run else 800)
    runners: dict[str, Callable[[Check], dict]] = {
        "setup": step_setup,
        "tests": step_tests,
        "pretrain_mfu": step_pretrain_mfu,
        "pretrain_run": lambda c: step_pretrain_run(c, steps=pretrain_steps),
        "finetune_padding": step_finetune_padding,
        "predictor_latency": step_predictor_latency,
        "onnxruntime_gpu": step_onnxruntime_gpu,
        "tensorrt": step_tensorrt,
    }
    results: dict[str, Any] = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "dry_run": args.dry_run,
                               "steps": {}}  # fmt: skip
    for name in STEPS:
        if name not in wanted:
            continue
        print(f"gpu-check: {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            entry = {"status": "ok", **runners[name](check)}
            if entry.get("failed"):
                entry["status"] = "FAIL"
        except Skip as skip:
            entry = {"status": "skipped", "reason": str(skip)}
        except Exception as exc:  # a failing step is reported; the others still run
            entry = {
                "status": "FAIL",
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-4000:],
            }
            _free_memory()
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        results["steps"][name] = entry
        print(
            f"gpu-check: {name} {entry['status']} in {entry['seconds']} s {entry.get('reason') or entry.get('failed') or entry.get('error') or ''}",
            flush=True,
        )
        results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        (check.out / "results.json").write_text(
            json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8"
        )
    report = _markdown(results)
    (check.out / "results.md").write_text(report, encoding="utf-8")
    print(report)
    return 1 if any(s["status"] == "FAIL" for s in results["steps"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
