"""What the quickstart's pretraining buys on the paper's other benchmarks: short CPU finetuning runs of SQuAD (split by
article), RACE and CoNLL-2003 NER, from the quickstart model and from a random init of the same shape.

Every run is a plain `rtoolkit finetune` command (printed before it runs); the random-init encoder has the quickstart
model's config and tokenizer, with weights drawn before any training (seed 0). Results (each run's best and final
evaluation) go to WORK/results.json and a markdown table on stdout.

    rtoolkit pretrain --out runs/quickstart        # the quickstart model (5 minutes)
    python bench/finetune_families.py --model runs/quickstart/final --work runs/families
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

# Each family's run: its named task, data folder and the settings that fit a short CPU run of a 128-token model. The
# learning rate is raised from the paper's (tuned for 125M parameters and thousands of steps) as in the GLUE runs of
# docs/finetuning.md; everything else is the task preset.
RUNS = {
    "squad": ["--data-dir", "{data}/squad1", "--lr", "1e-3", "--epochs", "1", "--batch-size", "32",
              "--max-length", "128", "--stride", "48"],
    "race": ["--data-dir", "{data}/race", "--lr", "1e-3", "--epochs", "1", "--batch-size", "16",
             "--max-length", "128", "--max-train-samples", "6000"],
    "conll2003": ["--data-dir", "{data}/conll2003", "--lr", "1e-3", "--epochs", "3", "--batch-size", "32",
                  "--max-length", "128"],
}  # fmt: skip
METRICS = {"squad": ("exact_match", "f1"), "race": ("accuracy", "accuracy_middle", "accuracy_high"),
           "conll2003": ("f1", "precision", "recall")}  # fmt: skip


def random_encoder(model: Path, out: Path) -> Path:
    """The same config and tokenizer as `model`, with freshly initialised weights (seed 0)."""
    import torch

    from rtoolkit import RobertaConfig, RobertaForMaskedLM, Tokenizer

    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        config = RobertaConfig.from_pretrained(model)
        RobertaForMaskedLM(config).save_pretrained(out, tokenizer=Tokenizer.from_pretrained(model))
    return out


def finetune(encoder: Path, task: str, out: Path, data: Path) -> dict:
    command = ["rtoolkit", "finetune", "--model", str(encoder), "--task", task, "--out", str(out), "--overwrite",
               "--device", "cpu", *(a.format(data=data) for a in RUNS[task])]  # fmt: skip
    print("$", shlex.join(command), flush=True)
    started = time.perf_counter()
    binary = Path(sys.executable).parent / "rtoolkit"
    subprocess.run([str(binary), *command[1:]], check=True)
    results = json.loads((out / "eval_results.json").read_text())
    return {"seconds": round(time.perf_counter() - started, 1), **results}


def table(results: dict) -> str:
    lines = ["| task | encoder | metrics best (final) | steps | seconds |", "|---|---|---|---|---|"]
    for key, r in results.items():
        task, encoder = key.split("/")
        best, final = r["best"], r["final"]
        scale = 1 if task == "squad" else 100  # SQuAD's EM/F1 are 0-100 already, the other metrics fractions
        shown = ", ".join(
            f"{m} {scale * best[f'dev/{m}']:.1f} ({scale * final[f'dev/{m}']:.1f})" for m in METRICS[task]
        )
        lines.append(f"| {task} | {encoder} | {shown} | {final['step']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="The pretrained (quickstart) model folder.")
    parser.add_argument("--work", type=Path, required=True, help="Folder for the runs and results.json.")
    parser.add_argument("--data", type=Path, default=DATA, help="Folder holding squad1/, race/, conll2003/.")
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), help="Run only these tasks.")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    encoders = {"pretrained": args.model, "random init": random_encoder(args.model, args.work / "random")}
    path = args.work / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for task in args.only or RUNS:
        for name, encoder in encoders.items():
            out = args.work / f"{task}-{name.replace(' ', '-')}"
            results[f"{task}/{name}"] = finetune(encoder, task, out, args.data)
            path.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
