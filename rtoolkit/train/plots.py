"""Loss curves of pretraining runs (`rtoolkit plot`): training and held-out MLM loss against step."""

from __future__ import annotations

import os
from pathlib import Path

from rtoolkit.train.loop import METRICS_NAME, read_metrics


def plot_runs(
    run_dirs: list[str | os.PathLike], out_png: str | os.PathLike, *, labels: list[str] | None = None
) -> Path:
    """Draw training and held-out MLM loss against step for one or more runs into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or [Path(d).name for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"got {len(run_dirs)} runs but {len(labels)} labels")
    out_png = Path(out_png)
    if out_png.is_dir():
        raise ValueError(
            f"--out {out_png} is a folder; give the PNG file's path (e.g. {out_png / 'loss.png'})"
        )
    runs = []
    for run in run_dirs:
        path = Path(run) / METRICS_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {run} a pretraining run folder?")
        records = read_metrics(path)
        if not any("tokens_per_s" in r for r in records):
            raise ValueError(
                f"{path} holds no pretraining records (a finetuning run's, or empty); nothing to plot"
            )
        runs.append(records)
    fig, (ax_train, ax_eval) = plt.subplots(1, 2, figsize=(13, 4))
    for records, label in zip(runs, labels, strict=True):
        train = [r for r in records if "eval" not in r]
        line = ax_train.plot([r["step"] for r in train], [r["loss"] for r in train], label=label)[0]
        for i, name in enumerate(sorted({r["eval"] for r in records if "eval" in r})):
            points = [r for r in records if r.get("eval") == name]
            ax_eval.plot(
                [r["step"] for r in points],
                [r["loss"] for r in points],
                marker="o",
                markersize=3,
                color=line.get_color(),
                linestyle=["-", "--", ":"][i % 3],
                label=f"{label}: {name}",
            )
    ax_train.set(title="training MLM loss", xlabel="step", ylabel="loss (nats)")
    ax_eval.set(title="held-out MLM loss (fixed masks)", xlabel="step", ylabel="loss (nats)")
    for ax in (ax_train, ax_eval):
        ax.grid(alpha=0.3)
    ax_train.legend(fontsize=8)
    ax_eval.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


__all__ = ["plot_runs"]
