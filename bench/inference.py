"""Inference benchmark: the export layer's artifacts against `transformers` eager, in one run on one machine.

Part 1, speed, on a roberta-base-sized model (12 layers, width 768, random weights, 2-label classifier head):
  latency     batch 1, 128 tokens, median ms per call
  throughput  batch 32 over the 872 real SST-2 dev sentences (padded per batch), sentences per second
for: transformers eager (the baseline), rtoolkit torch eager, ONNX fp32, ONNX optimized (fusions), ONNX int8 (dynamic,
from the optimized graph), and on a CUDA machine ONNX fp16 (CUDA execution provider) and TensorRT fp16. Systems are
alternated inside every round (round-robin), so a change in machine load hits all of them alike; the median over
rounds is reported, with ratios against transformers eager measured in the same run.

Part 2, int8 accuracy: a small model (4 layers, width 256, its own 8K BPE trained on the Gutenberg books in ../shared/data) finetuned
briefly on the real SST-2 train set, exported, optimized and quantized with `rtoolkit.export.export(...,
eval_data=dev.tsv)`; the fp32 and int8 dev accuracies are those recorded in export_manifest.json.

    python bench/inference.py --out runs/bench-inference            # both parts
    python bench/inference.py --out runs/bench-inference --skip-accuracy --rounds 5
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rtoolkit.config import RobertaConfig
from rtoolkit.model import RobertaForSequenceClassification
from rtoolkit.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"


def read_sst2(split: str) -> tuple[list[str], list[int]]:
    with open(DATA / "sst2" / f"{split}.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def make_tokenizer(folder: Path, vocab_size: int) -> Tokenizer:
    if (folder / "tokenizer.json").is_file():
        return Tokenizer.from_pretrained(folder)
    books = sorted((DATA / "corpus" / "gutenberg").rglob("*.txt"))
    tok = Tokenizer.train(books, vocab_size=vocab_size, min_frequency=2)
    tok.save_pretrained(folder)
    return tok


# ------------------------------------------------------------------------------------------------ speed
def onnx_runner(path: Path, threads: int, providers: list[str] | None = None) -> Callable[[dict], object]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)


def torch_runner(model, device: str = "cpu") -> Callable[[dict], object]:
    def run(feeds):
        with torch.inference_mode():
            ids = torch.from_numpy(feeds["input_ids"]).to(device)
            mask = torch.from_numpy(feeds["attention_mask"]).to(device)
            out = model(input_ids=ids, attention_mask=mask).logits
            if device != "cpu":
                torch.cuda.synchronize()
            return out

    return run


def speed(args, out: Path) -> dict:
    from rtoolkit.export import export
    from transformers import RobertaConfig as HFConfig
    from transformers import RobertaForSequenceClassification as HFModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model_dir, export_dir = out / "base-model", out / "base-export"
    tokenizer = make_tokenizer(out / "tokenizer-50k", vocab_size=50265)
    config = RobertaConfig.base(vocab_size=tokenizer.vocab_size)
    ours = RobertaForSequenceClassification(config).eval()
    ours.save_pretrained(model_dir, tokenizer=tokenizer)
    t0 = time.perf_counter()
    manifest = export(
        model_dir, export_dir, optimize=True, quantize="int8", fp16=torch.cuda.is_available(), trt=args.trt
    )
    export_s = time.perf_counter() - t0
    hf = HFModel(
        HFConfig(
            **{k: v for k, v in config.to_dict().items() if k != "architectures"}, attn_implementation="eager"
        )
    ).eval()
    missing, unexpected = hf.load_state_dict(ours.state_dict(), strict=False)
    assert not [k for k in missing if "position_ids" not in k], missing

    systems: dict[str, Callable] = {
        "transformers eager": torch_runner(hf),
        "rtoolkit torch eager": torch_runner(ours),
        "ONNX fp32": onnx_runner(export_dir / "model.onnx", args.threads),
        "ONNX optimized": onnx_runner(export_dir / "model.optimized.onnx", args.threads),
        "ONNX int8": onnx_runner(export_dir / "model.int8.onnx", args.threads),
    }
    if torch.cuda.is_available():
        cuda = ["CUDAExecutionProvider"]
        systems["transformers eager (GPU fp32)"] = torch_runner(copy.deepcopy(hf).cuda(), "cuda")
        systems["ONNX fp16 (CUDA EP)"] = onnx_runner(export_dir / "model.fp16.onnx", args.threads, cuda)
        for art in manifest.artifacts:
            if art.format == "tensorrt":
                from rtoolkit.export import TensorRTRunner

                runner = TensorRTRunner(export_dir / art.file)
                systems["TensorRT fp16"] = runner.run

    ids = np.asarray(
        [tokenizer.bos_token_id] + [(7 * i) % 4000 + 10 for i in range(126)] + [tokenizer.eos_token_id]
    )
    single = {"input_ids": ids[None].astype(np.int64), "attention_mask": np.ones((1, 128), np.int64)}
    dev, _ = read_sst2("dev")
    batches = []
    for i in range(0, len(dev), 32):
        enc = tokenizer(dev[i : i + 32], max_length=128)
        batches.append({k: v.numpy() for k, v in enc.items()})

    for run in systems.values():  # warm-up (and a first-call allocation) outside the timings
        for _ in range(3):
            run(single)
        run(batches[0])
    latency = {name: [] for name in systems}
    for r in range(args.rounds):
        for name, run in systems.items():
            times = []
            for _ in range(args.iters):
                t = time.perf_counter()
                run(single)
                times.append(time.perf_counter() - t)
            latency[name].append(statistics.median(times) * 1e3)
        logging.info("latency round %d: %s", r, {k: round(v[-1], 1) for k, v in latency.items()})
    # Throughput: every dev batch goes through every system back to back, so load changes hit all alike.
    seconds = {name: 0.0 for name in systems}
    used = batches[: args.throughput_batches]
    for i, feeds in enumerate(used):
        for name, run in systems.items():
            t = time.perf_counter()
            run(feeds)
            seconds[name] += time.perf_counter() - t
        if i % 4 == 3:
            logging.info("throughput: %d of %d batches", i + 1, len(used))
    sentences = sum(len(f["input_ids"]) for f in used)
    throughput = {name: [sentences / s] for name, s in seconds.items()}
    base_lat = statistics.median(latency["transformers eager"])
    base_thr = statistics.median(throughput["transformers eager"])
    rows = []
    for name in systems:
        lat, thr = statistics.median(latency[name]), statistics.median(throughput[name])
        rows.append(
            {
                "system": name,
                "latency_ms": lat,
                "latency_speedup": base_lat / lat,
                "throughput_sps": thr,
                "throughput_speedup": thr / base_thr,
                "latency_rounds_ms": latency[name],
            }
        )
    sizes = {
        f: (export_dir / f).stat().st_size for f in ("model.onnx", "model.optimized.onnx", "model.int8.onnx")
    }
    return {
        "rows": rows,
        "export_seconds": export_s,
        "file_bytes": sizes,
        "fused_operators": manifest.artifact("model.optimized.onnx").fused_operators,
        "validation": {a.file: a.validation for a in manifest.artifacts},
    }


# --------------------------------------------------------------------------------------------- accuracy
def accuracy(args, out: Path) -> dict:
    from rtoolkit.export import export

    torch.set_num_threads(args.threads)
    tokenizer = make_tokenizer(out / "tokenizer-8k", vocab_size=8000)
    texts, labels = read_sst2("train")
    config = RobertaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=130,
        id2label={0: "negative", 1: "positive"},
    )
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = RobertaForSequenceClassification(config)
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    model.train()
    t0 = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(len(texts), (32,), generator=gen).tolist()
        enc = tokenizer([texts[i] for i in idx], max_length=64)
        loss = model(
            enc["input_ids"], enc["attention_mask"], labels=torch.tensor([labels[i] for i in idx])
        ).loss
        loss.backward()
        warm = max(1, args.steps // 16)
        scale = min((step + 1) / warm, (args.steps - step) / (args.steps - warm))
        for group in optim.param_groups:
            group["lr"] = args.lr * scale
        optim.step()
        optim.zero_grad()
        if step % 200 == 0:
            logging.info("finetune step %d loss %.3f", step, loss.item())
    train_s = time.perf_counter() - t0
    model.eval()
    model_dir = model.save_pretrained(out / "sst2-small", tokenizer=tokenizer)
    results = {}
    for variant, exclude in (("all", ()), ("head excluded", ("head",))):
        manifest = export(
            model_dir,
            out / f"sst2-small-export-{variant.replace(' ', '-')}",
            optimize=True,
            quantize="int8",
            exclude=exclude,
            eval_data=DATA / "sst2" / "dev.tsv",
        )
        v32 = manifest.artifact("model.onnx").validation
        v8 = manifest.artifact("model.int8.onnx").validation
        results[variant] = {
            "fp32_accuracy": v32["score"],
            "int8_accuracy": v8["score"],
            "drop_points": v8["accuracy_drop"],
            "top1_agreement": v8["top1_agreement"],
            "passed": manifest.artifact("model.int8.onnx").passed,
        }
    return {
        "config": {
            "layers": 4,
            "hidden": 256,
            "vocab": tokenizer.vocab_size,
            "steps": args.steps,
            "batch": 32,
            "max_len": 64,
            "lr": args.lr,
        },
        "train_seconds": train_s,
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-inference"))
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for torch and ORT alike")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10, help="latency calls per system per round")
    parser.add_argument("--throughput-batches", type=int, default=28, help="batches of 32 (28 = all 872 dev)")
    parser.add_argument("--steps", type=int, default=1500, help="finetuning steps for the accuracy part")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--trt", action="store_true", help="also build and time a TensorRT engine (GPU)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"threads": args.threads, "load_before": os.getloadavg(), "torch": torch.__version__}
    if not args.skip_speed:
        report["speed"] = speed(args, args.out)
    if not args.skip_accuracy:
        report["accuracy"] = accuracy(args, args.out)
    report["load_after"] = os.getloadavg()
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    if "speed" in report:
        print(
            "| system | b1 s128 latency (ms) | vs transformers | b32 SST-2 dev (sent/s) | vs transformers |"
        )
        print("|---|---|---|---|---|")
        for r in report["speed"]["rows"]:
            print(
                f"| {r['system']} | {r['latency_ms']:.1f} | {r['latency_speedup']:.2f}x | "
                f"{r['throughput_sps']:.1f} | {r['throughput_speedup']:.2f}x |"
            )
    if "accuracy" in report:
        for variant, r in report["accuracy"]["results"].items():
            print(
                f"int8 ({variant}): fp32 {r['fp32_accuracy']:.2f}%  int8 {r['int8_accuracy']:.2f}%  "
                f"drop {r['drop_points']:.2f} points  agreement {r['top1_agreement']:.4f}"
            )
    print(f"load average before {report['load_before']}, after {report['load_after']}")


if __name__ == "__main__":
    main()
