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
from rtoolkit.cli_config import EXISTING_DIR, config_options, field_option
from rtoolkit.data.corpus import SENTENCE_MODES
from rtoolkit.predictor import POOLINGS
from rtoolkit.runtime.artifacts import EXCLUDE_GROUPS, QUANTIZE_MODES, TASKS, VALIDATION_KEYS
from rtoolkit.runtime.backends import BACKENDS, PRECISIONS
from rtoolkit.train.finetune import FinetuneConfig
from rtoolkit.train.pretrain import PretrainConfig


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
@click.option("--overwrite", is_flag=True, help="Replace the tokenizer in --out (never a model's).")
def train_tokenizer_cmd(
    files: tuple[Path, ...], vocab_size: int, min_frequency: int, out: Path, overwrite: bool
) -> None:
    """Train a byte-level BPE tokenizer (RoBERTa's specials, <mask> last) on text FILES or folders of .txt."""
    from rtoolkit.tokenizer import Tokenizer, check_tokenizer_out

    check_tokenizer_out(out, overwrite=overwrite)
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
@main.command("preprocess")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--tokenizer",
    "tokenizer_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Tokenizer folder (or a model folder with tokenizer files).",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the token files.")
@click.option(
    "--valid-fraction", default=0.01, show_default=True, help="Share of documents held out for validation."
)
@click.option("--workers", default=1, show_default=True, help="Tokenizer processes.")
@click.option(
    "--sentences",
    type=click.Choice(SENTENCE_MODES),
    default="auto",
    show_default=True,
    help="How sentences are found: auto (a rule-based splitter) or lines (each line is one sentence already).",
)
@click.option(
    "--keep-newlines",
    is_flag=True,
    help="Keep line breaks inside documents (default: join lines with a space).",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace a folder made from other inputs or another tokenizer."
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def preprocess_cmd(
    inputs, tokenizer_dir, out, valid_fraction, workers, sentences, keep_newlines, overwrite, no_progress
) -> None:
    """Tokenize text FILES or folders into token files for `rtoolkit pretrain` (documents: blank-line blocks)."""
    from rtoolkit.data.corpus import preprocess

    meta = preprocess(
        expand_text_files(inputs),
        tokenizer_dir=tokenizer_dir,
        out_dir=out,
        valid_fraction=valid_fraction,
        workers=workers,
        sentences=sentences,
        keep_newlines=keep_newlines,
        overwrite=overwrite,
        progress=not no_progress,
    )
    train, valid = meta["splits"]["train"], meta["splits"]["valid"]
    click.echo(
        f"{out}: train {train['tokens']:,} tokens / {train['documents']:,} documents, valid {valid['tokens']:,} "
        f"tokens / {valid['documents']:,} documents ({meta['dtype']}, {meta['tokens_per_second']:,} tokens/s)"
    )


@main.command("pretrain")
@config_options(
    PretrainConfig,
    overrides={
        "data": {"type": EXISTING_DIR},
        "eval_data": {"type": EXISTING_DIR},
        "init_from": {"type": EXISTING_DIR},
        "on_nonfinite": {
            "names": ["--skip-nonfinite"], "flag_value": "skip", "type": None, "show_default": False,
            "help": "Skip (and count) steps with a NaN/inf loss instead of stopping.",
        },
    },
)  # fmt: skip
def pretrain_cmd(config: PretrainConfig) -> None:
    """Masked-LM pretraining with RoBERTa's recipe; with no --data, a few-minute tiny run on the bundled sample.

    Writes OUT/checkpoints/step-N/ (HF model folders + train_state.pt), OUT/final/, OUT/metrics.jsonl and
    OUT/run_config.json. For several GPUs or nodes: `torchrun --nproc-per-node N -m rtoolkit.cli pretrain ...`.
    """
    from rtoolkit.train.pretrain import pretrain

    final = pretrain(config)
    if os.environ.get("RANK", "0") == "0":
        click.echo(f"model -> {final}")


@main.command("plot")
@click.argument(
    "run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--out",
    "out_png",
    type=click.Path(path_type=Path),
    default=None,
    help="PNG path [default: RUN_DIR/loss.png].",
)
@click.option(
    "--label", "labels", multiple=True, help="Legend label per run (repeatable) [default: folder names]."
)
def plot_cmd(run_dirs, out_png, labels) -> None:
    """Draw training and held-out loss curves of one or more pretraining runs into a PNG."""
    from rtoolkit.train.pretrain import plot_runs

    path = plot_runs(list(run_dirs), out_png or run_dirs[0] / "loss.png", labels=list(labels) or None)
    click.echo(f"plot -> {path}")


# ----------------------------------------------------------------------- finetuning: finetune, evaluate
# Custom data options, named alike in finetune and evaluate.
_CUSTOM_DATA = {
    "train_file": {"names": ["--train"]},
    "validation_file": {"names": ["--validation"]},
    "test_file": {"names": ["--test"]},
    "data_format": {"names": ["--format"]},
}


@main.command("finetune")
@config_options(FinetuneConfig, overrides=_CUSTOM_DATA)
def finetune_cmd(config: FinetuneConfig) -> None:
    """Finetune on a GLUE task (--task, --data-dir) or custom CSV/TSV/JSONL data (--train, --validation).

    Writes OUT/checkpoints/step-N/, OUT/best/ (best by the task's metric), OUT/final/, OUT/metrics.jsonl and
    OUT/eval_results.json. Launch with `torchrun --nproc-per-node N -m rtoolkit.cli finetune ...` for several GPUs.
    """
    from rtoolkit.train.finetune import finetune

    results = finetune(config)
    if os.environ.get("RANK", "0") != "0":
        return
    key = results["main_metric"]
    best = results["best"]
    click.echo(f"best {key} {best[key]:.4f} at step {best['step']} -> {results['best_dir']}")
    click.echo(
        f"final {key} {results['final'][key]:.4f} at step {results['steps']} -> {results['final_dir']}"
    )
    for path in results.get("predictions", []):
        click.echo(f"predictions -> {path}")


def _finetune_field_options(command):
    """Options of `evaluate` that are finetuning settings too (the same names, types and help)."""
    options = [
        field_option(FinetuneConfig, "model", help="Finetuned model folder (e.g. OUT/best)."),
        field_option(FinetuneConfig, "task"),
        field_option(FinetuneConfig, "data_dir"),
        click.option(
            "--split",
            default="dev",
            show_default=True,
            help="GLUE split (dev = MNLI's matched and mismatched).",
        ),
        field_option(FinetuneConfig, "validation_file", names=["--validation"], help="Custom labelled data."),
        *(field_option(FinetuneConfig, name) for name in ("text_column", "text_pair_column", "label_column")),
        field_option(FinetuneConfig, "data_format", names=["--format"]),
        field_option(FinetuneConfig, "tokenizer"),
        field_option(FinetuneConfig, "max_length"),
        field_option(FinetuneConfig, "stride"),
        field_option(FinetuneConfig, "eval_batch_size", names=["--batch-size"], param="batch_size"),
        field_option(FinetuneConfig, "max_eval_samples", names=["--max-samples"], param="max_samples"),
        field_option(FinetuneConfig, "precision"),
        field_option(FinetuneConfig, "device"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command("evaluate")
@_finetune_field_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
def evaluate_cmd(as_json: bool, **options) -> None:
    """Score a finetuned model on a GLUE split or a custom labelled file (loss and the task's metrics)."""
    from rtoolkit.train.finetune import evaluate_model

    results = evaluate_model(**options)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    width = max(len(k) for k in results)
    for key, value in results.items():
        click.echo(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")


# ------------------------------------------------------------------------------------------------ export
@main.command("export")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Export folder (self-contained).")
@click.option(
    "--task",
    type=click.Choice(["auto", *TASKS]),
    default="auto",
    show_default=True,
    help="What the graph outputs; auto reads the checkpoint's architecture.",
)
@click.option(
    "--opset", default=17, show_default=True, help="ONNX opset (17 or more: one LayerNormalization node)."
)
@click.option("--optimize", is_flag=True, help="Add model.optimized.onnx (ONNX Runtime transformer fusions).")
@click.option(
    "--quantize", type=click.Choice(QUANTIZE_MODES), default=None, help="Add model.int8.onnx (dynamic int8)."
)
@click.option("--per-channel", is_flag=True, help="int8: one scale per output channel.")
@click.option(
    "--exclude",
    multiple=True,
    type=click.Choice(EXCLUDE_GROUPS),
    help="int8: keep these node groups in fp32 (repeatable).",
)
@click.option("--fp16", is_flag=True, help="Add model.fp16.onnx (for GPUs; LayerNorm kept in fp32).")
@click.option("--trt", is_flag=True, help="Build a TensorRT fp16 engine (needs tensorrt and a CUDA GPU).")
@click.option(
    "--max-batch", default=32, show_default=True, help="Largest batch (TensorRT profile, manifest)."
)
@click.option("--max-seq-len", type=int, default=None, help="Longest input in tokens [default: the model's].")
@click.option("--no-validate", is_flag=True, help="Skip comparing each artifact with its reference.")
@click.option(
    "--eval-data",
    type=click.Path(path_type=Path),
    default=None,
    help="Labeled GLUE-style TSV: report the dev metric of every precision (and fail int8/fp16 on a >1 point drop).",
)
def export_cmd(
    model_dir: Path,
    out: Path,
    task: str,
    opset: int,
    optimize: bool,
    quantize: str | None,
    per_channel: bool,
    exclude: tuple[str, ...],
    fp16: bool,
    trt: bool,
    max_batch: int,
    max_seq_len: int | None,
    no_validate: bool,
    eval_data: Path | None,
) -> None:
    """Export MODEL_DIR to ONNX (and optimized, int8, fp16, TensorRT), validating each artifact."""
    from tqdm import tqdm

    from rtoolkit.export import export

    steps = 1 + optimize + (quantize is not None) + fp16 + trt
    with tqdm(total=steps, desc="export", unit="step", disable=None) as bar:
        started: list[str] = []

        def on_step(name: str) -> None:
            if started:
                bar.update(1)
            started.append(name)
            bar.set_description(name)

        manifest = export(
            model_dir,
            out,
            task=task,
            opset=opset,
            optimize=optimize,
            quantize=quantize,
            per_channel=per_channel,
            exclude=exclude,
            fp16=fp16,
            trt=trt,
            max_batch=max_batch,
            max_seq_len=max_seq_len,
            validate=not no_validate,
            eval_data=eval_data,
            on_step=on_step,
        )
        bar.update(1)
    click.echo(f"{manifest.task} export in {out} (opset {manifest.opset}):")
    for art in manifest.artifacts:
        v = art.validation
        family_keys = [k for k in v if k.endswith("_agreement") and k not in VALIDATION_KEYS]  # answers, tags
        numbers = ", ".join(f"{k} {v[k]:.4g}" for k in (*VALIDATION_KEYS, *family_keys) if k in v)
        status = ("passed" if art.passed else "FAILED") if v else "not validated"
        click.echo(f"  {art.file:<28} {art.precision:<5} {status:<13} {numbers}")


# ---------------------------------------------------------------------------------- serving: predict, demo
QUICKSTART_MODEL = Path("runs") / "quickstart" / "final"


def _serving_options() -> list:
    """The options that choose the model and how it runs (every `rtoolkit predict` command)."""
    return [
        click.option(
            "--model",
            "model_dir",
            required=True,
            type=click.Path(path_type=Path),
            help="Model folder (pretrain/finetune or Hugging Face) or export folder.",
        ),
        click.option(
            "--backend",
            type=click.Choice(BACKENDS),
            default="auto",
            show_default=True,
            help="auto: TensorRT on CUDA > optimized ONNX > ONNX > torch.",
        ),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
        click.option(
            "--precision",
            type=click.Choice([p for p in PRECISIONS if p is not None]),
            default=None,
            help="Pick this export (default: fp32, fp16 for CUDA exports); the torch backend runs fp16/bf16 on CUDA.",
        ),
        click.option("--batch-size", default=32, show_default=True, help="Inputs per forward pass."),
        click.option(
            "--max-length",
            type=int,
            default=None,
            help="Token limit [default: the model's].",
        ),
    ]


def _apply(command, options: list):
    for option in reversed(options):
        command = option(command)
    return command


def _predictor_options(command):
    """Options of the `rtoolkit predict` commands that read texts."""
    return _apply(
        command,
        [
            click.argument("texts", nargs=-1),
            *_serving_options(),
            click.option(
                "--input",
                "input_file",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Read texts from FILE, one per line (- for stdin).",
            ),
            click.option(
                "--no-truncation",
                is_flag=True,
                help="Fail on texts over the limit instead of truncating them.",
            ),
        ],
    )


def _record_options(command):
    """Options of the `rtoolkit predict` commands that read JSON records (answer, choose)."""
    return _apply(
        command,
        [
            *_serving_options(),
            click.option(
                "--input",
                "input_file",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Read JSON lines from FILE (- for stdin), one record per line.",
            ),
        ],
    )


def _read_records(input_file: Path | None, given: dict | None, fields: dict[str, type]) -> list[dict]:
    """Records from the command's own options (`given`, when any is set) or from JSON lines (`--input`, stdin);
    every record must hold `fields` with their types (str, or list of str); errors name the line."""
    if given is not None and input_file is not None:
        raise UserError("give the record as options or with --input, not both")
    if given is not None:
        records, name = [given], "the options"
    else:
        name, text = _read_input(
            input_file, f"no input: pass {', '.join('--' + f for f in fields)} or JSON lines with --input"
        )
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{name} line {number}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise UserError(f"{name} line {number}: expected a JSON object, got {type(record).__name__}")
            records.append(record | {"_line": number})
        if not records:
            raise UserError(f"{name} holds no records")
    for record in records:
        where = f"{name} line {record['_line']}" if "_line" in record else name
        for field, kind in fields.items():
            value = record.get(field)
            ok = (
                isinstance(value, str) and value.strip()
                if kind is str
                else (isinstance(value, list) and value and all(isinstance(v, str) for v in value))
            )
            if not ok:
                raise UserError(
                    f"{where}: '{field}' must be a non-empty {'string' if kind is str else 'list of strings'}"
                )
    return records


def _read_input(input_file: Path | None, nothing: str) -> tuple[str, str]:
    """(its name, its text) of --input FILE, of stdin for `--input -` or when stdin is not a terminal; the error
    `nothing` when there is neither."""
    from rtoolkit.tokenizer import decode_text, read_text_file

    if input_file is not None and str(input_file) != "-":
        if not input_file.is_file():
            raise UserError(f"input file not found: {input_file}")
        return str(input_file), read_text_file(input_file)
    if input_file is not None or not sys.stdin.isatty():
        return "stdin", decode_text(sys.stdin.buffer.read(), "stdin")
    raise UserError(nothing)


def _read_texts(texts: tuple[str, ...], input_file: Path | None) -> list[str]:
    """Texts from arguments, --input FILE (or -), or stdin when it is not a terminal; blank lines are errors."""
    if texts and input_file is not None:
        raise UserError("give texts as arguments or with --input, not both")
    if texts:
        return list(texts)
    name, text = _read_input(input_file, "no texts: pass TEXT arguments, --input FILE, or lines on stdin")
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise UserError(f"{name} line {number}: empty line; every line must hold one text")
    if not lines:
        raise UserError(f"{name} holds no text")
    return lines


def _load_predictor(model_dir: Path, backend: str, device: str, precision, batch_size: int, max_length):
    from rtoolkit.predictor import Predictor

    return Predictor.from_pretrained(
        model_dir,
        backend=backend,
        device=device,
        precision=precision,
        batch_size=batch_size,
        max_length=max_length,
    )


def _emit_json_lines(count: int, run, record) -> None:
    """Print one JSON object per input; `run(start, stop)` works on chunks so large inputs stream out."""
    from tqdm import tqdm

    chunk = 1024
    with tqdm(total=count, unit="text", disable=count <= chunk or None, file=sys.stderr) as bar:
        for start in range(0, count, chunk):
            stop = min(start + chunk, count)
            for i, result in enumerate(run(start, stop), start=start):
                click.echo(json.dumps(record(i, result), ensure_ascii=False))
            bar.update(stop - start)


@main.group("predict")
def predict_group() -> None:
    """Run a model on texts (arguments, --input FILE or stdin lines); one JSON object per text on stdout."""


@predict_group.command("fill-mask")
@_predictor_options
@click.option("--top-k", default=5, show_default=True, help="Predictions per <mask>.")
def predict_fill_mask_cmd(
    texts, model_dir, backend, device, precision, input_file, batch_size, max_length, no_truncation, top_k
) -> None:
    """Predict the word behind each <mask>: {"text", "predictions": [{"token", "token_str", "score", "sequence"}]}."""
    items = _read_texts(texts, input_file)
    predictor = _load_predictor(model_dir, backend, device, precision, batch_size, max_length)
    _emit_json_lines(
        len(items),
        lambda a, b: predictor.fill_mask(items[a:b], top_k=top_k, truncation=not no_truncation),
        lambda i, result: {"text": items[i], "predictions": result},
    )


@predict_group.command("classify")
@_predictor_options
@click.option("--top-k", default="1", show_default=True, help="Labels per text, or 'all'.")
@click.option("--pairs", is_flag=True, help="Each text is 'FIRST<TAB>SECOND', a sentence pair.")
def predict_classify_cmd(
    texts,
    model_dir,
    backend,
    device,
    precision,
    input_file,
    batch_size,
    max_length,
    no_truncation,
    top_k,
    pairs,
) -> None:
    """Label texts with a finetuned classifier: {"text", "label", "score"} (or "predictions" with --top-k)."""
    if top_k == "all":
        k = None
    elif top_k.isdigit() and int(top_k) > 0:
        k = int(top_k)
    else:
        raise UserError(f"--top-k must be a positive integer or 'all', got {top_k!r}")
    items = _read_texts(texts, input_file)
    firsts, seconds = items, None
    if pairs:
        split = [t.split("\t", 1) for t in items]
        bad = next((i for i, s in enumerate(split) if len(s) != 2), None)
        if bad is not None:
            raise UserError(f"text {bad + 1} has no TAB: with --pairs every text is 'FIRST<TAB>SECOND'")
        firsts, seconds = [s[0] for s in split], [s[1] for s in split]
    predictor = _load_predictor(model_dir, backend, device, precision, batch_size, max_length)

    def record(i: int, result) -> dict:
        out = {"text": firsts[i]}
        if seconds is not None:
            out["text_pair"] = seconds[i]
        out.update(result if isinstance(result, dict) else {"predictions": result})
        return out

    _emit_json_lines(
        len(items),
        lambda a, b: predictor.classify(
            firsts[a:b], None if seconds is None else seconds[a:b], top_k=k, truncation=not no_truncation
        ),
        record,
    )


@predict_group.command("embed")
@_predictor_options
@click.option("--pooling", type=click.Choice(POOLINGS), default="mean", show_default=True)
@click.option("--no-normalize", is_flag=True, help="Keep the raw pooled vectors (default: unit length).")
def predict_embed_cmd(
    texts,
    model_dir,
    backend,
    device,
    precision,
    input_file,
    batch_size,
    max_length,
    no_truncation,
    pooling,
    no_normalize,
) -> None:
    """Sentence embeddings from the encoder: {"text", "embedding": [H floats]}."""
    items = _read_texts(texts, input_file)
    predictor = _load_predictor(model_dir, backend, device, precision, batch_size, max_length)
    _emit_json_lines(
        len(items),
        lambda a, b: predictor.embed(
            items[a:b], pooling=pooling, normalize=not no_normalize, truncation=not no_truncation
        ),
        lambda i, vector: {"text": items[i], "embedding": vector.tolist()},
    )


@predict_group.command("answer")
@_record_options
@click.option(
    "--question", default=None, help="The question (or give JSON lines {question, context} with --input)."
)
@click.option("--context", default=None, help="The text that holds the answer.")
@click.option(
    "--top-k", default=1, show_default=True, type=click.IntRange(min=1), help="Answers per question."
)
@click.option(
    "--max-answer-length",
    default=30,
    show_default=True,
    type=click.IntRange(min=1),
    help="Longest answer in tokens.",
)
@click.option(
    "--stride",
    type=click.IntRange(min=1),
    default=None,
    help="Tokens shared by the windows over a long context [default: 128, at most a quarter of the limit].",
)
@click.option(
    "--null-threshold",
    type=float,
    default=None,
    help='SQuAD 2.0 models: answer "" when the no-answer score beats the best span by more than this.',
)
def predict_answer_cmd(
    model_dir,
    backend,
    device,
    precision,
    batch_size,
    max_length,
    input_file,
    question,
    context,
    top_k,
    max_answer_length,
    stride,
    null_threshold,
) -> None:
    """Extractive QA: {"question", "answer", "score", "start", "end"} per question (character offsets into the
    context; "predictions" with --top-k > 1)."""
    given = None if question is None and context is None else {"question": question, "context": context}
    records = _read_records(input_file, given, {"question": str, "context": str})
    predictor = _load_predictor(model_dir, backend, device, precision, batch_size, max_length)

    def run(a: int, b: int) -> list:
        part = records[a:b]
        return predictor.answer(
            [r["question"] for r in part], [r["context"] for r in part], top_k=top_k,
            max_answer_length=max_answer_length, stride=stride, null_threshold=null_threshold,
        )  # fmt: skip

    _emit_json_lines(
        len(records), run,
        lambda i, result: {"question": records[i]["question"], **(result if top_k == 1 else {"predictions": result})},
    )  # fmt: skip


@predict_group.command("choose")
@_record_options
@click.option(
    "--passage", default=None, help="The passage (or give JSON lines {passage, question, options})."
)
@click.option("--question", default=None, help="The question about it.")
@click.option("--option", "options", multiple=True, help="One answer option (repeat for each).")
def predict_choose_cmd(
    model_dir, backend, device, precision, batch_size, max_length, input_file, passage, question, options
) -> None:
    """Multiple choice: {"question", "choice", "index", "predictions": [{"index", "option", "score"}, ...]} per
    question, options best first."""
    given = None
    if passage is not None or question is not None or options:
        given = {"passage": passage, "question": question, "options": list(options)}
    records = _read_records(input_file, given, {"passage": str, "question": str, "options": list})
    predictor = _load_predictor(model_dir, backend, device, precision, batch_size, max_length)
    for record in records:
        ranked = predictor.choose(record["passage"], record["question"], record["options"])
        click.echo(json.dumps(
            {"question": record["question"], "choice": ranked[0]["option"], "index": ranked[0]["index"],
             "predictions": ranked},
            ensure_ascii=False,
        ))  # fmt: skip


@predict_group.command("tag")
@_predictor_options
def predict_tag_cmd(
    texts, model_dir, backend, device, precision, batch_size, max_length, input_file, no_truncation
) -> None:
    """Named entities: {"text", "entities": [{"entity", "text", "start", "end", "score"}]} per text (character
    offsets into the text). Texts longer than the token limit are tagged up to it."""
    items = _read_texts(texts, input_file)
    predictor = _load_predictor(model_dir, backend, device, precision, batch_size, max_length)
    _emit_json_lines(
        len(items),
        lambda a, b: predictor.tag(items[a:b], truncation=not no_truncation),
        lambda i, entities: {"text": items[i], "entities": entities},
    )


@main.command("demo")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Masked-LM model or export folder [default: {QUICKSTART_MODEL}, from `make quickstart`].",
)
@click.option(
    "--classifier", type=click.Path(path_type=Path), default=None, help="A finetuned classifier too."
)
@click.option(
    "--task-model",
    "task_models",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A model finetuned for question answering, multiple choice or token classification: adds its tab "
    "(repeatable).",
)
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface)."
)
@click.option(
    "--port", default=7860, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on."
)
@click.option("--share", is_flag=True, help="Also open a public Gradio share link.")
def demo_cmd(
    model_dir: Path | None,
    classifier: Path | None,
    task_models: tuple[Path, ...],
    backend: str,
    device: str,
    host: str,
    port: int,
    share: bool,
) -> None:
    """Serve the Gradio web demo: a Fill mask tab, a Classify tab with --classifier, and Answer / Choose / Tag tabs
    for each --task-model."""
    _check_can_listen(host, port)  # before loading any model
    if model_dir is None:
        model_dir = QUICKSTART_MODEL
        if not model_dir.is_dir():
            raise UserError(
                f"no --model given and {QUICKSTART_MODEL} does not exist: run `make quickstart` first"
            )
    try:
        from rtoolkit.demos.app import build_demo
    except ImportError as exc:
        raise UserError(f"the demo needs gradio: pip install 'rtoolkit[demo]' ({exc})") from None
    from rtoolkit.predictor import Predictor

    fill_mask = Predictor.from_pretrained(model_dir, backend=backend, device=device)
    classify = Predictor.from_pretrained(classifier, backend=backend, device=device) if classifier else None
    extra = [Predictor.from_pretrained(folder, backend=backend, device=device) for folder in task_models]
    build_demo(fill_mask, classify, task_predictors=extra).launch(
        server_name=host, server_port=port, share=share
    )


def _check_can_listen(host: str, port: int) -> None:
    """One clear line when the demo could not listen on host:port (unknown host, port in use, no permission)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UserError(f"--host {host!r} is not an address of this machine ({exc.strerror})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port}: {exc.strerror} (another server on that port? choose --port)"
            ) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
