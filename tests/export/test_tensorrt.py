"""rtoolkit.export.tensorrt: the one-line error without TensorRT or a GPU, cache keys, the machine tags that guard a
timing cache and an engine on first use (no GPU needed), and (on a GPU with TensorRT) real engines."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from rtoolkit.export import ExportError, Manifest, TensorRTRunner, build_engine
from rtoolkit.export.tensorrt import (
    TIMING_CACHE_TAG,
    engine_key,
    network_creation_flags,
    profile_shapes,
    read_timing_cache,
    write_timing_cache,
)

from rtoolkit.runtime.backends import artifact_files, read_manifest, runnable_engines
from rtoolkit.runtime.tensorrt import MachineTag, tag_mismatch


def _tensorrt_library() -> bool:
    """The tensorrt library itself (its type stubs alone install an empty `tensorrt` namespace package)."""
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder")


HAS_TRT = _tensorrt_library() and torch.cuda.is_available()
H100 = MachineTag(tensorrt="10.13.3.9", gpu="NVIDIA H100 80GB HBM3", compute_capability="9.0")
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


@pytest.mark.parametrize(
    ("recorded", "fits"),
    [
        (H100.to_dict(), True),
        ({**H100.to_dict(), "tensorrt": "10.11.0.33"}, False),
        ({**H100.to_dict(), "gpu": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}, False),
        ({**H100.to_dict(), "compute_capability": "9.1"}, False),
        (
            {"tensorrt": "10.13.3.9", "gpu": "NVIDIA H100 80GB HBM3"},
            False,
        ),  # an old record without the capability
        (None, False),
    ],
)
def test_an_engine_runs_only_on_the_machine_it_was_built_for(recorded, fits):
    reason = tag_mismatch(recorded, H100)
    assert (reason is None) == fits
    if recorded and not fits and "compute_capability" in recorded:
        assert H100.gpu in reason and "TensorRT 10.13.3.9" in reason  # says what this machine has


def test_timing_cache_is_reused_only_by_the_version_and_gpu_that_wrote_it(tmp_path, caplog):
    cache = tmp_path / "timing.cache"
    assert read_timing_cache(cache, H100) == b""  # none yet
    write_timing_cache(cache, b"tactics", H100)
    assert json.loads((tmp_path / TIMING_CACHE_TAG).read_text()) == H100.to_dict()
    assert read_timing_cache(cache, H100) == b"tactics"
    other = MachineTag(tensorrt="10.13.3.9", gpu="NVIDIA L40S", compute_capability="8.9")
    with caplog.at_level(logging.INFO, logger="rtoolkit.export.tensorrt"):
        assert read_timing_cache(cache, other) == b""  # never handed to another GPU's builder
    assert "NVIDIA L40S" in caplog.text and "starting a new timing cache" in caplog.text
    (tmp_path / TIMING_CACHE_TAG).unlink()  # a cache whose maker is unknown is not trusted either
    assert read_timing_cache(cache, H100) == b""
    (tmp_path / TIMING_CACHE_TAG).write_text("{not json")
    assert read_timing_cache(cache, H100) == b""


def test_tensorrt_11_networks_need_no_flag():
    """TensorRT 11 is always strongly typed (the flag is deprecated there); 10.x asks for it (needs tensorrt)."""
    assert network_creation_flags("11.4.0.106") == 0
    if _tensorrt_library():
        import tensorrt as trt

        expected = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        assert network_creation_flags("10.13.3.9") == expected


def test_predictor_skips_engines_from_another_gpu_with_one_warning(exported, tmp_path, monkeypatch, caplog):
    """An export folder moved to another GPU: its engines are skipped (ONNX serves) with one warning saying why."""
    import rtoolkit.runtime.backends as backends

    folder = shutil.copytree(exported["classification"], tmp_path / "moved")
    manifest = json.loads((folder / "export_manifest.json").read_text())
    engines = []
    for gpu, name in [("NVIDIA A100-SXM4-80GB", "a.engine"), ("NVIDIA A100-SXM4-80GB", "b.engine")]:
        (folder / "engines").mkdir(exist_ok=True)
        (folder / "engines" / name).write_bytes(b"plan")
        tag = {**H100.to_dict(), "gpu": gpu, "compute_capability": "8.0"}
        engines.append({"file": f"engines/{name}", "format": "tensorrt", "precision": "fp16", "details": tag})
    (folder / "export_manifest.json").write_text(
        json.dumps({**manifest, "artifacts": manifest["artifacts"] + engines})
    )
    found = [a for a in artifact_files(folder, read_manifest(folder)) if a.format == "tensorrt"]
    assert [a.details["gpu"] for a in found] == ["NVIDIA A100-SXM4-80GB"] * 2
    monkeypatch.setattr(backends, "machine_tag_for", lambda device: H100)  # this machine: an H100
    with caplog.at_level(logging.WARNING, logger="rtoolkit.predictor"):
        assert runnable_engines(found, "cuda", folder) == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "a.engine (and 1 more engine(s))" in warnings[0].getMessage()
    assert "NVIDIA A100-SXM4-80GB" in warnings[0].getMessage() and "NVIDIA H100" in warnings[0].getMessage()
    found[1] = found[1].__class__(**{**found[1].__dict__, "details": H100.to_dict()})
    assert runnable_engines(found, "cuda", folder) == [found[1]]


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
    assert art.details["gpu"] == torch.cuda.get_device_name() and art.details["compute_capability"]
    with pytest.raises(ValueError, match="outside the engine's profile"):
        runner.run({"input_ids": np.zeros((5, 4), np.int64), "attention_mask": np.ones((5, 4), np.int64)})
