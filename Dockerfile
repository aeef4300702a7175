# rtoolkit for NVIDIA GPU machines: pretrain, finetune, export (ONNX Runtime GPU, TensorRT) and serve the demo.
#   docker build -t rtoolkit .
#   docker run --gpus all -p 7860:7860 -v "$PWD/runs/quickstart/final:/models:ro" rtoolkit
#   docker run --gpus all -v "$PWD:/work" -w /work rtoolkit pretrain --data data/ --out runs/base --precision bf16
# CUDA 12 throughout: this CUDA 12.8 + cuDNN 9 runtime, PyTorch's cu128 build (PyPI's default torch is built for
# CUDA 13), and the CUDA 12 builds of onnxruntime-gpu (<1.27) and TensorRT (tensorrt-cu12 10.13) that the `gpu` extra
# pins. The host needs an NVIDIA driver for CUDA 12.8 (r570 or newer).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
COPY pyproject.toml README.md ./
COPY rtoolkit ./rtoolkit
COPY export ./export
COPY demos ./demos
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN pip install --index-url "$TORCH_INDEX" "torch>=2.4" \
    && pip install "./[gpu,demo]" \
    && useradd --create-home --uid 1000 rtoolkit
USER 1000:1000
WORKDIR /home/rtoolkit

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)"]

ENTRYPOINT ["rtoolkit"]
CMD ["demo", "--host", "0.0.0.0", "--port", "7860", "--model", "/models"]
