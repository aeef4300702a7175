"""torchrun with 2 gloo processes (DDP or FSDP) gives the losses of 1 process with the same global batch; the
process's device under torchrun; one gradient all-reduce per optimizer step with --compile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rtoolkit.train.distributed import (
    DistInfo,
    init_distributed,
    resolve_device,
    shard,
    unwrap_model,
    wrap_model,
)
from rtoolkit.train.loop import read_metrics

REPO = Path(__file__).resolve().parents[2]


def _pretrain_args(data, out, config, *extra):
    # 5 held-out blocks in micro-batches of 2: rank 0 gets 2 blocks (1 batch), rank 1 gets 3 (2 batches).
    return [
        "pretrain", "--data", str(data), "--out", str(out), "--model-config", str(config), "--seq-len", "64",
        "--batch-size", "8", "--micro-batch-size", "2", "--max-steps", "6", "--warmup-steps", "2", "--lr", "1e-3",
        "--eval-every", "3", "--save-every", "3", "--eval-max-blocks", "5", "--log-every", "1", "--no-progress",
        "--seed", "1", *extra,
    ]  # fmt: skip


def _torchrun_env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


def _run(args, nproc, *, module="rtoolkit.cli", timeout=150):
    """Run `python -m module args` in 1 process or under torchrun; a hang (a collective one rank never joins)
    fails at the timeout instead of blocking the suite, and takes every worker process down with it."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    command = (launcher if nproc > 1 else [sys.executable]) + ["-m", module, *args]
    proc = subprocess.Popen(
        command, cwd=REPO, env=_torchrun_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{args[0]} with {nproc} processes hung for {timeout}s: {stderr[-2000:]}")
    assert proc.returncode == 0, stdout + stderr
    return stdout


@pytest.mark.parametrize(
    ("fmt", "sharding"),
    [
        ("full-sentences", "ddp"),
        ("doc-sentences", "ddp"),
        ("full-sentences", "fsdp"),
        ("doc-sentences", "fsdp"),
    ],
)
def test_two_processes_match_one_process(tmp_path, pretrain_data, no_dropout_config, fmt, sharding):
    """Also with uneven work per rank: doc-sentences gives ranks different numbers of micro-batches, and the
    5-block held-out set different numbers of evaluation batches; FSDP must not hang on either."""
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


def test_doc_sentences_ranks_really_get_uneven_work(pretrain_data, no_dropout_config):
    """The premise of the test above: with these settings some step gives the two ranks different micro-batch
    counts, and the held-out set gives them different batch counts."""
    from rtoolkit.data.corpus import BlockDataset, TokenSplit, epoch_batches
    from rtoolkit.train.pretrain import micro_batches

    lengths = BlockDataset(
        TokenSplit.open(pretrain_data, "train"), seq_len=64, format="doc-sentences"
    ).lengths
    plan = epoch_batches(lengths, epoch=0, seed=1, batch_size=8, seq_len=64, format="doc-sentences")
    counts = [
        [len(micro_batches(list(shard(b, DistInfo(rank=r, world_size=2))), lengths, micro_batch_size=2, seq_len=64))
         for r in range(2)]
        for b in plan[:6]
    ]  # fmt: skip
    assert any(a != b for a, b in counts)
    held_out = [list(shard(list(range(5)), DistInfo(rank=r, world_size=2))) for r in range(2)]
    assert [-(-len(h) // 2) for h in held_out] == [1, 2]


def test_compile_then_ddp_all_reduces_once_per_optimizer_step(tmp_path):
    """2 gloo processes, --compile, accumulation 4: a DDP communication hook counts the gradient all-reduces."""
    out = tmp_path / "counts.json"
    _run(
        ["--out", str(out), "--micro-batches", "4", "--steps", "3"], 2, module="tests.train.ddp_compile_probe"
    )
    counts = json.loads(out.read_text())
    assert counts == {"0": [1, 1, 1], "1": [1, 1, 1]}  # one all-reduce round per step on each rank


@pytest.mark.parametrize(
    ("device", "env", "expected"),
    [
        ("cuda", {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"}, "cuda:1"),
        (None, {"LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8"}, "cuda:3"),
        ("auto", {}, "cuda:0"),
        ("cuda", {}, "cuda:0"),
        ("cuda:2", {}, "cuda:2"),
        (
            "cuda:1",
            {"LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "WORLD_SIZE": "2"},
            "cuda:1",
        ),  # 1 proc per node
        ("cpu", {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"}, "cpu"),
    ],
)
def test_device_of_each_torchrun_process(device, env, expected):
    assert resolve_device(device, env=env, cuda_available=True, cuda_device_count=4) == torch.device(expected)


@pytest.mark.parametrize(
    ("device", "env", "cuda", "message"),
    [
        ("cuda:0", {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"}, True, "all 2 processes"),
        ("cuda", {"LOCAL_RANK": "5", "LOCAL_WORLD_SIZE": "6", "WORLD_SIZE": "6"}, True, "only 4 GPU"),
        ("cuda", {}, False, "CUDA is not available"),
        ("tpu:0", {}, False, "cpu, cuda or cuda:N"),
    ],
)
def test_bad_device_choices_say_what_to_do(device, env, cuda, message):
    with pytest.raises((ValueError, RuntimeError), match=message):
        resolve_device(device, env=env, cuda_available=cuda, cuda_device_count=4)


def test_auto_device_without_cuda_is_cpu():
    assert resolve_device(None, env={}, cuda_available=False) == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_is_picked_by_default():
    assert init_distributed().device.type == "cuda"
