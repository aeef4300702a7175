"""torchrun with 2 gloo processes (DDP or FSDP) gives the losses of 1 process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rtoolkit.train.distributed import DistInfo, init_distributed, shard, unwrap_model, wrap_model
from rtoolkit.train.loop import read_metrics


def _pretrain_args(data, out, config, *extra):
    return [
        "pretrain", "--data", str(data), "--out", str(out), "--model-config", str(config), "--seq-len", "64",
        "--batch-size", "8", "--micro-batch-size", "2", "--max-steps", "6", "--warmup-steps", "2", "--lr", "1e-3",
        "--eval-every", "3", "--save-every", "3", "--log-every", "1", "--no-progress", *extra,
    ]  # fmt: skip


def _run(args, nproc):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    command = (
        launcher + ["-m", "rtoolkit.cli", *args]
        if nproc > 1
        else [sys.executable, "-m", "rtoolkit.cli", *args]
    )
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("fmt", "sharding"),
    [("full-sentences", "ddp"), ("doc-sentences", "ddp"), ("full-sentences", "fsdp")],
)
def test_two_processes_match_one_process(tmp_path, pretrain_data, no_dropout_config, fmt, sharding):
    _run(_pretrain_args(pretrain_data, tmp_path / "one", no_dropout_config, "--format", fmt), nproc=1)
    extra = ("--fsdp",) if sharding == "fsdp" else ()
    _run(_pretrain_args(pretrain_data, tmp_path / "two", no_dropout_config, "--format", fmt, *extra), nproc=2)
    one = read_metrics(tmp_path / "one" / "metrics.jsonl")
    two = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert len(one) == len(two) == 6 + 3  # 6 training records, evaluations at steps 0, 3, 6
    for a, b in zip(one, two, strict=True):
        assert a["step"] == b["step"] and a.get("eval") == b.get("eval")
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    # Only rank 0 wrote, and its checkpoints hold the same weights.
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == [
        "step-000003",
        "step-000006",
    ]
    assert not list((tmp_path / "two").glob("**/.*tmp*"))


def test_single_process_helpers_are_no_ops(tiny_config):
    from rtoolkit.model import RobertaForMaskedLM

    info = init_distributed("cpu")
    assert info == DistInfo() and info.is_main and not info.distributed
    model = RobertaForMaskedLM(tiny_config)
    assert wrap_model(model, info) is model and unwrap_model(model) is model
    assert list(shard(list(range(5)), info)) == [0, 1, 2, 3, 4]


def test_shard_gives_each_rank_its_own_slice():
    items = list(range(10))
    parts = [list(shard(items, DistInfo(rank=r, world_size=3))) for r in range(3)]
    assert sum(parts, []) == items and [len(p) for p in parts] == [3, 3, 4]
    with pytest.raises(ValueError, match="batch size of at least 3"):
        shard([1, 2], DistInfo(rank=0, world_size=3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_is_picked_by_default():
    assert init_distributed().device.type == "cuda"
