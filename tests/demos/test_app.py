"""rtoolkit.demos.app through its HTTP API: gradio_client against a demo launched on 127.0.0.1."""

from __future__ import annotations

import csv

import pytest

from tests.conftest import shared_data
from tests.demos.conftest import shown_as

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")


def sst2_masked(limit: int) -> list[str]:
    """Real SST-2 dev sentences with their first ' the ' (or the end) masked."""
    with open(shared_data("sst2", "dev.tsv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    out = []
    for row in rows:
        text = row["sentence"].strip()
        out.append(text.replace(" the ", " <mask> ", 1) if " the " in text else text + " <mask>")
    return out


@pytest.fixture(scope="module")
def client(demo_url):
    return gradio_client.Client(demo_url, verbose=False)


def _check_label(label: dict, predictions: list[dict]) -> None:
    """A Label payload shows exactly the predictions, best first, with their scores."""
    shown = [c["label"] for c in label["confidences"]]
    assert shown == [shown_as(p) for p in predictions]
    assert label["label"] == shown[0]
    assert [c["confidence"] for c in label["confidences"]] == pytest.approx(
        [p["score"] for p in predictions], abs=1e-6
    )


def test_fill_mask_over_http_matches_the_predictor(client, demo_predictors):
    mlm, _ = demo_predictors
    text = "The old man looked at the <mask> and smiled."
    label, details = client.predict(text, 4, api_name="/fill_mask")
    expected = mlm.fill_mask(text, top_k=4)
    _check_label(label, expected)
    assert details["headers"] == ["mask", "token", "score", "sequence"]
    assert [row[3] for row in details["data"]] == [p["sequence"] for p in expected]


def test_several_masks_are_labelled_by_position(client, demo_predictors):
    mlm, _ = demo_predictors
    text = "The <mask> looked at the <mask>."
    label, details = client.predict(text, 2, api_name="/fill_mask")
    first, second = mlm.fill_mask(text, top_k=2)
    shown = {c["label"] for c in label["confidences"]}
    assert {f"[1] {shown_as(p)}" for p in first} <= shown
    assert {f"[2] {shown_as(p)}" for p in second} <= shown
    assert [row[0] for row in details["data"]] == [1, 1, 2, 2]


def test_classify_over_http_shows_every_label(client, demo_predictors):
    _, clf = demo_predictors
    label = client.predict("it 's a charming and often affecting journey .", "", api_name="/classify")
    expected = clf.classify("it 's a charming and often affecting journey .", top_k=None)
    assert [c["label"] for c in label["confidences"]] == [r["label"] for r in expected]
    assert [c["confidence"] for c in label["confidences"]] == pytest.approx(
        [r["score"] for r in expected], abs=1e-6
    )
    paired = client.predict("A man plays.", "A man is playing.", api_name="/classify")
    expected = clf.classify("A man plays.", "A man is playing.", top_k=None)
    assert [c["confidence"] for c in paired["confidences"]] == pytest.approx(
        [r["score"] for r in expected], abs=1e-6
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("No mask in this one.", "has no &lt;mask&gt; token to fill"),
        ("", "the text is empty; pass some text"),
    ],
)
def test_input_errors_come_back_as_messages_and_the_server_keeps_serving(client, text, message):
    with pytest.raises(gradio_client.exceptions.AppError, match=message):
        client.predict(text, 5, api_name="/fill_mask")
    label, _ = client.predict("It was a <mask> day.", 5, api_name="/fill_mask")
    assert len(label["confidences"]) == 5


def test_fifty_concurrent_requests_are_all_answered_correctly(client, demo_predictors):
    mlm, _ = demo_predictors
    texts = sst2_masked(50)
    expected = mlm.fill_mask(texts, top_k=3)
    jobs = [client.submit(text, 3, api_name="/fill_mask") for text in texts]  # all in flight at once
    for job, predictions in zip(jobs, expected, strict=True):
        label, details = job.result(timeout=120)
        _check_label(label, predictions)
        assert (
            details["data"][0][3] == predictions[0]["sequence"]
        )  # the answer to this request, not another's


def test_build_demo_checks_the_predictors(demo_predictors):
    from rtoolkit.demos.app import build_demo

    mlm, clf = demo_predictors
    with pytest.raises(ValueError, match="cannot fill masks"):
        build_demo(clf)
    with pytest.raises(ValueError, match="is not a classifier"):
        build_demo(mlm, mlm)
    blocks = build_demo(mlm)  # no classifier: no Classify tab
    assert "/classify" not in {f"/{d.api_name}" for d in blocks.fns.values()}


def test_task_tabs_over_http_match_the_predictors(client, task_predictors):
    question, context = "Where did the old man live?", "The old man lived alone in a small house by the sea."
    answer, highlighted = client.predict(question, context, api_name="/answer")
    expected = task_predictors["answer"].answer(question, context)
    assert answer == f"{expected['answer']}  (score {expected['score']:.3f})"
    assert [(h["token"], h["class_or_confidence"]) for h in highlighted] == [
        (t, label)
        for t, label in (
            (context[: expected["start"]], None),
            (expected["answer"], "answer"),
            (context[expected["end"] :], None),
        )
        if t
    ]

    passage, asked = "Tom missed the bus, so he walked to school and was late.", "Why was Tom late?"
    options = ["He missed the bus", "He was ill", "The school was closed"]
    label = client.predict(passage, asked, "\n".join(options), api_name="/choose")
    ranked = task_predictors["choose"].choose(passage, asked, options)
    assert [c["label"] for c in label["confidences"]] == [f"{r['index'] + 1}. {r['option']}" for r in ranked]
    assert [c["confidence"] for c in label["confidences"]] == pytest.approx(
        [r["score"] for r in ranked], abs=1e-6
    )

    text = "Sherlock Holmes met Dr. Watson in London at the end of January."
    shown = client.predict(text, api_name="/tag")
    entities = task_predictors["tag"].tag(text)
    assert "".join(h["token"] for h in shown) == text
    assert [(h["token"], h["class_or_confidence"]) for h in shown if h["class_or_confidence"]] == [
        (e["text"], e["entity"]) for e in entities
    ]


@pytest.mark.parametrize(
    ("inputs", "api_name", "message"),
    [
        (("A passage.", "A question?", "only one option"), "/choose", "at least two"),
        (("", "Some context."), "/answer", "question"),
        (("   ",), "/tag", "empty"),
    ],
)
def test_task_tab_errors_come_back_as_messages(client, inputs, api_name, message):
    with pytest.raises(gradio_client.exceptions.AppError, match=message):
        client.predict(*inputs, api_name=api_name)


def test_build_demo_checks_the_task_models(demo_predictors):
    from rtoolkit.demos.app import build_demo

    mlm, clf = demo_predictors
    with pytest.raises(
        ValueError, match="no question-answering, multiple-choice or token-classification head"
    ):
        build_demo(mlm, task_predictors=[clf])
