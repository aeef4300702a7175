"""`make gpu-check`'s script in --dry-run on this machine: every step starts; the CUDA-only ones skip with a reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO, shared_data


def test_dry_run_starts_every_step_and_says_why_a_step_skips(tmp_path):
    data_root = shared_data("sst2").parent
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(out), "--work", str(work),
         "--data-root", str(data_root)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    steps = results["steps"]
    assert list(steps) == [
        "setup", "tests", "pretrain_mfu", "pretrain_run", "finetune_padding", "predictor_latency",
        "onnxruntime_gpu", "tensorrt",
    ]  # fmt: skip
    for name, step in steps.items():
        assert step["status"] in ("ok", "skipped"), (name, step)
    assert "needs a CUDA GPU" in steps["onnxruntime_gpu"]["reason"]
    assert "needs a CUDA GPU" in steps["tensorrt"]["reason"]
    # The steps that ran did real work at toy sizes: a falling loss, an exact resume, both batch plans, latencies.
    run = steps["pretrain_run"]
    assert (
        run["loss_last"] < run["loss_first"]
        and run["resume_first_step_equal"]
        and run["resume_max_abs_diff"] == 0
    )
    plans = steps["finetune_padding"]["plans"]
    assert plans["padded"]["padding_fraction_epoch"] > 0.5 > plans["padding-free"]["padding_fraction_epoch"]
    assert steps["pretrain_mfu"]["systems"]["rtoolkit"]["tokens_per_s"] > 0
    assert steps["pretrain_mfu"]["not_run"]["rtoolkit-compiled"].startswith(
        "compile is measured on CUDA only"
    )
    latency = steps["predictor_latency"]
    assert latency["variants"]["torch fp32"]["median_ms"] > 0
    assert latency["not_run"]["torch fp16 + CUDA graphs"] == "needs a CUDA GPU"
    assert steps["tests"]["failures"] == steps["tests"]["errors"] == 0 and steps["tests"]["skipped"] > 0
    report = (out / "results.md").read_text()
    assert "| pretrain_run | ok |" in report and "DRY RUN" in report
