"""The Gradio web demo: a "Fill mask" tab and, given a classifier, a "Classify" tab.

    from rtoolkit import Predictor
    from rtoolkit.demos.app import build_demo

    build_demo(Predictor.from_pretrained("runs/quickstart/final")).launch(server_name="127.0.0.1")

`rtoolkit demo --model DIR [--classifier DIR]` does the same from the command line. The handlers call the
Predictor directly (it is thread-safe), so several requests run at once; input errors such as a text without
`<mask>` are shown in the page as an error message and never stop the server.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import gradio as gr

from rtoolkit.predictor import CLASSIFY, FILL_MASK, Predictor

logger = logging.getLogger(__name__)

DEFAULT_FILL_MASK_EXAMPLES = (
    "The old man looked at the <mask> and smiled.",
    "He put his <mask> on the table.",
    "She opened the <mask> and walked into the garden.",
    "Paris is the <mask> of France.",
)
DEFAULT_CLASSIFY_EXAMPLES = (
    ("it 's a charming and often affecting journey .", ""),
    ("unflinchingly bleak and desperate", ""),
)
DETAIL_HEADERS = ["mask", "token", "score", "sequence"]


def _page_error(exc: Exception) -> gr.Error:
    """The message as the page shows it: escaped, since the page renders it as HTML (`<mask>` would vanish).

    Bad input is the user's to fix, not a server fault: no traceback in the server log.
    """
    logger.info("rejected input: %s", exc)
    return gr.Error(html.escape(str(exc), quote=False), print_exception=False)


def fill_mask_outputs(
    predictor: Predictor, text: str, top_k: float
) -> tuple[dict[str, float], list[list[Any]]]:
    """Run fill-mask for the page: ({shown token: score} for the Label, rows for the details table)."""
    try:
        result = predictor.fill_mask(text, top_k=int(top_k))
    except ValueError as exc:
        raise _page_error(exc) from None
    masks = result if result and isinstance(result[0], list) else [result]  # one list of predictions per mask
    scores: dict[str, float] = {}
    rows: list[list[Any]] = []
    for m, predictions in enumerate(masks, start=1):
        for p in predictions:
            shown = p["token_str"].strip() or repr(p["token_str"])
            if len(masks) > 1:
                shown = f"[{m}] {shown}"
            if shown in scores:  # " the" and "the" look alike once stripped
                shown = f"{shown} (id {p['token']})"
            scores[shown] = p["score"]
            token = p["token_str"] if p["token_str"].strip() else repr(p["token_str"])
            rows.append([m, token, round(p["score"], 4), p["sequence"]])
    return scores, rows


def classify_outputs(predictor: Predictor, text: str, text_pair: str | None) -> dict[str, float] | str:
    """Run classify for the page: {label: score} for every label, or "score: x" for a regression model."""
    pair = text_pair if text_pair and text_pair.strip() else None
    try:
        result = predictor.classify(text, pair, top_k=None)
    except ValueError as exc:
        raise _page_error(exc) from None
    if isinstance(result, dict):  # regression: {"score": value}
        return f"score: {result['score']:.4f}" if "score" in result else str(result)
    return {r["label"]: r["score"] for r in result}


def _described(predictor: Predictor) -> str:
    """`runs/quickstart/final` (torch backend): the last two parts of the folder, and how it is run."""
    name = "/".join(predictor.source.parts[-2:]) if predictor.source else "model"
    return f"`{name}` ({predictor.backend} backend, {predictor.precision})"


def build_demo(
    fill_mask_predictor: Predictor,
    classify_predictor: Predictor | None = None,
    *,
    title: str = "rtoolkit: RoBERTa demo",
    fill_mask_examples: tuple[str, ...] | list[str] = DEFAULT_FILL_MASK_EXAMPLES,
    classify_examples: tuple[tuple[str, str], ...] | list[tuple[str, str]] = DEFAULT_CLASSIFY_EXAMPLES,
    concurrency_limit: int = 4,
) -> gr.Blocks:
    """The demo as a `gr.Blocks` (not launched). API names: "/fill_mask" and "/classify".

    fill_mask_predictor must serve fill-mask (a pretrained masked-LM); classify_predictor, when given, must serve
    classify (a finetuned classifier). concurrency_limit: requests each tab runs at once.
    """
    if FILL_MASK not in fill_mask_predictor.tasks:
        raise ValueError(
            f"{fill_mask_predictor.source} cannot fill masks (it serves {sorted(fill_mask_predictor.tasks)}); "
            f"pass a masked-LM model, and a classifier as classify_predictor (--classifier)"
        )
    if classify_predictor is not None and CLASSIFY not in classify_predictor.tasks:
        raise ValueError(
            f"{classify_predictor.source} is not a classifier (it serves {sorted(classify_predictor.tasks)}); "
            f"pass a finetuned model as classify_predictor (--classifier)"
        )
    mask = fill_mask_predictor.tokenizer.mask_token

    def fill_mask(text: str, top_k: float):
        return fill_mask_outputs(fill_mask_predictor, text, top_k)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        lines = [f"# {title}", f"Fill mask: {_described(fill_mask_predictor)}"]
        if classify_predictor is not None:
            lines.append(f"Classify: {_described(classify_predictor)}")
        gr.Markdown("\n\n".join(lines))
        with gr.Tab("Fill mask"):
            with gr.Row():
                with gr.Column():
                    text = gr.Textbox(
                        label="Text",
                        placeholder=f"A sentence with {mask}, e.g. {DEFAULT_FILL_MASK_EXAMPLES[0]}",
                        lines=1,
                        max_lines=1,  # Enter submits
                        elem_id="fill-mask-text",
                    )
                    top_k = gr.Slider(1, 20, value=5, step=1, label="Top k", elem_id="fill-mask-top-k")
                    button = gr.Button("Predict", variant="primary", elem_id="fill-mask-button")
                with gr.Column():
                    predictions = gr.Label(label="Predictions", elem_id="fill-mask-predictions")
            details = gr.Dataframe(
                headers=DETAIL_HEADERS, label="Details", interactive=False, elem_id="fill-mask-details"
            )
            gr.Examples([[e, 5] for e in fill_mask_examples], inputs=[text, top_k])
            event = dict(
                fn=fill_mask,
                inputs=[text, top_k],
                outputs=[predictions, details],
                concurrency_limit=concurrency_limit,
                concurrency_id="fill_mask",  # the button and Enter share one limit
            )
            button.click(**event, api_name="fill_mask")
            text.submit(**event, api_name="fill_mask_submit", api_visibility="undocumented")
        if classify_predictor is not None:

            def classify(text: str, text_pair: str):
                return classify_outputs(classify_predictor, text, text_pair)

            with gr.Tab("Classify"):
                with gr.Row():
                    with gr.Column():
                        ctext = gr.Textbox(label="Text", lines=2, elem_id="classify-text")
                        cpair = gr.Textbox(
                            label="Second text (optional, for pair tasks)", lines=2, elem_id="classify-pair"
                        )
                        cbutton = gr.Button("Classify", variant="primary", elem_id="classify-button")
                    with gr.Column():
                        scores = gr.Label(label="Label scores", elem_id="classify-scores")
                gr.Examples([list(e) for e in classify_examples], inputs=[ctext, cpair])
                cbutton.click(
                    classify,
                    inputs=[ctext, cpair],
                    outputs=scores,
                    api_name="classify",
                    concurrency_limit=concurrency_limit,
                )
    return demo


__all__ = ["build_demo", "fill_mask_outputs", "classify_outputs"]
