"""rtoolkit.runtime.ort: one session builder for export validation and serving; IO binding gives the plain run's
numbers; a CUDA session that cannot get ONNX Runtime's CUDA provider is refused, never quietly run on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from rtoolkit.runtime.ort import (  # noqa: E402
    CPU_PROVIDER,
    CUDA_PROVIDER,
    OrtRunner,
    RuntimeUnavailable,
    create_session,
    providers_for,
)

HAS_CUDA_PROVIDER = CUDA_PROVIDER in ort.get_available_providers()


def _feeds(tokenizer, texts):
    batch = tokenizer(texts)
    return {k: v.numpy() for k, v in batch.items()}


def test_io_binding_gives_the_numbers_of_a_plain_run(exported, tokenizer):
    session = create_session(exported["fill-mask"] / "model.onnx", device="cpu")
    feeds = _feeds(tokenizer, ["The cat sat on the mat.", "A much longer sentence about the weather today."])
    plain = OrtRunner(session, device="cpu").run(feeds)
    bound = OrtRunner(session, device="cpu", io_binding=True).run(feeds)
    assert list(plain) == list(bound) == ["logits"]
    np.testing.assert_array_equal(plain["logits"], bound["logits"])
    assert plain["logits"].dtype == np.float32 and plain["logits"].shape[:2] == feeds["input_ids"].shape


def test_providers_for_each_device():
    assert providers_for("cpu") == [CPU_PROVIDER]
    assert providers_for("cuda:1") == [(CUDA_PROVIDER, {"device_id": 1}), CPU_PROVIDER]
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'cuda:N'"):
        providers_for("gpu")


@pytest.mark.skipif(HAS_CUDA_PROVIDER, reason="this onnxruntime has its CUDA provider")
def test_cuda_without_the_cuda_provider_is_refused_not_run_on_the_cpu(exported):
    with pytest.raises(RuntimeUnavailable, match="install onnxruntime-gpu"):
        create_session(exported["fill-mask"] / "model.onnx", device="cuda")


def test_validation_records_what_ran_the_artifact(exported):
    from rtoolkit.export import Manifest

    record = Manifest.load(exported["classification"]).artifact("model.onnx").validation
    assert record["runtime"] == "onnxruntime CPUExecutionProvider"
