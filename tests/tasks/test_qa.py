"""Extractive question answering (rtoolkit.tasks.qa): the SQuAD reader and its article split on the real dev set,
sliding windows (against Hugging Face's overflowing tokens) and their training targets, span decoding, EM/F1 against
the official evaluate-v1.1.py, bad input, and finetuning end to end."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rtoolkit import tasks
from rtoolkit.config import RobertaConfig
from rtoolkit.data.glue import DataError
from rtoolkit.model import RobertaForQuestionAnswering
from rtoolkit.tasks import qa
from rtoolkit.tasks.common import Features
from rtoolkit.tasks.qa import QADataset, QAExample
from rtoolkit.train.finetune import FinetuneConfig, evaluate_model, finetune
from tests.conftest import shared_data


def squad_dir() -> Path:
    return shared_data("squad1")


@pytest.fixture(scope="module")
def dev() -> QADataset:
    return qa.read_squad(squad_dir() / "dev-v1.1.json")


def squad_file(path: Path, articles: list, version: str = "1.1") -> Path:
    path.write_text(json.dumps({"version": version, "data": articles}), encoding="utf-8")
    return path


def article(context: str, *qas: dict, title: str = "T") -> dict:
    return {"title": title, "paragraphs": [{"context": context, "qas": list(qas)}]}


def peaked_outputs(features: Features, spans: dict[int, tuple[int, int]]) -> list[dict[str, np.ndarray]]:
    """Per-feature logits: 0 everywhere, 8 at (start, end) positions of the features in `spans`."""
    outputs = []
    for i, n in enumerate(features.lengths):
        start, end = np.zeros(n, np.float32), np.zeros(n, np.float32)
        if i in spans:
            start[spans[i][0]], end[spans[i][1]] = 8.0, 8.0
        outputs.append({"start_logits": start, "end_logits": end})
    return outputs


# ----------------------------------------------------------------------------------------------- reading
def test_reads_the_dev_set_and_splits_it_by_article(dev, caplog):
    assert len(dev) == 10570 and len({e.article for e in dev}) == 48 and not dev.with_impossible
    first = dev[0]
    assert first.context[first.answer_starts[0] :].startswith(first.answers[0])
    assert sum(len(e.answers) for e in dev) == 34726

    cfg = FinetuneConfig(model=Path("m"), out=Path("o"), task="squad", data_dir=squad_dir())
    with caplog.at_level(logging.INFO, logger="rtoolkit.tasks.qa"):
        data = qa.load_data(cfg)
    assert "every 5th article (indices 4, 9, 14, 19, 24, 29, 34, 39, 44" in caplog.text
    train, held = data.train, data.evals["dev"]
    assert train is not None
    assert {e.article for e in held} == set(range(4, 48, 5))
    assert {e.article for e in train} == set(range(48)) - set(range(4, 48, 5))
    assert len(train) + len(held) == len(dev)
    assert not {e.context for e in train} & {e.context for e in held}  # no passage on both sides
    assert data.main_key == "dev/f1" and data.metrics == ("exact_match", "f1") and data.labels is None
    assert tasks.task_family("squad") is qa and tasks.family("question-answering") is qa


def test_squad2_unanswerable_questions_are_read(tmp_path):
    context = "The castle was built in 1120 by the duke."
    path = squad_file(
        tmp_path / "v2.json",
        [
            article(
                context,
                {
                    "id": "a",
                    "question": "When?",
                    "answers": [{"text": "1120", "answer_start": 24}],
                    "is_impossible": False,
                },
                {
                    "id": "b",
                    "question": "Who tore it down?",
                    "answers": [],
                    "is_impossible": True,
                    "plausible_answers": [{"text": "the duke", "answer_start": 32}],
                },
            )  # fmt: skip
        ],
        version="v2.0",
    )
    data = qa.read_squad(path)
    assert data.with_impossible and [e.impossible for e in data] == [False, True]
    assert data[1].answers == () and data[1].labelled
    # Right answers for both: the span, and "" for the impossible one.
    perfect = [
        [{"answer": "1120", "score": 1.0, "start": 24, "end": 28}],
        [{"answer": "", "score": 1.0, "start": 0, "end": 0}],
    ]
    assert qa.score(perfect, data) == {"exact_match": 100.0, "f1": 100.0}
    wrong = [perfect[0], [{"answer": "the duke", "score": 1.0, "start": 32, "end": 40}]]
    assert qa.score(wrong, data) == {"exact_match": 50.0, "f1": 50.0}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "file is empty"),
        ("   \n", "file is empty"),
        ('{"version": "1.1"}', 'expected an object with a "data" list'),
        ("[1, 2]", 'expected an object with a "data" list'),
        ('{"data": [{"title": "x"}]}', "data[0]: missing field 'paragraphs'"),
        ('{"data": [{"paragraphs": [{"qas": []}]}]}', "data[0].paragraphs[0]: missing field 'context'"),
        ('{"data": [\n{"paragraphs": [}', "invalid JSON"),
        ('{"data": []}', "holds no questions"),
    ],
)
def test_malformed_squad_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="bad.json") as info:
        qa.read_squad(path)
    assert message in str(info.value)


def test_bad_questions_and_answers_name_the_question_id(tmp_path):
    context = "Ravens are clever birds."

    def read(*qas: dict) -> QADataset:
        return qa.read_squad(squad_file(tmp_path / "q.json", [article(context, *qas)]))

    ok = {
        "id": "q1",
        "question": "What are ravens?",
        "answers": [{"text": "clever birds", "answer_start": 11}],
    }
    assert read(ok)[0].answers == ("clever birds",)
    moved = {**ok, "id": "q7", "answers": [{"text": "clever birds", "answer_start": 10}]}
    with pytest.raises(DataError, match=r"question q7: answer 'clever birds' does not match the context at "):
        read(moved)
    with pytest.raises(DataError, match="question q2: no answers"):
        read({**ok, "id": "q2", "answers": []})
    with pytest.raises(DataError, match="question q1: duplicate question id"):
        read(ok, ok)
    with pytest.raises(DataError, match="question q3: empty question"):
        read({**ok, "id": "q3", "question": "  "})
    with pytest.raises(DataError, match="question q4: answers\\[0\\]: missing field 'answer_start'"):
        read({**ok, "id": "q4", "answers": [{"text": "birds"}]})
    with pytest.raises(
        DataError, match="question q5: answers\\[0\\]: field 'answer_start' must be an integer"
    ):
        read({**ok, "id": "q5", "answers": [{"text": "birds", "answer_start": "18"}]})
    with pytest.raises(DataError, match="qas\\[0\\]: missing field 'id'"):
        read({"question": "Why?", "answers": []})
    # Unlabelled questions are fine where answers are not needed (a test file).
    squad_file(tmp_path / "q.json", [article(context, {**ok, "answers": []})])
    assert not qa.read_squad(tmp_path / "q.json", require_answers=False)[0].labelled


def test_make_and_sample_examples():
    made = qa.make_examples(["Who?", "What?"], ["Ann came.", "A cat."])
    assert [e.id for e in made] == ["0", "1"] and not made[0].labelled
    with pytest.raises(DataError, match="2 questions but 1 contexts"):
        qa.make_examples(["Who?", "What?"], ["Ann came."])
    with pytest.raises(DataError, match=r"contexts\[1\]: empty context"):
        qa.make_examples(["Who?", "What?"], ["Ann came.", " "])
    samples = qa.sample_examples()
    assert len(samples) >= 2
    for e in samples:
        assert e.context[e.answer_starts[0] :].startswith(e.answers[0])


# ----------------------------------------------------------------------------------------------- windows
def test_windows_match_hugging_face_overflowing_tokens(tokenizer_dir, tokenizer, dev):
    """Ids, window boundaries and context offsets equal what Hugging Face's run_qa gets from its fast tokenizer
    (truncation="only_second", return_overflowing_tokens, the same stride)."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.RobertaTokenizerFast.from_pretrained(str(tokenizer_dir))
    examples = dev.first(300)
    features = qa.encode(tokenizer, examples, max_length=96, stride=24)
    enc = hf(
        [e.question.strip() for e in examples], [e.context for e in examples], truncation="only_second",
        max_length=96, stride=24, return_overflowing_tokens=True, return_offsets_mapping=True,
    )  # fmt: skip
    assert len(features) == len(enc["input_ids"]) > len(examples)
    assert features.example.tolist() == enc["overflow_to_sample_mapping"]
    for i, window in enumerate(features.info):
        assert features.inputs["input_ids"][i].tolist() == enc["input_ids"][i]
        context = [
            tuple(o) for o, s in zip(enc["offset_mapping"][i], enc.sequence_ids(i), strict=True) if s == 1
        ]
        assert [tuple(o) for o in window.offsets[window.first : window.last].tolist()] == context


def test_long_context_windows_cover_it_with_the_overlap_and_target_the_answer(tokenizer, dev):
    example = max(dev.first(2000), key=lambda e: len(e.context))
    examples = QADataset([example], "dev")
    max_length, stride = 64, 16
    features = qa.encode(tokenizer, examples, max_length=max_length, stride=stride)
    question = len(tokenizer.encode(example.question.strip(), max_length=None)) - 2
    room = max_length - question - 4
    n = len(tokenizer.tokenize(example.context))
    spans = [(w.first, w.last) for w in features.info]
    assert len(spans) > 5 and spans[0][0] == 0 and spans[-1][1] == n
    assert all(last - first <= room for first, last in spans) and max(features.lengths) == max_length
    assert all(
        b[0] == a[1] - stride for a, b in zip(spans[:-1], spans[1:], strict=True)
    )  # share `stride` tokens

    begin, end = example.answer_starts[0], example.answer_starts[0] + len(example.answers[0])
    targeted = 0
    for i, window in enumerate(features.info):
        s, e = int(features.inputs["start_positions"][i]), int(features.inputs["end_positions"][i])
        ids = features.inputs["input_ids"][i]
        assert ids[0] == tokenizer.bos_token_id and ids[window.context_start - 1] == tokenizer.eos_token_id
        covered = window.offsets[window.first, 0] <= begin and end <= window.offsets[window.last - 1, 1]
        if s == 0:
            assert e == 0 and not covered
            continue
        targeted += 1
        shift = window.first - window.context_start  # feature position -> context token
        first, last = window.offsets[s + shift], window.offsets[e + shift]
        assert example.context[first[0] : last[1]] == example.answers[0]
    assert targeted >= 1


def test_answer_outside_a_window_targets_bos(tokenizer):
    context = " ".join(["the sea was calm and grey that morning."] * 12) + " The ship was called Pequod."
    start = context.index("Pequod")
    examples = QADataset([QAExample("x", "What was the ship called?", context, ("Pequod",), (start,))], "t")
    features = qa.encode(tokenizer, examples, max_length=48, stride=8)
    targets = list(zip(features.inputs["start_positions"], features.inputs["end_positions"], strict=True))
    assert len(features) > 3
    assert all(int(s) == int(e) == 0 for s, e in targets[:-1])  # the answer is only in the last window
    s, e = (int(x) for x in targets[-1])
    window = features.info[-1]
    offsets = window.offsets[window.first : window.last]
    assert context[offsets[s - window.context_start, 0] : offsets[e - window.context_start, 1]] == "Pequod"


def test_an_answer_in_no_window_trains_every_window_on_bos(tokenizer):
    answer = " ".join(["red green blue"] * 20)  # longer than a window: no window holds all of it
    context = "The colours were " + answer + ". That was all."
    start = context.index(answer)
    examples = QADataset([QAExample("x", "Which colours?", context, (answer,), (start,))], "t")
    features = qa.encode(tokenizer, examples, max_length=32, stride=8)
    assert len(features) > 3
    starts, ends = features.inputs["start_positions"], features.inputs["end_positions"]
    assert all(int(s) == int(e) == 0 for s, e in zip(starts, ends, strict=True))


def test_a_question_longer_than_the_window_is_an_error(tokenizer):
    long_question = "Why " + "and why " * 40 + "?"
    examples = qa.make_examples(["Fine?", long_question], ["It is fine.", "Because."])
    with pytest.raises(DataError, match=r"question 1 has \d+ tokens, which leaves no room for the context"):
        qa.encode(tokenizer, examples, max_length=32, stride=4)
    # A stride that leaves no new tokens for the next window, while a context needs several, is an error too.
    examples = qa.make_examples(["Who?"], ["word " * 100])
    with pytest.raises(DataError, match="question 0: stride 30 leaves no new tokens"):
        qa.encode(tokenizer, examples, max_length=32, stride=30)
    assert len(qa.encode(tokenizer, qa.make_examples(["Who?"], ["Ann."]), max_length=32, stride=30)) == 1


def test_collate_pads_only_when_needed(tokenizer):
    context = "Ann came home."
    questions = [
        QAExample("a", "Who?", context, ("Ann",), (0,)),
        QAExample("b", "Who came?", context, ("Ann",), (0,)),
    ]
    examples = QADataset(questions, "t")
    features = qa.encode(tokenizer, examples, max_length=64)
    batch = qa.collate(tokenizer, features, [0, 1])
    assert batch["input_ids"].shape == (2, int(features.lengths.max()))
    assert batch["attention_mask"].sum(1).tolist() == features.lengths.tolist()
    assert batch["start_positions"].tolist() == [int(features.inputs["start_positions"][i]) for i in (0, 1)]
    assert "attention_mask" not in qa.collate(tokenizer, features, [1])
    out = RobertaForQuestionAnswering(RobertaConfig.tiny())(**batch)
    assert out.start_logits.shape == batch["input_ids"].shape and out.loss is not None
    unlabelled = qa.encode(tokenizer, qa.make_examples(["Who?"], ["Ann came home."]), max_length=64)
    assert set(qa.collate(tokenizer, unlabelled, [0])) == {"input_ids"}


# ---------------------------------------------------------------------------------------------- decoding
def test_decoding_finds_the_gold_span_across_windows(tokenizer, dev):
    example = max(dev.first(2000), key=lambda e: len(e.context))
    examples = QADataset([example], "dev")
    features = qa.encode(tokenizer, examples, max_length=64, stride=16)
    labels = features.inputs
    peaks = {
        i: (int(labels["start_positions"][i]), int(labels["end_positions"][i])) for i in range(len(features))
    }
    outputs = peaked_outputs(features, {i: p for i, p in peaks.items() if p != (0, 0)})
    (answers,) = qa.postprocess(outputs, features, examples, None, top_k=3)
    best = answers[0]
    begin = example.answer_starts[0]
    assert (best["answer"], best["start"], best["end"]) == (
        example.answers[0],
        begin,
        begin + len(best["answer"]),
    )
    assert len(answers) == 3 and answers[0]["score"] > answers[1]["score"] >= answers[2]["score"] > 0
    assert sum(a["score"] for a in answers) <= 1 + 1e-9
    for a in answers:
        assert example.context[a["start"] : a["end"]] == a["answer"] and a["answer"] == a["answer"].strip()
    # max_answer_length (tokens) bounds every candidate.
    (short,) = qa.postprocess(outputs, features, examples, None, top_k=5, max_answer_length=1)
    assert all(len(tokenizer.tokenize(a["answer"])) <= 2 for a in short)


def test_offsets_are_characters_of_the_original_text(tokenizer):
    context = "Le café à Paris ouvre à sept heures. Zoë arrive ensuite, très tôt."
    examples = qa.make_examples(["Qui arrive?"], [context])
    features = qa.encode(tokenizer, examples, max_length=128)
    window = features.info[0]
    offsets = window.offsets[window.first : window.last]
    begin = context.index("Zoë")
    real = offsets[:, 1] > offsets[:, 0]  # " Zoë" may be " " (no characters), "Z", "o", and "ë" in two bytes
    first = int(np.flatnonzero(real & (offsets[:, 0] == begin))[0])
    last = int(np.flatnonzero(real & (offsets[:, 1] == begin + 3))[0])
    outputs = peaked_outputs(features, {0: (window.context_start + first, window.context_start + last)})
    (answers,) = qa.postprocess(outputs, features, examples, None)
    assert answers == [{"answer": "Zoë", "score": answers[0]["score"], "start": begin, "end": begin + 3}]


def test_no_answer_threshold(tokenizer):
    context = "Stone walls were built in 1120 by the duke."
    examples = QADataset(
        [QAExample("b", "Who tore it down?", context, (), (), True)], "v2", with_impossible=True
    )
    features = qa.encode(tokenizer, examples, max_length=64)
    window = features.info[0]
    outputs = peaked_outputs(features, {0: (0, 0)})
    outputs[0]["start_logits"][window.context_start] = 5.0  # some span, but <s> is stronger
    (answers,) = qa.postprocess(outputs, features, examples, None, top_k=2)
    assert answers[0]["answer"] == "" and answers[0]["start"] == answers[0]["end"] == 0 and len(answers) == 2
    (answers,) = qa.postprocess(outputs, features, examples, None, null_threshold=100.0)
    assert answers[0]["answer"] != ""
    assert qa.score([answers], examples)["exact_match"] == 0.0
    # SQuAD 1.1 data never predicts "" unless a threshold is given.
    plain = QADataset(examples.examples, "v1")
    assert qa.postprocess(outputs, features, plain, None)[0][0]["answer"] != ""
    assert qa.postprocess(outputs, features, plain, None, null_threshold=0.0)[0][0]["answer"] == ""


# ----------------------------------------------------------------------------------------------- metrics
def official_scores(dataset: Path, predictions: Path) -> dict[str, float]:
    script = squad_dir() / "evaluate-v1.1.py"
    out = subprocess.run(
        [sys.executable, str(script), str(dataset), str(predictions)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_exact_match_and_f1_equal_the_official_script(tmp_path):
    document = json.loads((squad_dir() / "dev-v1.1.json").read_text(encoding="utf-8"))
    articles = [{**a, "paragraphs": a["paragraphs"][:20]} for a in document["data"][:2]]
    subset = squad_file(tmp_path / "dev-subset.json", articles)
    examples = qa.read_squad(subset)
    assert 200 < len(examples) < 600
    predictions = []
    for i, e in enumerate(examples):
        gold = e.answers[i % len(e.answers)]
        answer = [
            " ".join(e.context.split()[: 1 + i % 7]),  # the first words of the context
            f"The {gold.upper()}!",  # right once normalized
            f"{gold} and {e.context.split()[-1]}",  # partly right
            gold[: max(1, len(gold) // 2)],
            e.question,
        ][i % 5]
        predictions.append([{"answer": answer, "score": 1.0, "start": 0, "end": 0}])
    ours = qa.score(predictions, examples, None)
    path = qa.write_predictions(predictions, examples, None, "dev", tmp_path)
    assert path.name == "dev_predictions.json" and len(json.loads(path.read_text())) == len(examples)
    official = official_scores(subset, path)
    assert 5 < ours["f1"] < 95 and 5 < ours["exact_match"] < 95
    assert ours["exact_match"] == pytest.approx(official["exact_match"], abs=1e-9)
    assert ours["f1"] == pytest.approx(official["f1"], abs=1e-9)


def test_normalization_and_agreement():
    assert qa.normalize_answer("  The Quick, brown FOX!  an apple ") == "quick brown fox apple"
    assert qa.f1("the cat sat", "a cat sat down") == pytest.approx(2 * (2 / 2) * (2 / 3) / (2 / 2 + 2 / 3))
    reference = [[{"answer": "x", "score": 1.0, "start": 0, "end": 1}]] * 3
    candidate = [*reference[:2], [{"answer": "y", "score": 1.0, "start": 0, "end": 1}]]
    assert qa.agreement(reference, candidate) == {"answer_agreement": pytest.approx(2 / 3)}


# -------------------------------------------------------------------------------------------- end to end
def test_build_model_starts_a_head_and_keeps_a_trained_one(tmp_path, encoder_dir):
    model = qa.build_model(encoder_dir, None, classifier_dropout=0.0)
    assert isinstance(model, RobertaForQuestionAnswering) and model.config.num_labels == 2
    with torch.no_grad():
        model.qa_outputs.weight.fill_(0.25)
    saved = model.save_pretrained(tmp_path / "qa")
    again = qa.build_model(saved, qa.labels_from_config(model.config))
    assert torch.equal(again.qa_outputs.weight, model.qa_outputs.weight)


def test_finetune_squad_and_evaluate_best(tmp_path, encoder_dir):
    data_dir = squad_dir()
    out = tmp_path / "squad"
    config = FinetuneConfig(
        model=encoder_dir, task="squad", data_dir=data_dir, out=out, lr=1e-3, batch_size=16, max_steps=4,
        max_train_samples=64, max_eval_samples=32, max_length=128, stride=32, predict=True, progress=False,
        device="cpu",
    )  # fmt: skip
    results = finetune(config)
    assert results["main_metric"] == "dev/f1"
    best = results["best"]
    assert {"dev/exact_match", "dev/f1", "dev/loss"} <= set(best)
    assert 0 <= best["dev/exact_match"] <= best["dev/f1"] <= 100
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["best"]["dev/f1"] == best["dev/f1"]

    scores = evaluate_model(
        out / "best", task="squad", data_dir=data_dir, max_length=128, stride=32, max_samples=32, device="cpu"
    )
    assert scores["dev/examples"] == 32
    for key in ("dev/exact_match", "dev/f1"):
        assert scores[key] == pytest.approx(best[key], abs=1e-9)
    assert scores["dev/loss"] == pytest.approx(best["dev/loss"], rel=1e-5)

    # --predict wrote best/'s answers to the evaluation questions in SQuAD's format; the official script scores
    # them as finetuning did.
    (written,) = results["predictions"]
    _, held = qa.split_by_article(qa.read_squad(data_dir / "dev-v1.1.json"))
    held = held.first(32)
    ids = set(held.ids)
    document = json.loads((data_dir / "dev-v1.1.json").read_text(encoding="utf-8"))
    for art in document["data"]:
        for paragraph in art["paragraphs"]:
            paragraph["qas"] = [q for q in paragraph["qas"] if q["id"] in ids]
    subset = squad_file(tmp_path / "held.json", document["data"])
    assert set(json.loads(Path(written).read_text())) == ids
    official = official_scores(subset, Path(written))
    assert official["f1"] == pytest.approx(best["dev/f1"], abs=1e-9)


def test_finetune_custom_squad_files(tmp_path, encoder_dir):
    document = json.loads((squad_dir() / "dev-v1.1.json").read_text(encoding="utf-8"))
    first, fifth = document["data"][0], document["data"][4]
    train = squad_file(tmp_path / "train.json", [{**first, "paragraphs": first["paragraphs"][:4]}])
    valid = squad_file(tmp_path / "valid.json", [{**fifth, "paragraphs": fifth["paragraphs"][:2]}])
    test_doc = json.loads(valid.read_text())
    for paragraph in test_doc["data"][0]["paragraphs"]:
        for q in paragraph["qas"]:
            q.pop("answers")
    test = squad_file(tmp_path / "test.json", test_doc["data"])
    out = tmp_path / "custom"
    config = FinetuneConfig(
        model=encoder_dir, family="question-answering", train_file=train, validation_file=valid, test_file=test,
        out=out, batch_size=8, max_steps=2, max_length=128, stride=32, predict=True, progress=False, device="cpu",
        main_metric="exact_match",
    )  # fmt: skip
    results = finetune(config)
    assert results["main_metric"] == "dev/exact_match" and "dev/f1" in results["best"]
    (written,) = results["predictions"]
    assert Path(written).name == "test_predictions.json"
    assert set(json.loads(Path(written).read_text())) == set(qa.read_squad(test, require_answers=False).ids)
    scores = evaluate_model(out / "best", validation_file=valid, max_length=128, stride=32, device="cpu")
    assert scores["dev/f1"] == pytest.approx(results["best"]["dev/f1"], abs=1e-9)
    with pytest.raises(ValueError, match="main metric 'accuracy'"):
        qa.load_data(
            FinetuneConfig(
                model=Path("m"),
                out=Path("o"),
                family="question-answering",
                train_file=train,
                validation_file=valid,
                main_metric="accuracy",
            )  # fmt: skip
        )
