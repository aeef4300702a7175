"""model.onnx -> model.optimized.onnx with ONNX Runtime's transformer fusions, and a check that they happened.

onnxruntime's optimizer (`model_type="bert"`; there is no "roberta" type) matches subgraphs by shape. When a
subgraph changes (a new exporter, a new torch), fusions silently stop applying. So the expected count of every
fused operator is computed from the config and compared with what the optimizer reports; a missing fusion fails.

Expected for an L-layer model: L Attention (Q, K, V, scores, mask and softmax in one node), 2L
SkipLayerNormalization (residual add + LayerNorm), L BiasGelu (+1 in the fill-mask head), and LayerNormalization
for the embeddings (+1 in the fill-mask head). EmbedLayerNormalization does not apply to RoBERTa: ONNX Runtime's
kernel numbers positions from 0, RoBERTa's start after the padding index, and ONNX Runtime itself disables that
fusion for RoBERTa graphs, so the embeddings stay as Gather + Add + LayerNormalization.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from rtoolkit.export.onnx import publish, require_onnx, save_onnx, staging_dir
from rtoolkit.export.spec import ONNX_FP32, ONNX_OPTIMIZED, Artifact, ExportError, Manifest, graph_path

from rtoolkit.config import RobertaConfig

logger = logging.getLogger(__name__)


def expected_fusions(config: RobertaConfig, task: str) -> dict[str, int]:
    """The fused-operator counts a correct optimization of this model has."""
    layers = config.num_hidden_layers
    head = 1 if task == "fill-mask" else 0  # the LM head's dense -> gelu -> LayerNorm
    gelu = "BiasGelu" if config.hidden_act == "gelu" else None
    counts = {
        "Attention": layers,
        "SkipLayerNormalization": 2 * layers,
        "LayerNormalization": 1 + head,
    }
    if gelu:
        counts[gelu] = layers + head
    return counts


def fused_operator_counts(model) -> dict[str, int]:
    """{op_type: count} over the fused contrib operators in an onnx.ModelProto (zero counts dropped)."""
    from collections import Counter

    interesting = {
        "Attention",
        "MultiHeadAttention",
        "SkipLayerNormalization",
        "EmbedLayerNormalization",
        "LayerNormalization",
        "BiasGelu",
        "FastGelu",
        "Gelu",
        "QAttention",
    }
    counts = Counter(n.op_type for n in model.graph.node if n.op_type in interesting)
    return dict(sorted(counts.items()))


def optimize_onnx(
    export_dir: str | os.PathLike,
    *,
    validate: bool = True,
    use_gpu: bool = False,
    gelu_approximation: bool = False,
    require_fusions: bool = True,
    texts: Sequence[str] | None = None,
    eval_data: str | os.PathLike | None = None,
) -> Path:
    """Fuse `model.onnx` of an export folder into `model.optimized.onnx` and record the fused-operator counts.

    `gelu_approximation` swaps exact Gelu for FastGelu (tanh; faster, not bit-comparable, so it is validated
    with the fp16 criteria). `use_gpu` lets the optimizer choose GPU-friendly fusions. With `require_fusions`
    (default) a fusion that the model should get but did not raises ExportError naming it.
    Returns the path of model.optimized.onnx.
    """
    require_onnx()
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    folder = Path(export_dir)
    manifest = Manifest.load(folder)
    source = graph_path(folder, ONNX_FP32)
    config = RobertaConfig.from_pretrained(folder)
    options = FusionOptions("bert")
    options.enable_gelu_approximation = gelu_approximation
    logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)
    fused = optimizer.optimize_model(
        str(source),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        optimization_options=options,
        opt_level=1,
        use_gpu=use_gpu,
    )
    counts = fused_operator_counts(fused.model)
    expected = expected_fusions(config, manifest.task)
    if gelu_approximation and "BiasGelu" in expected:
        expected["FastGelu"] = expected.pop("BiasGelu")
    missing = {op: (counts.get(op, 0), n) for op, n in expected.items() if counts.get(op, 0) < n}
    with staging_dir(folder) as tmp:
        written = save_onnx(fused.model, tmp / ONNX_OPTIMIZED)
        for stale in folder.glob(ONNX_OPTIMIZED + "*"):
            stale.unlink()
        publish(tmp, folder, written)
    artifact = Artifact(
        file=ONNX_OPTIMIZED,
        format="onnx",
        precision="fp32",
        optimized=True,
        fused_operators=counts,
        details={
            "source": ONNX_FP32,
            "optimizer": "onnxruntime.transformers.optimizer(model_type='bert', opt_level=1)",
            "use_gpu": use_gpu,
            "gelu_approximation": gelu_approximation,
            "expected_fusions": expected,
        },
    )
    manifest.put(artifact)
    manifest.save(folder)
    logger.info("fused operators: %s", counts)
    if missing and require_fusions:
        described = ", ".join(f"{op} {got} of {want}" for op, (got, want) in missing.items())
        raise ExportError(
            f"ONNX Runtime fusions were not applied to {ONNX_OPTIMIZED}: {described}; the graph does not have the "
            f"shape onnxruntime {_ort_version()} matches (see export_manifest.json for the counts)"
        )
    if validate:
        from rtoolkit.export.validate import TOLERANCES, validate_onnx

        # FastGelu is an approximation: judged at task level like fp16, not by the 1e-4 bound.
        tolerances = {**TOLERANCES["fp16"], "max_abs_diff": None} if gelu_approximation else None
        validate_onnx(folder, ONNX_OPTIMIZED, texts=texts, eval_data=eval_data, tolerances=tolerances)
    return folder / ONNX_OPTIMIZED


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
