"""The README's tour, run command by command (with fewer steps) so the README cannot rot."""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from tests.conftest import REPO, SHARED_DATA, shared_data

# Fewer steps than the README asks for: the same commands, a shorter run.
SHORTER = {
    "--max-steps 600": "--max-steps 20",
    "--eval-every 200": "--eval-every 10",
    "--save-every 200": "--save-every 10",
}


def tour_commands() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def adapt(command: str) -> list[str]:
    for long, short in SHORTER.items():
        command = command.replace(long, short)
    command = command.replace("../shared/data", str(SHARED_DATA))
    argv = shlex.split(command)
    assert argv[0] == "rtoolkit", command
    return [str(Path(sys.executable).parent / "rtoolkit"), *argv[1:]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(process: subprocess.Popen, timeout: float = 120.0) -> str:
    """Read the demo's output until it says where it serves; a watchdog kills a server that never gets there."""
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if match := re.search(r"Running on local URL:\s*(http://\S+)", line):
                return match.group(1)
    finally:
        watchdog.cancel()
    raise AssertionError("the demo exited without serving:\n" + "".join(seen))


def test_readme_tour_runs_from_raw_text_to_a_served_demo(tmp_path):
    shared_data("sst2", "dev.tsv")
    commands = tour_commands()
    names = [shlex.split(c)[1] for c in commands]
    assert names == [
        "train-tokenizer",
        "preprocess",
        "pretrain",
        "plot",
        "finetune",
        "export",
        "predict",
        "predict",
        "demo",
    ]
    outputs = {}
    for command in commands[:-1]:
        result = subprocess.run(adapt(command), cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        outputs[command] = result.stdout
    assert (tmp_path / "runs/pretrain/final/model.safetensors").is_file()
    assert (tmp_path / "runs/pretrain/loss.png").is_file()
    assert (tmp_path / "exports/sst2/model.int8.onnx").is_file()
    classify = [json.loads(line) for line in outputs[commands[6]].splitlines()]
    assert [c["text"] for c in classify] == ["a charming and often affecting journey", "bleak and desperate"]
    assert all(c["label"] in ("positive", "negative") for c in classify)
    fill = json.loads(outputs[commands[7]])
    assert len(fill["predictions"]) == 5

    port = free_port()
    demo = subprocess.Popen(
        [*adapt(commands[-1]), "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = wait_until_serving(demo)
        assert url.rstrip("/") == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200 and "gradio" in response.read().decode("utf-8", "replace").lower()
    finally:
        demo.terminate()
        demo.wait(timeout=30)


DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def command_lines() -> list[tuple[Path, str]]:
    """Every `rtoolkit ...` (or `-m rtoolkit.cli ...`) command the docs show: code-block lines (continuations joined)
    and inline code spans."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("#", 1)[0].strip()
                if re.search(r"(^|\s)(rtoolkit|-m rtoolkit\.cli) [a-z]", line) and "python -c" not in line:
                    found.append((doc, line))
        for span in re.findall(r"`(rtoolkit [a-z][^`]*)`", text):
            found.append((doc, span))
    return found


def _resolve(argv: list[str]):
    """The click command an argv names (e.g. ["predict", "fill-mask", ...]) and the arguments after it."""
    import click

    from rtoolkit.cli import main

    command, rest = main, list(argv)
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:
        command, rest = command.commands[rest[0]], rest[1:]
    return command, rest


def test_every_command_in_the_readme_tables_is_a_real_command():
    from click.testing import CliRunner

    from rtoolkit.cli import main

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"^\| `rtoolkit ([a-z-]+)", table, re.M)
    assert len(named) >= 10
    listing = CliRunner().invoke(main, ["--help"]).output
    for name in named:
        assert re.search(rf"^\s+{name}\s", listing, re.M), (
            f"{name} is in README's table but not in rtoolkit --help"
        )


def test_every_flag_the_docs_give_a_command_exists_on_it():
    lines = command_lines()
    assert len(lines) > 30
    checked = 0
    for doc, line in lines:
        command_text = line.replace("\\|", "/").split(" | ")[0].replace("...", "")  # a shell pipe ends it
        argv = [a.split("/")[0] if not a.startswith(("/", ".")) else a for a in shlex.split(command_text)]
        start = argv.index("rtoolkit.cli") + 1 if "rtoolkit.cli" in argv else argv.index("rtoolkit") + 1
        command, rest = _resolve(argv[start:])
        if command.name == "main":
            continue  # `rtoolkit --help` and the like
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for flag in (a.split("=")[0] for a in rest if a.startswith("--")):
            assert flag in options, (
                f"{doc.name}: `{line}` gives {flag}, which `rtoolkit {command.name}` does not have"
            )
            checked += 1
    assert checked > 80
