"""Pretraining throughput: rtoolkit vs transformers.RobertaForMaskedLM, alternating in one process.

Every system trains the same model config from the same weights on the same batches with the same masked positions
(rtoolkit's dynamic masks) and the same fused AdamW, one optimizer step per batch. rtoolkit steps go through
`rtoolkit.train.loop.train_step` (the function `rtoolkit pretrain` runs), its compiled variant through
`rtoolkit.train.distributed.compile_model` (what `--compile` does); transformers runs forward, backward and the
optimizer step. Steps alternate between the systems, so machine load hits all alike; medians are reported. Each
system's own collator (rtoolkit's `collate_masked`, transformers' `DataCollatorForLanguageModeling`) can be timed
apart from the step.

MFU counts the FLOPs masked-LM training needs (`flops_per_token(..., masked_fraction=0.15)`: the encoder plus the
LM head on the masked rows) against the card's dense bf16 peak (`--peak-tflops`, or looked up by device name).

    python bench/pretrain_throughput.py                       # CPU: hidden 256, 4 layers, seq 128, batch 16, fp32
    python bench/pretrain_throughput.py --device cuda --preset base --seq-len 512 --batch-size 32 \
        --precision bf16 --compile                            # H100/H200: roberta-base, eager + compiled, with MFU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

import torch

# Dense bf16 tensor-core peaks in TFLOP/s (vendor datasheets, without sparsity), by a name fragment of
# torch.cuda.get_device_name(); the first match wins, so the more specific names come first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("H800", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
)


def peak_tflops(device_name: str) -> tuple[float | None, str]:
    """(dense bf16 peak, where it came from) for a CUDA device name; (None, reason) when unknown."""
    for fragment, peak in PEAK_BF16_TFLOPS:
        if fragment in device_name:
            return peak, f"{fragment} datasheet dense bf16 peak"
    return None, f"no peak known for {device_name!r}; pass --peak-tflops"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batches(config, *, n: int, batch_size: int, seq_len: int, device: torch.device) -> list[dict]:
    """n batches of random non-special ids (<s> ... </s>, no padding), masked by rtoolkit's dynamic masking."""
    from rtoolkit.data.masking import collate_masked, sequence_seed

    V = config.vocab_size
    gen = torch.Generator().manual_seed(0)
    batches = []
    for b in range(n):
        rows = [
            torch.cat(
                [torch.tensor([0]), torch.randint(4, V - 1, (seq_len - 2,), generator=gen), torch.tensor([2])]
            )
            for _ in range(batch_size)
        ]
        batch = collate_masked(
            rows,
            [sequence_seed(0, 0, b * batch_size + r) for r in range(batch_size)],
            pad_token_id=1,
            mask_token_id=V - 1,
            special_ids=[0, 1, 2, 3, V - 1],
            vocab_size=V,
        )
        batches.append({k: v.to(device) for k, v in batch.items()})
    return batches


def measure(
    *,
    config,
    device: torch.device,
    seq_len: int,
    batch_size: int,
    precision: str,
    steps: int,
    warmup: int,
    systems: Sequence[str] = ("rtoolkit", "transformers"),
    peak: float | None = None,
) -> dict:
    """Median step time, tokens/s and MFU of each system in `systems` ("rtoolkit", "rtoolkit-compiled",
    "transformers", "transformers-compiled"), stepped in turn on the same batches."""
    import transformers

    from rtoolkit.model import RobertaForMaskedLM, flops_per_token
    from rtoolkit.train.distributed import compile_model
    from rtoolkit.train.loop import autocast, train_step
    from rtoolkit.train.optim import build_optimizer

    torch.manual_seed(0)
    reference = RobertaForMaskedLM(config).state_dict()
    hf_config = transformers.RobertaConfig(**{k: v for k, v in config.to_dict().items() if k != "extra"})
    runners = {}
    for name in systems:
        if name.startswith("rtoolkit"):
            model = RobertaForMaskedLM(config)
            model.load_state_dict(reference)
            model.to(device).train()
            if name.endswith("compiled"):
                compile_model(model)
            opt = build_optimizer(model, lr=1e-4, weight_decay=0.01)

            def step(batch, model=model, opt=opt):
                train_step(model, [batch], optimizer=opt, precision=precision, device=device)

        else:
            model = transformers.RobertaForMaskedLM._from_config(hf_config, attn_implementation="sdpa")
            model.load_state_dict(reference, strict=False)  # same starting weights (HF keys)
            model.to(device).train()
            opt = build_optimizer(model, lr=1e-4, weight_decay=0.01)
            forward = torch.compile(model) if name.endswith("compiled") else model

            def step(batch, forward=forward, opt=opt):
                with autocast(precision, device):
                    out = forward(**batch)
                out.loss.float().backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

        runners[name] = step
    batches = make_batches(config, n=warmup + steps, batch_size=batch_size, seq_len=seq_len, device=device)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for i, batch in enumerate(batches):
        for name, step in runners.items():
            _sync(device)
            t0 = time.perf_counter()
            step(batch)
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    tokens = batch_size * seq_len
    fpt = flops_per_token(config, seq_len, masked_fraction=0.15)
    result: dict = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "config": f"hidden {config.hidden_size}, layers {config.num_hidden_layers}, heads {config.num_attention_heads}, vocab {config.vocab_size}",
        "seq_len": seq_len,
        "batch_size": batch_size,
        "precision": precision,
        "steps": steps,
        "model_gflop_per_token": round(fpt / 1e9, 4),
        "peak_tflops": peak,
        "systems": {},
    }
    for name, ts in times.items():
        median = statistics.median(ts)
        entry = {"step_ms": round(median * 1e3, 2), "tokens_per_s": round(tokens / median, 1)}
        if peak:
            entry["mfu"] = round(tokens / median * fpt / (peak * 1e12), 4)
        result["systems"][name] = entry
    base = result["systems"].get("transformers")
    if base:
        for entry in result["systems"].values():
            entry["vs_transformers"] = round(entry["tokens_per_s"] / base["tokens_per_s"], 2)
    return result


def time_collators(config, *, batch_size: int, seq_len: int, n: int = 10) -> dict:
    """Median ms per batch of rtoolkit's seeded collate_masked and transformers' DataCollatorForLanguageModeling."""
    from tokenizers import Tokenizer as HFTokenizerCore
    from tokenizers import models as tk_models
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    from rtoolkit.data.masking import collate_masked, sequence_seed

    V, mask_id = config.vocab_size, config.vocab_size - 1
    gen = torch.Generator().manual_seed(0)
    rows = [
        torch.cat(
            [torch.tensor([0]), torch.randint(4, V - 1, (seq_len - 2,), generator=gen), torch.tensor([2])]
        )
        for _ in range(batch_size)
    ]
    vocab = {f"t{i}": i for i in range(V)}
    vocab.update({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": mask_id})
    core = HFTokenizerCore(tk_models.WordLevel(vocab=vocab, unk_token="<unk>"))
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", cls_token="<s>", sep_token="</s>",
    )  # fmt: skip
    hf_collator = DataCollatorForLanguageModeling(hf_tok, mlm_probability=0.15)
    ours, theirs = [], []
    for b in range(n):
        t0 = time.perf_counter()
        collate_masked(
            rows, [sequence_seed(0, b, r) for r in range(batch_size)], pad_token_id=1, mask_token_id=mask_id,
            special_ids=[0, 1, 2, 3, mask_id], vocab_size=V,
        )  # fmt: skip
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        hf_collator([{"input_ids": r.tolist()} for r in rows])
        theirs.append(time.perf_counter() - t0)
    return {
        "rtoolkit_collate_ms": round(statistics.median(ours) * 1e3, 2),
        "transformers_collate_ms": round(statistics.median(theirs) * 1e3, 2),
    }


def bench_config(preset: str):
    from rtoolkit.config import RobertaConfig

    if preset == "bench":
        return RobertaConfig(
            hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
        )
    return RobertaConfig.preset(preset)


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
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time rtoolkit --compile and transformers under torch.compile",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak for MFU [default: by name]"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    peak = args.peak_tflops
    if peak is None and device.type == "cuda":
        peak, _ = peak_tflops(torch.cuda.get_device_name(device))
    systems = ["rtoolkit", "transformers"] + (
        ["rtoolkit-compiled", "transformers-compiled"] if args.compile else []
    )
    config = bench_config(args.preset)
    result = measure(
        config=config, device=device, seq_len=args.seq_len, batch_size=args.batch_size, precision=args.precision,
        steps=args.steps, warmup=args.warmup, systems=systems, peak=peak,
    )  # fmt: skip
    result.update(time_collators(config, batch_size=args.batch_size, seq_len=args.seq_len))
    print_result(result, "systems", as_json=args.json)


def print_result(result: dict, rows: str, *, as_json: bool = False) -> None:
    """One JSON object, or `key  value` lines followed by one line per entry of `result[rows]`."""
    if as_json:
        print(json.dumps(result))
        return
    width = max(len(k) for k in [*result, *result[rows]])
    for key, value in result.items():
        if key != rows:
            print(f"{key:>{width}}  {value}")
    for name, entry in result[rows].items():
        print(f"{name:>{width}}  " + "  ".join(f"{k} {v}" for k, v in entry.items()))


if __name__ == "__main__":
    main()
