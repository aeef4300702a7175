"""rtoolkit.export.tensorrt: the one-line error without TensorRT or a GPU, cache keys, and (on a GPU) real engines."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from rtoolkit.export import ExportError, Manifest, TensorRTRunner, build_engine
from rtoolkit.export.tensorrt import engine_key, profile_shapes

HAS_TRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_trt = pytest.mark.skipif(not HAS_TRT, reason="needs the tensorrt package and a CUDA GPU")


@pytest.mark.skipif(HAS_TRT, reason="tensorrt and a GPU are present")
def test_missing_tensorrt_or_gpu_is_one_line(exported):
    with pytest.raises(ExportError) as info:
        build_engine(exported["classification"])
    message = str(info.value)
    assert "\n" not in message
    assert "tensorrt is not installed" in message or "no CUDA device" in message


def test_profile_and_cache_key():
    shapes = profile_shapes(max_batch=32, max_seq_len=512)
    assert shapes == {"min": (1, 1), "opt": (1, 128), "max": (32, 512)}
    assert profile_shapes(max_batch=4, max_seq_len=64, opt_batch=8)["opt"] == (4, 64)
    key = engine_key(
        trt_version="10.11.0",
        gpu="NVIDIA H100 80GB HBM3",
        shapes=shapes,
        precision="fp16",
        onnx_sha="ab" * 32,
    )
    assert key == "trt10.11.0_nvidia-h100-80gb-hbm3_min1x1_opt1x128_max32x512_fp16_abababababab"
    others = [
        engine_key(
            trt_version="11.4.0",
            gpu="NVIDIA H100 80GB HBM3",
            shapes=shapes,
            precision="fp16",
            onnx_sha="ab" * 32,
        ),
        engine_key(
            trt_version="10.11.0", gpu="NVIDIA A100", shapes=shapes, precision="fp16", onnx_sha="ab" * 32
        ),
        engine_key(
            trt_version="10.11.0",
            gpu="NVIDIA H100 80GB HBM3",
            shapes=shapes,
            precision="fp32",
            onnx_sha="ab" * 32,
        ),
        engine_key(
            trt_version="10.11.0",
            gpu="NVIDIA H100 80GB HBM3",
            shapes=shapes,
            precision="fp16",
            onnx_sha="cd" * 32,
        ),
    ]
    assert len({key, *others}) == 5


@gpu
@needs_trt
@pytest.mark.parametrize("task", ["fill-mask", "classification", "embedding"])
def test_fp16_engine_builds_validates_and_caches(exported, task):
    folder = exported[task]
    path = build_engine(folder, precision="fp16", max_batch=4, max_seq_len=64)
    art = Manifest.load(folder).artifact(f"engines/{path.name}")
    assert art.format == "tensorrt" and art.passed
    mtime = path.stat().st_mtime_ns
    assert build_engine(folder, precision="fp16", max_batch=4, max_seq_len=64) == path
    assert path.stat().st_mtime_ns == mtime  # reused from the cache
    runner = TensorRTRunner(path)
    ids = np.array([[0, 50, 60, 2], [0, 70, 2, 1]], dtype=np.int64)
    out = runner.run({"input_ids": ids, "attention_mask": (ids != 1).astype(np.int64)})
    assert np.isfinite(out[runner.output_names[0]]).all()
    with pytest.raises(ExportError, match="outside the engine's profile"):
        runner.run({"input_ids": np.zeros((5, 4), np.int64), "attention_mask": np.ones((5, 4), np.int64)})
