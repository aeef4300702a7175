"""The demo in a real browser: headless Chromium driven by Playwright types, submits and reads the page."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.demos.conftest import shown_as

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} not found: install Debian's chromium and chromium-driver (.ci/run does)",
    ),
]
playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def page(demo_url):
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(30_000)
        page.goto(demo_url)
        yield page
        browser.close()


def _shown_scores(container) -> list[tuple[str, float]]:
    """(label, score) of each bar of a gr.Label, read from its <meter> elements, top to bottom."""
    meters = container.locator("meter")
    return [
        (meters.nth(i).get_attribute("aria-label"), float(meters.nth(i).get_attribute("value")))
        for i in range(meters.count())
    ]


def test_typing_a_sentence_shows_the_predictions(page, demo_predictors, tmp_path):
    mlm, _ = demo_predictors
    text = "The old man looked at the <mask> and smiled."
    expected = mlm.fill_mask(text, top_k=5)
    box = page.locator("#fill-mask-text").get_by_role("textbox")
    box.fill(text)
    page.locator("#fill-mask-button").click()
    predictions = page.locator("#fill-mask-predictions")
    playwright.expect(predictions.locator("meter")).to_have_count(5)
    shown = _shown_scores(predictions)
    assert [label for label, _ in shown] == [shown_as(p) for p in expected]
    assert [score for _, score in shown] == pytest.approx([p["score"] for p in expected], abs=1e-6)
    details = page.locator("#fill-mask-details")
    playwright.expect(details).to_contain_text(expected[0]["sequence"])
    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_enter_submits_and_top_k_follows_the_slider(page, demo_predictors):
    mlm, _ = demo_predictors
    text = "She could not <mask> it."
    slider = page.locator("#fill-mask-top-k").get_by_role("spinbutton")
    slider.fill("3")
    slider.press("Enter")
    box = page.locator("#fill-mask-text").get_by_role("textbox")
    box.fill(text)
    box.press("Enter")
    predictions = page.locator("#fill-mask-predictions")
    expected = mlm.fill_mask(text, top_k=3)
    playwright.expect(page.locator("#fill-mask-details")).to_contain_text(expected[0]["sequence"])
    playwright.expect(predictions.locator("meter")).to_have_count(3)
    assert [label for label, _ in _shown_scores(predictions)] == [shown_as(p) for p in expected]


def test_an_input_error_is_shown_in_the_page(page):
    box = page.locator("#fill-mask-text").get_by_role("textbox")
    box.fill("A sentence without any mask.")
    page.locator("#fill-mask-button").click()
    # The whole message, <mask> included (the page renders messages as HTML, so the app escapes them).
    message = page.get_by_text("the text has no <mask> token to fill: 'A sentence without any mask.'")
    playwright.expect(message.first).to_be_visible()


def test_the_classify_tab(page, demo_predictors):
    _, clf = demo_predictors
    page.get_by_role("tab", name="Classify").click()
    page.locator("#classify-text").get_by_role("textbox").fill("A man plays.")
    page.locator("#classify-pair").get_by_role("textbox").fill("A man is playing.")
    page.locator("#classify-button").click()
    scores = page.locator("#classify-scores")
    playwright.expect(scores.locator("meter")).to_have_count(2)
    expected = clf.classify("A man plays.", "A man is playing.", top_k=None)
    shown = _shown_scores(scores)
    assert [label for label, _ in shown] == [r["label"] for r in expected]
    assert [score for _, score in shown] == pytest.approx([r["score"] for r in expected], abs=1e-6)


def test_the_answer_choose_and_tag_tabs(page, task_predictors):
    page.get_by_role("tab", name="Answer").click()
    question, context = "Where did the old man live?", "The old man lived alone in a small house by the sea."
    page.locator("#answer-question").get_by_role("textbox").fill(question)
    page.locator("#answer-context").get_by_role("textbox").fill(context)
    page.locator("#answer-button").click()
    expected = task_predictors["answer"].answer(question, context)
    answer = page.locator("#answer-answer").get_by_role("textbox")
    playwright.expect(answer).to_have_value(f"{expected['answer']}  (score {expected['score']:.3f})")
    playwright.expect(page.locator("#answer-highlight")).to_contain_text(expected["answer"])

    page.get_by_role("tab", name="Choose").click()
    options = ["He missed the bus", "He was ill", "The school was closed", "He went to the park"]
    page.locator("#choose-passage").get_by_role("textbox").fill("Tom missed the bus and was late.")
    page.locator("#choose-question").get_by_role("textbox").fill("Why was Tom late?")
    page.locator("#choose-options").get_by_role("textbox").fill("\n".join(options))
    page.locator("#choose-button").click()
    scores = page.locator("#choose-scores")
    playwright.expect(scores.locator("meter")).to_have_count(4)
    ranked = task_predictors["choose"].choose(
        "Tom missed the bus and was late.", "Why was Tom late?", options
    )
    shown = _shown_scores(scores)
    assert [label for label, _ in shown] == [f"{r['index'] + 1}. {r['option']}" for r in ranked]
    assert [score for _, score in shown] == pytest.approx([r["score"] for r in ranked], abs=1e-6)

    page.get_by_role("tab", name="Tag").click()
    text = "Sherlock Holmes met Dr. Watson in London at the end of January."
    page.locator("#tag-text").get_by_role("textbox").fill(text)
    page.locator("#tag-button").click()
    shown = page.locator("#tag-entities")
    playwright.expect(shown).to_contain_text("Sherlock")
    for entity in task_predictors["tag"].tag(text):
        playwright.expect(shown).to_contain_text(entity["entity"])
