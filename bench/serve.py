"""Serving benchmark: `Predictor.classify` against `transformers.pipeline("text-classification", batch_size=32)`.

One run, one machine, the same weights: a roberta-base-sized classifier (12 layers, width 768, 2 labels, random
weights: throughput does not depend on their values) with a 50,265-id byte-level BPE trained on the bundled books,
over the 872 real SST-2 dev sentences. Systems:

  transformers pipeline   the baseline: batches of 32 in input order, each padded to its longest sentence
  predictor torch         Predictor, PyTorch backend: length-sorted buckets of 32, padded per bucket
  predictor onnx          Predictor, ONNX Runtime on model.onnx (fp32; an export without --optimize)
  predictor onnx-opt      Predictor, backend="auto": model.optimized.onnx (ONNX Runtime fusions, fp32)
  predictor onnx-int8     Predictor, precision="int8": model.int8.onnx (dynamic int8; with --int8)

Systems alternate inside every round (round-robin), so a change in machine load hits all of them alike; the median
over rounds is reported with the ratio to the pipeline. Each system also labels every sentence, and its agreement
with the pipeline's labels is reported (fp32 systems must agree on all 872).

    python bench/serve.py --out runs/bench-serve                 # 3 rounds, all cores
    python bench/serve.py --out runs/bench-serve --rounds 1 --int8
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rtoolkit import Predictor
from rtoolkit.config import RobertaConfig
from rtoolkit.model import RobertaForSequenceClassification
from rtoolkit.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
LABELS = {0: "negative", 1: "positive"}


def read_sst2_dev() -> list[str]:
    with open(DATA / "sst2" / "dev.tsv", encoding="utf-8", newline="") as f:
        return [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def make_model(folder: Path) -> Path:
    """A roberta-base-sized classifier with random weights and a 50,265-id BPE trained on the bundled books."""
    if (folder / "model.safetensors").is_file():
        return folder
    books = sorted((DATA / "corpus" / "gutenberg").rglob("*.txt"))
    logging.info("training a 50,265-id BPE on %d books", len(books))
    tokenizer = Tokenizer.train(books, vocab_size=50265, min_frequency=2)
    torch.manual_seed(0)
    config = RobertaConfig.base(vocab_size=max(50265, tokenizer.vocab_size), id2label=LABELS)
    RobertaForSequenceClassification(config).eval().save_pretrained(folder, tokenizer=tokenizer)
    return folder


def make_export(model_dir: Path, folder: Path, *, optimize: bool, int8: bool) -> Path:
    from rtoolkit.export.pipeline import export

    wanted = (
        ["model.onnx"]
        + (["model.optimized.onnx"] if optimize else [])
        + (["model.int8.onnx"] if int8 else [])
    )
    if not all((folder / name).is_file() for name in wanted):
        export(model_dir, folder, optimize=optimize, quantize="int8" if int8 else None)
    return folder


def transformers_pipeline(model_dir: Path) -> Callable[[list[str]], list[str]]:
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(model_dir), device="cpu", batch_size=32)
    return lambda texts: [r["label"] for r in classifier(texts)]


def predictor(path: Path, threads: int, **kwargs) -> Callable[[list[str]], list[str]]:
    p = Predictor.from_pretrained(path, batch_size=32, num_threads=threads, **kwargs)
    logging.info("%s runs %s", p, p.artifact)
    return lambda texts: [r["label"] for r in p.classify(texts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=REPO / "runs" / "bench-serve", help="work folder and results"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="timed passes over the 872 sentences per system"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and ONNX Runtime threads")
    parser.add_argument("--int8", action="store_true", help="also time the dynamic-int8 export")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    texts = read_sst2_dev()
    model_dir = make_model(args.out / "model")
    plain_dir = make_export(model_dir, args.out / "export-fp32", optimize=False, int8=False)
    export_dir = make_export(model_dir, args.out / "export", optimize=True, int8=args.int8)
    systems: dict[str, Callable[[list[str]], list[str]]] = {
        "transformers pipeline (batch 32)": transformers_pipeline(model_dir),
        "predictor torch": predictor(model_dir, args.threads, backend="torch"),
        "predictor onnx": predictor(plain_dir, args.threads, backend="onnx"),
        "predictor onnx-opt (auto)": predictor(export_dir, args.threads),
    }
    if args.int8:
        systems["predictor onnx-int8"] = predictor(export_dir, args.threads, precision="int8")

    labels: dict[str, list[str]] = {}
    times: dict[str, list[float]] = {name: [] for name in systems}
    for run in systems.values():
        run(texts[:64])  # warm-up: allocations, ONNX Runtime arenas
    for r in range(args.rounds):
        for name, run in systems.items():
            start = time.perf_counter()
            labels[name] = run(texts)
            times[name].append(time.perf_counter() - start)
            logging.info("round %d  %-34s %.2f s", r + 1, name, times[name][-1])

    base_name = next(iter(systems))
    base = statistics.median(times[base_name])
    tokenizer = Tokenizer.from_pretrained(model_dir)
    lengths = [len(ids) for ids in tokenizer.encode_batch(texts)]
    results = {
        "sentences": len(texts),
        "tokens_mean": sum(lengths) / len(lengths),
        "tokens_max": max(lengths),
        "threads": args.threads,
        "rounds": args.rounds,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "torch": torch.__version__,
        "systems": {},
    }
    print(
        f"\nSST-2 dev, {len(texts)} sentences ({results['tokens_mean']:.1f} tokens on average), "
        f"{args.threads} threads, median of {args.rounds} round(s)\n"
    )
    print("| system | seconds | sentences/s | vs pipeline | labels equal to the pipeline's |")
    print("|---|---|---|---|---|")
    for name in systems:
        seconds = statistics.median(times[name])
        agree = sum(a == b for a, b in zip(labels[name], labels[base_name], strict=True))
        results["systems"][name] = {
            "seconds": seconds,
            "all_rounds": times[name],
            "sentences_per_s": len(texts) / seconds,
            "speedup": base / seconds,
            "label_agreement": agree / len(texts),
        }
        print(
            f"| {name} | {seconds:.2f} | {len(texts) / seconds:.1f} | {base / seconds:.2f}x | "
            f"{agree}/{len(texts)} |"
        )
    print(f"\nload average at the end: {results['load_average_at_end']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
