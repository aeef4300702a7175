"""A launched demo on 127.0.0.1 (tiny trained masked-LM, tiny classifier, and a tiny model of each other task
family: Answer, Choose and Tag tabs), shared by the demo tests."""

from __future__ import annotations

import socket

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def demo_predictors(trained_mlm_dir, classifier_dir):
    from rtoolkit import Predictor

    return Predictor.from_pretrained(trained_mlm_dir), Predictor.from_pretrained(classifier_dir)


@pytest.fixture(scope="session")
def task_predictors(family_dirs):
    """{"answer": Predictor, "choose": ..., "tag": ...}: the finetuned question-answering, multiple-choice and
    token-classification fixtures."""
    from rtoolkit import Predictor

    predictors = [Predictor.from_pretrained(folder) for folder in family_dirs.values()]
    return {next(iter(p.tasks & {"answer", "choose", "tag"})): p for p in predictors}


@pytest.fixture(scope="session")
def demo_url(demo_predictors, task_predictors):
    """URL of the demo served in this process (a background thread) for the whole session."""
    pytest.importorskip("gradio")
    from rtoolkit.demos.app import build_demo

    demo = build_demo(*demo_predictors, concurrency_limit=4, task_predictors=list(task_predictors.values()))
    _, url, _ = demo.launch(
        server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True
    )
    yield url
    demo.close()


def shown_as(prediction: dict) -> str:
    """How the page names a fill-mask prediction: its text without the leading space; blank ones as repr."""
    return prediction["token_str"].strip() or repr(prediction["token_str"])
