"""The `rtoolkit` command line: each command turns flags into a config and calls a library function.

Optional dependencies (onnx, tensorrt, gradio) are imported inside the commands that need them, so
`rtoolkit --help` works on a bare install. Known errors print one line on stderr and exit 1 (set
RTOOLKIT_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from rtoolkit import __version__


class UserError(click.ClickException):
    """A one-line error for the user (exit code 1)."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class _Group(click.Group):
    """Turns the library's known exceptions into one line on stderr instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except (
            ValueError,
            FileNotFoundError,
            FileExistsError,
            NotADirectoryError,
            PermissionError,
            ImportError,
            RuntimeError,
        ) as exc:
            if os.environ.get("RTOOLKIT_DEBUG"):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(message) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="rtoolkit")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """rtoolkit: pretrain, finetune, export and serve RoBERTa models (Liu et al., 2019)."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# ------------------------------------------------------------------------------------------ foundation
@main.command("train-tokenizer")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--vocab-size", default=50265, show_default=True, help="Ids in all, specials and <mask> included."
)
@click.option("--min-frequency", default=2, show_default=True, help="Merges seen fewer times are dropped.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the tokenizer files.")
def train_tokenizer_cmd(files: tuple[Path, ...], vocab_size: int, min_frequency: int, out: Path) -> None:
    """Train a byte-level BPE tokenizer (RoBERTa's specials, <mask> last) on text FILES or folders of .txt."""
    from rtoolkit.tokenizer import Tokenizer

    paths = expand_text_files(files)
    tok = Tokenizer.train(paths, vocab_size=vocab_size, min_frequency=min_frequency, show_progress=True)
    tok.save_pretrained(out)
    click.echo(f"trained on {len(paths)} file(s): {tok.vocab_size} ids, <mask>={tok.mask_token_id} -> {out}")


@main.command("info")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
def info_cmd(model_dir: Path, as_json: bool) -> None:
    """Summarise a model folder: architecture, sizes, parameter count, vocabulary."""
    from rtoolkit.checkpoint import model_summary

    summary = model_summary(model_dir)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        click.echo(f"{key:<{width}}  {value}")


def expand_text_files(paths: tuple[Path, ...] | list[Path]) -> list[Path]:
    """Files as given; folders expanded to the .txt/.raw/.tokens files inside them, sorted."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".txt", ".raw", ".tokens"))
            if not found:
                raise UserError(f"{p}: folder holds no .txt, .raw or .tokens files")
            out.extend(found)
        else:
            out.append(p)
    return out


# ------------------------------------------------------------------ pretraining: preprocess, pretrain, plot


# ----------------------------------------------------------------------- finetuning: finetune, evaluate


# ------------------------------------------------------------------------------------------------ export


# ---------------------------------------------------------------------------------- serving: predict, demo


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
