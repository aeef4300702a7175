"""Finetuning on SST-2: padded random batches vs length-grouped (padding-free) batches, steps/s side by side.

Both plans hold `--batch-size` sentences per step (the recipe's batch size), drawn from the real SST-2 training set
and encoded by the same tokenizer; both run through `rtoolkit.train.finetune`'s collate and
`rtoolkit.train.loop.train_step` (what `rtoolkit finetune` runs), with `--no-group-by-length` as the padded
baseline. Steps alternate between the two plans so that machine load hits both alike; the median step time gives
steps/s. The padding fraction is computed over the whole epoch's plan.

    python bench/finetune_padding.py --data-dir ../shared/data/sst2                    # CPU: hidden 256, 4 layers
    python bench/finetune_padding.py --data-dir ../shared/data/sst2 --device cuda --preset base --precision bf16
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def sample_tokenizer(work: Path, vocab_size: int = 8192):
    """An 8K byte-level BPE trained on the bundled sample books (cached in `work`)."""
    from rtoolkit.data.corpus import iter_documents
    from rtoolkit.tokenizer import Tokenizer
    from rtoolkit.train.pretrain import sample_files

    folder = work / "tokenizer"
    if not (folder / "tokenizer.json").is_file():
        docs = (text for f in sample_files() for text, _ in iter_documents(f))
        Tokenizer.train_from_iterator(docs, vocab_size=vocab_size).save_pretrained(folder)
    return Tokenizer.from_pretrained(folder)


def measure(
    *,
    config,
    tokenizer,
    data_dir: Path,
    device: torch.device,
    precision: str,
    batch_size: int,
    steps: int,
    warmup: int,
    max_length: int = 128,
) -> dict:
    """Median step time of each plan over the same number of steps of SST-2 training, plus padding fractions."""
    from rtoolkit.data.batching import padding_fraction
    from rtoolkit.data.glue import read_glue
    from rtoolkit.model import RobertaForSequenceClassification
    from rtoolkit.train.finetune import collate, epoch_plan
    from rtoolkit.train.loop import batch_tokens, train_step
    from rtoolkit.train.optim import build_optimizer

    data = read_glue("sst2", data_dir, "train")
    ids = tokenizer.encode_batch(data.texts, None, max_length=max_length)
    lengths = np.array([len(x) for x in ids])
    plans = {
        "padded": epoch_plan(lengths, batch_size=batch_size, seed=1, epoch=0, group_by_length=False),
        "padding-free": epoch_plan(lengths, batch_size=batch_size, seed=1, epoch=0, group_by_length=True),
    }
    torch.manual_seed(0)
    reference = RobertaForSequenceClassification(config).state_dict()
    runs = {}
    for name, plan in plans.items():
        model = RobertaForSequenceClassification(config)
        model.load_state_dict(reference)
        model.to(device).train()
        runs[name] = (model, build_optimizer(model, lr=1e-5, weight_decay=0.1), plan, [], [])
    for i in range(warmup + steps):
        for model, opt, plan, times, slots in runs.values():
            rows = plan[i]
            batch = collate(tokenizer, [ids[r] for r in rows], [data.labels[r] for r in rows])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            train_step(model, [batch], optimizer=opt, precision=precision, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
                slots.append((batch["input_ids"].numel(), batch_tokens(batch)))
    result: dict = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "config": f"hidden {config.hidden_size}, layers {config.num_hidden_layers}, vocab {config.vocab_size}",
        "precision": precision,
        "batch_size": batch_size,
        "steps": steps,
        "sentences": len(ids),
        "mean_tokens": round(float(lengths.mean()), 1),
        "max_tokens": int(lengths.max()),
        "plans": {},
    }
    for name, (_, _, plan, times, slots) in runs.items():
        median = statistics.median(times)
        result["plans"][name] = {
            "padding_fraction_epoch": round(padding_fraction(lengths, plan), 4),
            "token_slots_per_step": round(statistics.mean(s for s, _ in slots), 1),
            "step_ms": round(median * 1e3, 2),
            "steps_per_s": round(1.0 / median, 2),
        }
    result["speedup"] = round(
        result["plans"]["padding-free"]["steps_per_s"] / result["plans"]["padded"]["steps_per_s"], 2
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/sst2"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", choices=["bench", "base"], default="bench")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-finetune"), help="tokenizer cache")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from pretrain_throughput import print_result

    from rtoolkit.config import RobertaConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = sample_tokenizer(args.work)
    if args.preset == "bench":
        config = RobertaConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=1024, num_labels=2,
        )  # fmt: skip
    else:
        config = RobertaConfig.preset("base", vocab_size=tokenizer.vocab_size, num_labels=2)
    result = measure(
        config=config, tokenizer=tokenizer, data_dir=args.data_dir, device=torch.device(args.device),
        precision=args.precision, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
    )  # fmt: skip
    print_result(result, "plans", as_json=args.json)


if __name__ == "__main__":
    main()
