"""Run under torchrun by test_distributed.py: count DDP gradient all-reduce rounds per optimizer step when the
model is compiled and gradients accumulate over several micro-batches (the product's wrap_model + train_step)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from rtoolkit.config import RobertaConfig
from rtoolkit.model import RobertaForMaskedLM
from rtoolkit.train.distributed import cleanup_distributed, ddp_module, init_distributed, wrap_model
from rtoolkit.train.loop import train_step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--backend", default="aot_eager", help="torch.compile backend (inductor works too, slower)"
    )
    args = parser.parse_args()

    info = init_distributed("cpu")
    torch.manual_seed(0)
    config = RobertaConfig.tiny(vocab_size=300, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = wrap_model(RobertaForMaskedLM(config), info, compile=True, compile_backend=args.backend)
    rounds: list[int] = []

    def counting_hook(state, bucket):
        if bucket.index() == 0:  # every all-reduce round starts with bucket 0
            rounds[-1] += 1
        return allreduce_hook(None, bucket)

    ddp_module(model).register_comm_hook(None, counting_hook)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(info.rank)
    for _ in range(args.steps):
        rounds.append(0)
        micro = []
        for _ in range(args.micro_batches):
            ids = torch.randint(4, 299, (2, 16), generator=generator)
            labels = torch.where(
                torch.rand(ids.shape, generator=generator) < 0.3, ids, torch.full_like(ids, -100)
            )
            labels[:, 1] = ids[:, 1]  # at least one target per row
            micro.append({"input_ids": ids, "labels": labels})
        train_step(model, micro, optimizer=optimizer, dist_info=info)
    gathered: list[list[int] | None] = [None] * info.world_size
    dist.all_gather_object(gathered, rounds)
    if info.is_main:
        args.out.write_text(json.dumps({str(r): c for r, c in enumerate(gathered)}))
    cleanup_distributed(info)


if __name__ == "__main__":
    main()
