"""Where a training step's time goes on a GPU: host launch overhead, GPU busy time, the top kernels.

Prints, for roberta-base masked-LM pretraining (seq 512, bf16) and SST-2-like finetuning (short rows), the wall
time of one `train_step`, the summed GPU kernel time inside it (torch.profiler) and their ratio (GPU busy share),
plus the cost of launching one tiny kernel and a large bf16 matmul's TFLOP/s, so that a slow step can be told apart
as launch-bound (busy share low) or kernel-bound (busy share high).

    python bench/profile_step.py --device cuda [--compile] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def launch_overhead_us(device: torch.device, n: int = 2000) -> float:
    """Host time per launch of a tiny elementwise kernel (the floor of eager PyTorch's per-op cost)."""
    x = torch.zeros(16, device=device)
    for _ in range(100):
        x.add_(1)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        x.add_(1)
    launched = time.perf_counter() - t0
    _sync(device)
    return round(launched / n * 1e6, 2)


def matmul_tflops(device: torch.device, size: int = 8192) -> float:
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    _sync(device)
    return round(2 * size**3 * 10 / (time.perf_counter() - t0) / 1e12, 1)


def profile(step, device: torch.device, *, steps: int = 3, top: int = 12) -> dict:
    """Wall ms per step, GPU kernel ms per step and the top kernels, over `steps` profiled steps after warm-up."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(3):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    wall = (time.perf_counter() - t0) / steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    events = prof.key_averages()
    kernels = [
        e for e in events if getattr(e, "self_device_time_total", 0) > 0 and e.device_type.name == "CUDA"
    ]
    gpu_us = sum(e.self_device_time_total for e in kernels) / steps
    kernels.sort(key=lambda e: e.self_device_time_total, reverse=True)
    return {
        "wall_ms": round(wall * 1e3, 2),
        "gpu_kernel_ms": round(gpu_us / 1e3, 2),
        "gpu_busy_share": round(gpu_us / 1e3 / (wall * 1e3), 3) if wall else None,
        "kernel_launches_per_step": sum(e.count for e in kernels) // steps,
        "top_kernels": [
            (e.key[:90], round(e.self_device_time_total / steps / 1e3, 3), e.count // steps)
            for e in kernels[:top]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compile", action="store_true", help="also profile the --compile step")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from pretrain_throughput import bench_config, make_batches

    from rtoolkit.config import RobertaConfig
    from rtoolkit.model import RobertaForMaskedLM, RobertaForSequenceClassification
    from rtoolkit.train.distributed import compile_model
    from rtoolkit.train.loop import train_step
    from rtoolkit.train.optim import build_optimizer

    device = torch.device(args.device)
    precision = "bf16" if device.type == "cuda" else "fp32"
    out: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "launch_overhead_us": launch_overhead_us(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        out["matmul_8192_bf16_tflops"] = matmul_tflops(device)
    config = bench_config(args.preset)
    batch = make_batches(config, n=1, batch_size=args.batch_size, seq_len=args.seq_len, device=device)[0]
    variants = [("pretrain eager", False)] + ([("pretrain compiled", True)] if args.compile else [])
    for name, compiled in variants:
        torch.manual_seed(0)
        model = RobertaForMaskedLM(config).to(device).train()
        if compiled:
            compile_model(model)
        opt = build_optimizer(model, lr=1e-4, weight_decay=0.01)
        out[name] = profile(
            lambda m=model, o=opt: train_step(m, [batch], optimizer=o, precision=precision, device=device),
            device,
        )
        del model, opt
    # Finetuning-like rows: 32 x 16 tokens without padding, and 32 x 64 with a mask (three quarters padding).
    clf_config = RobertaConfig.from_dict({**config.to_dict(), "num_labels": 2})
    clf = RobertaForSequenceClassification(clf_config).to(device)
    opt = build_optimizer(clf, lr=1e-5, weight_decay=0.1)
    short = {
        "input_ids": batch["input_ids"][:, :16].clone(),
        "labels": torch.zeros(args.batch_size, dtype=torch.long, device=device),
    }
    padded = {"input_ids": batch["input_ids"][:, :64].clone(), "labels": short["labels"]}
    padded["attention_mask"] = torch.zeros_like(padded["input_ids"])
    padded["attention_mask"][:, :16] = 1
    out["finetune 32x16 no mask"] = profile(
        lambda: train_step(clf, [short], optimizer=opt, precision=precision, device=device), device
    )
    out["finetune 32x64 masked"] = profile(
        lambda: train_step(clf, [padded], optimizer=opt, precision=precision, device=device), device
    )
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
