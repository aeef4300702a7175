"""The Gradio web demo: a "Fill mask" tab, a "Classify" tab given a classifier, and a tab for each finetuned head
given as a task model: "Answer" (question answering), "Choose" (multiple choice), "Tag" (named entities).

    from rtoolkit import Predictor
    from rtoolkit.demos.app import build_demo

    build_demo(Predictor.from_pretrained("runs/quickstart/final")).launch(server_name="127.0.0.1")

`rtoolkit demo --model DIR [--classifier DIR] [--task-model DIR ...]` does the same from the command line. The handlers call the
Predictor directly (it is thread-safe), so several requests run at once; input errors such as a text without
`<mask>` are shown in the page as an error message and never stop the server.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import gradio as gr

from rtoolkit.predictor import ANSWER, CHOOSE, CLASSIFY, FILL_MASK, TAG, Predictor

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
DEFAULT_ANSWER_EXAMPLE = (
    "Where did the old man live?",
    "The old man lived alone in a small house by the sea. Every morning he walked down to the harbour.",
)
DEFAULT_CHOOSE_EXAMPLE = (
    "Tom missed the bus, so he walked to school in the rain and arrived late.",
    "Why was Tom late for school?",
    "He missed the bus\nHe was ill\nThe school was closed\nHe went to the park",
)
DEFAULT_TAG_EXAMPLE = "Sherlock Holmes met Dr. Watson in London at the end of January."


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


def answer_outputs(predictor: Predictor, question: str, context: str) -> tuple[str, list]:
    """Run answer for the page: (the answer with its score, the context with the answer highlighted)."""
    try:
        result = predictor.answer(question, context)
    except ValueError as exc:
        raise _page_error(exc) from None
    start, end = result["start"], result["end"]
    highlighted = [(context[:start], None), (context[start:end], "answer"), (context[end:], None)]
    return f"{result['answer']}  (score {result['score']:.3f})", [(t, label) for t, label in highlighted if t]


def choose_outputs(predictor: Predictor, passage: str, question: str, options: str) -> dict[str, float]:
    """Run choose for the page: {option: score} (options one per line)."""
    choices = [line.strip() for line in (options or "").splitlines() if line.strip()]
    try:
        ranked = predictor.choose(passage, question, choices)
    except ValueError as exc:
        raise _page_error(exc) from None
    return {f"{r['index'] + 1}. {r['option']}": r["score"] for r in ranked}


def tag_outputs(predictor: Predictor, text: str) -> dict[str, Any]:
    """Run tag for the page: the text with its entities, as gr.HighlightedText shows them."""
    try:
        entities = predictor.tag(text)
    except ValueError as exc:
        raise _page_error(exc) from None
    return {
        "text": text,
        "entities": [{"entity": e["entity"], "start": e["start"], "end": e["end"]} for e in entities],
    }


def _task_tabs(predictor: Predictor, concurrency_limit: int) -> None:
    """The tabs of the finetuned heads `predictor` serves (answer, choose, tag); API names /answer, /choose, /tag."""
    if ANSWER in predictor.tasks:
        with gr.Tab("Answer"):
            question = gr.Textbox(label="Question", lines=1, elem_id="answer-question")
            context = gr.Textbox(label="Context", lines=6, elem_id="answer-context")
            button = gr.Button("Answer", variant="primary", elem_id="answer-button")
            answer = gr.Textbox(label="Answer", elem_id="answer-answer")
            shown = gr.HighlightedText(label="In the context", elem_id="answer-highlight")
            gr.Examples([list(DEFAULT_ANSWER_EXAMPLE)], inputs=[question, context])
            button.click(
                lambda q, c: answer_outputs(predictor, q, c), inputs=[question, context], outputs=[answer, shown],
                api_name="answer", concurrency_limit=concurrency_limit,
            )  # fmt: skip
    if CHOOSE in predictor.tasks:
        with gr.Tab("Choose"):
            passage = gr.Textbox(label="Passage", lines=5, elem_id="choose-passage")
            question = gr.Textbox(label="Question", lines=1, elem_id="choose-question")
            options = gr.Textbox(label="Options (one per line)", lines=4, elem_id="choose-options")
            button = gr.Button("Choose", variant="primary", elem_id="choose-button")
            scores = gr.Label(label="Option scores", elem_id="choose-scores")
            gr.Examples([list(DEFAULT_CHOOSE_EXAMPLE)], inputs=[passage, question, options])
            button.click(
                lambda p, q, o: choose_outputs(predictor, p, q, o), inputs=[passage, question, options],
                outputs=scores, api_name="choose", concurrency_limit=concurrency_limit,
            )  # fmt: skip
    if TAG in predictor.tasks:
        with gr.Tab("Tag"):
            text = gr.Textbox(label="Text", lines=3, elem_id="tag-text")
            button = gr.Button("Tag", variant="primary", elem_id="tag-button")
            entities = gr.HighlightedText(label="Entities", elem_id="tag-entities")
            gr.Examples([[DEFAULT_TAG_EXAMPLE]], inputs=[text])
            button.click(
                lambda t: tag_outputs(predictor, t), inputs=text, outputs=entities, api_name="tag",
                concurrency_limit=concurrency_limit,
            )  # fmt: skip


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
    task_predictors: tuple[Predictor, ...] | list[Predictor] = (),
) -> gr.Blocks:
    """The demo as a `gr.Blocks` (not launched). API names: "/fill_mask", "/classify", "/answer", "/choose", "/tag".

    fill_mask_predictor must serve fill-mask (a pretrained masked-LM); classify_predictor, when given, must serve
    classify (a finetuned classifier); each of task_predictors must serve answer, choose or tag (a model finetuned
    for question answering, multiple choice or token classification) and adds its tab. concurrency_limit: requests
    each tab runs at once.
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
    for extra in task_predictors:
        if not ({ANSWER, CHOOSE, TAG} & extra.tasks):
            raise ValueError(
                f"{extra.source} has no question-answering, multiple-choice or token-classification head (it serves "
                f"{sorted(extra.tasks)}); pass such a finetuned model as a task model"
            )
    mask = fill_mask_predictor.tokenizer.mask_token

    def fill_mask(text: str, top_k: float):
        return fill_mask_outputs(fill_mask_predictor, text, top_k)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        lines = [f"# {title}", f"Fill mask: {_described(fill_mask_predictor)}"]
        if classify_predictor is not None:
            lines.append(f"Classify: {_described(classify_predictor)}")
        for extra in task_predictors:
            lines.append(
                f"{', '.join(sorted({ANSWER, CHOOSE, TAG} & extra.tasks)).capitalize()}: {_described(extra)}"
            )
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
        for extra in task_predictors:
            _task_tabs(extra, concurrency_limit)
    return demo


__all__ = [
    "answer_outputs",
    "build_demo",
    "choose_outputs",
    "classify_outputs",
    "fill_mask_outputs",
    "tag_outputs",
]
