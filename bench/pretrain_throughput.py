"""Pretraining throughput: rtoolkit vs transformers.RobertaForMaskedLM, alternating in one process.

Both systems run the same model config, the same batches and the same masked positions (rtoolkit's dynamic masks),
with the same AdamW, one optimizer step per batch; only the training step (forward, backward, optimizer) is timed.
Each system's own collator (rtoolkit's `collate_masked`, transformers' `DataCollatorForLanguageModeling`) is timed
separately. Steps alternate rtoolkit / transformers, so machine load hits both alike; medians are reported.

    python bench/pretrain_throughput.py                       # CPU: hidden 256, 4 layers, seq 128, batch 16, fp32
    python bench/pretrain_throughput.py --device cuda --preset base --seq-len 512 --batch-size 32 \
        --precision bf16 --compile --peak-tflops 989          # H100 SXM: roberta-base with MFU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", choices=["bench", "base", "large"], default="bench")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per system")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak for MFU (H100 SXM bf16: 989)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    import transformers
    from tokenizers import Tokenizer as HFTokenizerCore
    from tokenizers import models as tk_models
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    from rtoolkit.config import RobertaConfig
    from rtoolkit.data.masking import collate_masked, sequence_seed
    from rtoolkit.model import RobertaForMaskedLM, flops_per_token
    from rtoolkit.train.loop import autocast
    from rtoolkit.train.optim import build_optimizer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.preset == "bench":
        config = RobertaConfig(
            hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
        )
    else:
        config = RobertaConfig.preset(args.preset)
    torch.manual_seed(0)
    ours = RobertaForMaskedLM(config).to(device).train()
    hf_config = transformers.RobertaConfig(**{k: v for k, v in config.to_dict().items() if k != "extra"})
    theirs = transformers.RobertaForMaskedLM(hf_config).to(device).train()
    theirs.load_state_dict(ours.state_dict(), strict=False)  # same starting weights
    opt_ours = build_optimizer(ours, lr=1e-4, weight_decay=0.01)
    opt_theirs = build_optimizer(theirs, lr=1e-4, weight_decay=0.01)
    step_ours, step_theirs = ours, theirs
    if args.compile:
        step_ours, step_theirs = torch.compile(ours), torch.compile(theirs)

    # Batches of random non-special ids, each row <s> ... </s>, masked with rtoolkit's dynamic masking.
    V, mask_id, specials = config.vocab_size, config.vocab_size - 1, [0, 1, 2, 3, config.vocab_size - 1]
    n_batches = args.warmup + args.steps
    gen = torch.Generator().manual_seed(0)
    batches, rows_per_batch, collate_ours = [], [], []
    for b in range(n_batches):
        rows = []
        for _ in range(args.batch_size):
            body = torch.randint(4, V - 1, (args.seq_len - 2,), generator=gen)
            rows.append(torch.cat([torch.tensor([0]), body, torch.tensor([2])]))
        rows_per_batch.append(rows)
        t0 = time.perf_counter()
        batch = collate_masked(
            rows,
            [sequence_seed(0, 0, b * args.batch_size + r) for r in range(args.batch_size)],
            pad_token_id=1,
            mask_token_id=mask_id,
            special_ids=specials,
            vocab_size=V,
        )
        collate_ours.append(time.perf_counter() - t0)
        batches.append({k: v.to(device) for k, v in batch.items()})

    # transformers' own collator, timed on the same rows (its masks are not used for the timed steps).
    vocab = {f"t{i}": i for i in range(V)}
    vocab.update({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": mask_id})
    core = HFTokenizerCore(tk_models.WordLevel(vocab=vocab, unk_token="<unk>"))
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", cls_token="<s>", sep_token="</s>",
    )  # fmt: skip
    hf_collator = DataCollatorForLanguageModeling(hf_tok, mlm_probability=0.15)
    collate_theirs = []
    for rows in rows_per_batch:
        t0 = time.perf_counter()
        hf_collator([{"input_ids": r.tolist()} for r in rows])
        collate_theirs.append(time.perf_counter() - t0)

    def train_step(model, opt, batch) -> float:
        _sync(device)
        t0 = time.perf_counter()
        with autocast(args.precision, device):
            out = model(**batch)
        out.loss.float().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - t0

    times = {"rtoolkit": [], "transformers": []}
    for i, batch in enumerate(batches):
        a = train_step(step_ours, opt_ours, batch)
        b = train_step(step_theirs, opt_theirs, batch)
        if i >= args.warmup:
            times["rtoolkit"].append(a)
            times["transformers"].append(b)
    tokens = args.batch_size * args.seq_len
    fpt = flops_per_token(config, args.seq_len)
    result = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "config": f"hidden {config.hidden_size}, layers {config.num_hidden_layers}, heads {config.num_attention_heads}, vocab {V}",
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "compile": args.compile,
        "steps": args.steps,
    }
    for name, ts in times.items():
        median = statistics.median(ts)
        result[f"{name}_step_ms"] = round(median * 1e3, 2)
        result[f"{name}_tokens_per_s"] = round(tokens / median, 1)
        if args.peak_tflops:
            result[f"{name}_mfu"] = round(tokens / median * fpt / (args.peak_tflops * 1e12), 4)
    result["rtoolkit_collate_ms"] = round(statistics.median(collate_ours) * 1e3, 2)
    result["transformers_collate_ms"] = round(statistics.median(collate_theirs) * 1e3, 2)
    result["speedup"] = round(result["rtoolkit_tokens_per_s"] / result["transformers_tokens_per_s"], 2)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>26}  {value}")


if __name__ == "__main__":
    main()
