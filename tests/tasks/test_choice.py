"""Multiple choice (rtoolkit.tasks.choice): the RACE reader on the real files, option encoding (blanks filled, the
passage truncated first), batches and masks, bad input, predictions and metrics, and finetuning end to end."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rtoolkit import tasks
from rtoolkit.config import RobertaConfig
from rtoolkit.data.glue import DataError
from rtoolkit.model import RobertaForMultipleChoice, RobertaForTokenClassification
from rtoolkit.tasks import choice
from rtoolkit.tasks.choice import METRICS, Question, QuestionSet
from rtoolkit.tasks.common import Features
from rtoolkit.train.finetune import FinetuneConfig, evaluate_model, finetune
from tests.conftest import shared_data

PASSAGE = "Tom lives in a small town near the sea. He goes to school by bike every day, and he likes music."


def race_dir() -> Path:
    return shared_data("race")


def record(**overrides) -> dict:
    """One RACE passage record with two questions (a blank and a plain question)."""
    base = {
        "answers": ["C", "A"],
        "options": [["by bus", "by car", "by bike", "on foot"], ["music", "art", "maths", "sport"]],
        "questions": ["Tom goes to school _ .", "What does Tom like?"],
        "article": PASSAGE,
        "id": "middle7.txt",
    }
    return {**base, **overrides}


def write_lines(path: Path, rows: list) -> Path:
    """JSON lines (rows given as strings are written as they are), gzip-compressed for a .gz name."""
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def dev_lines(n: int) -> list[str]:
    """The first n passages of the real dev file, as they are."""
    with gzip.open(race_dir() / "dev.jsonl.gz", "rt", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def option_sequences(tokenizer, features: Features, i: int) -> list[str]:
    """Feature i's option sequences as text, specials included, padding cut."""
    ids, lengths = features.inputs["input_ids"][i], features.inputs["option_lengths"][i]
    return [tokenizer.decode(row[:n], skip_special_tokens=False) for row, n in zip(ids, lengths, strict=True)]


# ------------------------------------------------------------------------------------------------ reader
def test_reads_real_race_dev_with_levels_and_labels():
    dev = choice.read_split(race_dir(), "dev")
    assert len(dev) == 4887  # RACE paper, Table 1
    assert [sum(q.level == level for q in dev) for level in ("high", "middle")] == [3451, 1436]
    assert dev.levels == ("middle", "high") and dev.has_labels
    assert all(len(q.options) == 4 and q.label in range(4) for q in dev)
    assert {q.label for q in dev} == {0, 1, 2, 3}
    assert len({q.id for q in dev}) == len(dev)
    first = dev[0]
    assert (first.id, first.level) == ("high63-0", "high")
    assert first.question == "Researchers did experiments on kids in order to find out   _  ."
    assert first.options[1] == "whether mood affects their learning ability"
    assert first.passage.startswith("Homework can put you in a badmood")
    assert dev[len(dev) - 1].id.startswith("middle") and dev[len(dev) - 1].level == "middle"


def test_finds_split_files_and_stops_at_limit():
    folder = race_dir()
    assert choice.split_files(folder, "train") == [folder / "train-02.jsonl.gz"]
    assert choice.split_files(folder.parent, "dev") == [
        folder / "dev.jsonl.gz"
    ]  # the data root holding race/
    first = choice.read_split(folder, "train", limit=7)
    assert len(first) == 7 and all(q.level == "middle" for q in first)
    with pytest.raises(FileNotFoundError, match="no RACE test data"):
        choice.split_files(folder, "test")


def test_load_data_for_race_and_custom_files(tmp_path):
    def config(**fields):
        return FinetuneConfig(model=tmp_path, out=tmp_path / "out", **fields)

    race = config(task="race", data_dir=race_dir(), max_train_samples=10, max_eval_samples=5)
    data = choice.load_data(race)
    assert data.train is not None
    assert (len(data.train), list(data.evals), len(data.evals["dev"]), data.tests) == (10, ["dev"], 5, {})
    assert data.metrics == METRICS and data.main_key == "dev/accuracy"
    assert choice.load_data(race, train=False).train is None
    main = config(task="race", data_dir=race_dir(), max_eval_samples=5, main_metric="accuracy_high")
    assert choice.load_data(main).main_key == "dev/accuracy_high"
    with pytest.raises(FileNotFoundError, match="no RACE test data"):  # this copy of RACE has no test split
        choice.load_data(config(task="race", data_dir=race_dir(), max_train_samples=1, predict=True))
    files = {
        "family": "multiple-choice",
        "train_file": write_lines(tmp_path / "train.jsonl", [record()]),
        "validation_file": write_lines(tmp_path / "dev.jsonl", [record(id="x.txt")]),
    }
    data = choice.load_data(config(**files))
    assert data.train is not None and len(data.train) == 2
    assert data.metrics == ("accuracy",)  # no level in dev's ids
    with pytest.raises(ValueError, match=r"main metric 'accuracy_high' is not reported here"):
        choice.load_data(config(**files, main_metric="accuracy_high"))
    with pytest.raises(ValueError, match="--predict with custom data needs a test file"):
        choice.load_data(config(**files, predict=True))


def test_custom_file_plain_or_gzip_reads_the_same(tmp_path):
    rows = [record(), record(id="high3.txt", answers=["A", "D"])]
    plain = choice.read_race(write_lines(tmp_path / "a.jsonl", rows))
    packed = choice.read_race(write_lines(tmp_path / "a.jsonl.gz", rows))
    assert plain.questions == packed.questions
    assert [q.label for q in plain] == [2, 0, 0, 3]
    assert [q.level for q in plain] == ["middle", "middle", "high", "high"]
    assert [q.id for q in plain] == ["middle7-0", "middle7-1", "high3-0", "high3-1"]
    # Without an id the line names the passage, and no level is known.
    (only,) = choice.read_race(write_lines(tmp_path / "b.jsonl", [record(id=None)]), limit=1)
    assert (only.id, only.level) == ("b.jsonl:1-0", None)
    # Data to predict may leave out the answers.
    unlabelled = {k: v for k, v in record().items() if k != "answers"}
    test = choice.read_race(write_lines(tmp_path / "t.jsonl", [unlabelled]), labelled=False)
    assert [q.label for q in test] == [None, None] and not test.has_labels


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], r"x\.jsonl: file is empty"),
        (["", "  "], r"x\.jsonl: file is empty"),
        (["{oops"], r"x\.jsonl:1: invalid JSON"),
        (["[1, 2]"], r"x\.jsonl:1: expected a JSON object, got list"),
        (
            [{"questions": ["q"], "options": [["a", "b"]], "answers": ["A"]}],
            r"x\.jsonl:1: no field 'article'",
        ),
        (
            [record(), {k: v for k, v in record().items() if k != "answers"}],
            r"x\.jsonl:2: no field 'answers'",
        ),
        ([record(options=[["by bike"], ["a", "b", "c", "d"]])], r"x\.jsonl:1, question 0: 1 option\(s\)"),
        (
            [record(answers=["E", "A"])],
            r"x\.jsonl:1, question 0: answer 'E' is out of range: .*4 options \(A-D\)",
        ),
        ([record(answers=["C", 2])], r"x\.jsonl:1, question 1: answer 2 is not an option letter"),
        ([record(answers=["C"])], r"x\.jsonl:1: 'answers' must be a list with one letter per question \(2\)"),
        (
            [record(options=[["a", "b", "c", "d"]])],
            r"x\.jsonl:1: 'options' must be a list with one option list",
        ),
        (
            [record(options=[["a", "", "c", "d"], ["a", "b", "c", "d"]])],
            r"question 0: options must be a list of",
        ),
        ([record(article=" ")], r"x\.jsonl:1: 'article' must be a non-empty string"),
        ([record(questions=[], options=[], answers=[])], r"x\.jsonl:1: the passage has no questions"),
        (
            [record(), record(options=[["a", "b", "c", "d", "e"], ["a", "b", "c", "d"]])],
            r"x\.jsonl:2, question 0: 5 options, but .*x\.jsonl:1, question 0 has 4; every question",
        ),
    ],
)
def test_bad_race_files_name_the_line(tmp_path, rows, message):
    path = write_lines(tmp_path / "x.jsonl", rows)
    with pytest.raises(DataError, match=message):
        choice.read_race(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found"):
        choice.read_race(tmp_path / "absent.jsonl")
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress((json.dumps(record()) + "\n").encode() * 50)[:60])
    with pytest.raises(DataError, match=r"broken\.jsonl\.gz: cannot read the gzip data"):
        choice.read_race(broken)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(record(article="Tom \u00e9t\u00e9")).encode().replace(b"\\u00e9", b"\xe9"))
    with pytest.raises(DataError, match=r"latin\.jsonl: not UTF-8"):
        choice.read_race(latin)


def test_make_examples_checks_its_input():
    examples = choice.make_examples([PASSAGE], ["What does Tom like?"], [["music", "art"]])
    assert len(examples) == 1 and examples[0].label is None and examples[0].options == ("music", "art")
    with pytest.raises(ValueError, match="2 passages, 1 questions and 1 option lists"):
        choice.make_examples([PASSAGE, PASSAGE], ["q"], [["a", "b"]])
    with pytest.raises(ValueError, match=r"example 0: 1 option\(s\); a question needs at least 2"):
        choice.make_examples([PASSAGE], ["q"], [["a"]])
    with pytest.raises(ValueError, match="example 1: 3 options, but example 0 has 2"):
        choice.make_examples([PASSAGE, PASSAGE], ["q", "q"], [["a", "b"], ["a", "b", "c"]])
    with pytest.raises(ValueError, match="example 0: the passage must be a non-empty string"):
        choice.make_examples([""], ["q"], [["a", "b"]])
    with pytest.raises(ValueError, match="example 0: options must be a list of non-empty strings"):
        choice.make_examples([PASSAGE], ["q"], ["ab"])
    samples = choice.sample_examples()
    assert samples.has_labels and {len(q.options) for q in samples} == {4}


# ---------------------------------------------------------------------------------------------- encoding
def test_options_fill_the_blank_or_follow_the_question(tokenizer):
    assert choice.option_text("Tom goes to school _ .", "by bike") == "Tom goes to school by bike ."
    assert choice.option_text("He has _ and _ .", "a; b") == "He has a; b and a; b ."
    assert choice.option_text("What does Tom like?", "music") == "What does Tom like? music"
    assert choice.option_text("", "music") == "music"
    examples = QuestionSet(
        [
            Question(PASSAGE, "Tom goes to school _ .", ("by bus", "by bike"), 1, "q-0"),
            Question(PASSAGE, "What does Tom like?", ("music", "art"), 0, "q-1"),
        ],
        "test",
    )
    features = choice.encode(tokenizer, examples, max_length=128)
    assert features.inputs["input_ids"][0].shape[0] == 2
    assert [int(y) for y in features.inputs["labels"]] == [1, 0]
    assert option_sequences(tokenizer, features, 0) == [
        f"<s>{PASSAGE}</s></s>Tom goes to school by bus .</s>",
        f"<s>{PASSAGE}</s></s>Tom goes to school by bike .</s>",
    ]
    assert option_sequences(tokenizer, features, 1)[1] == f"<s>{PASSAGE}</s></s>What does Tom like? art</s>"
    # The ids are those of the tokenizer's own pair encoding, and a feature's length is its longest option.
    first = features.inputs["input_ids"][1][0][: features.inputs["option_lengths"][1][0]]
    assert first.tolist() == tokenizer.encode(PASSAGE, "What does Tom like? music", max_length=None)
    assert features.lengths.tolist() == [int(n.max()) for n in features.inputs["option_lengths"]]
    # The passage's line breaks are read as spaces (as fairseq's RACE preprocessing does).
    lines = QuestionSet([Question(PASSAGE.replace(". ", ".\n"), "Why?", ("a", "b"), 0, "q")], "test")
    spaces = QuestionSet([Question(PASSAGE, "Why?", ("a", "b"), 0, "q")], "test")
    first_ids = choice.encode(tokenizer, lines, max_length=128).inputs["input_ids"][0]
    np.testing.assert_array_equal(
        first_ids, choice.encode(tokenizer, spaces, max_length=128).inputs["input_ids"][0]
    )


def test_the_passage_is_truncated_first(tokenizer):
    long_passage = " ".join([PASSAGE] * 20)
    options = ("music", "the sound of the sea at night")
    examples = QuestionSet([Question(long_passage, "What does Tom like?", options, 0, "q")], "test")
    features = choice.encode(tokenizer, examples, max_length=48)
    assert features.inputs["option_lengths"][0].tolist() == [48, 48]
    for text, option in zip(option_sequences(tokenizer, features, 0), options, strict=True):
        passage, second = text.removeprefix("<s>").removesuffix("</s>").split("</s></s>")
        assert second == f"What does Tom like? {option}"  # question and option whole
        assert long_passage.startswith(passage) and len(passage) < len(
            long_passage
        )  # the passage's beginning
    # A question and option that alone exceed max_length are cut from their end, with no passage left.
    wordy = QuestionSet([Question(PASSAGE, long_passage, ("yes", "no"), 0, "q")], "test")
    ids = choice.encode(tokenizer, wordy, max_length=32).inputs["input_ids"][0]
    assert ids.shape == (2, 32)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert ids[:, :3].tolist() == [[bos, eos, eos]] * 2 and ids[:, -1].tolist() == [eos, eos]
    assert ids[0, 3:-1].tolist() == tokenizer.encode(f"{long_passage} yes", max_length=None)[1:29]
    with pytest.raises(ValueError, match="max_length must be at least 4"):
        choice.encode(tokenizer, wordy, max_length=3)


def test_collate_pads_options_and_masks_the_padding(tokenizer, tiny_config):
    examples = QuestionSet(
        [
            Question(
                PASSAGE, "What does Tom like?", ("music", "art", "the sound of the sea", "maths"), 0, "a"
            ),
            Question("A short one.", "Who?", ("Tom", "Anna", "his sister Anna", "nobody at all"), 3, "b"),
            Question(PASSAGE, "Tom goes to school _ .", ("by bus", "by car", "by bike", "on foot"), 2, "c"),
        ],
        "test",
    )
    features = choice.encode(tokenizer, examples, max_length=128)
    batch = choice.collate(tokenizer, features, np.array([0, 1, 2]))
    width = int(features.lengths.max())
    assert batch["input_ids"].shape == (3, 4, width) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].shape == (3, 4, width)
    assert batch["labels"].tolist() == [0, 3, 2]
    lengths = np.stack(features.inputs["option_lengths"])  # (3, 4)
    assert batch["attention_mask"].sum(-1).tolist() == lengths.tolist()
    padded = batch["input_ids"][batch["attention_mask"] == 0]
    assert padded.numel() > 0 and bool((padded == tokenizer.pad_token_id).all())
    # Padding changes no score: each question alone (its own padding only) gives the same logits.
    model = RobertaForMultipleChoice(tiny_config).eval()
    with torch.no_grad():
        together = model(**batch).logits  # (3, 4)
        alone = torch.cat([model(**choice.collate(tokenizer, features, [i])).logits for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    # Options all of one length: no mask (flash-eligible); no labels without answers.
    unlabelled = choice.make_examples([PASSAGE * 10], ["Why?"], [["yes", "no"]])
    plain = choice.collate(tokenizer, choice.encode(tokenizer, unlabelled, max_length=40), [0])
    assert set(plain) == {"input_ids"} and plain["input_ids"].shape == (1, 2, 40)
    # Different option counts never share a batch.
    mixed = Features(
        {"input_ids": [np.zeros((2, 5), np.int64), np.zeros((3, 5), np.int64)],
         "option_lengths": [np.full(2, 5), np.full(3, 5)]},
        np.arange(2), np.array([5, 5]),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"mixes questions with \[2, 3\] options"):
        choice.collate(tokenizer, mixed, [0, 1])


# ------------------------------------------------------------------------------------------- predictions
def test_predictions_scores_and_files(tmp_path):
    examples = QuestionSet(
        [
            Question(PASSAGE, "q", ("a", "b", "c"), 1, "high1-0", "high"),
            Question(PASSAGE, "q", ("a", "b", "c"), 0, "middle1-0", "middle"),
            Question(PASSAGE, "q", ("a", "b", "c"), 2, "middle1-1", "middle"),
        ],
        "test",
    )
    features = Features({}, np.array([0, 1, 2]), np.array([5, 5, 5]))
    outputs = [{"logits": np.array(row, np.float32)} for row in ([0, 2, 1], [3, 0, 0], [0, 1, 0])]
    predictions = choice.postprocess(outputs, features, examples, None)
    assert [p["label"] for p in predictions] == [1, 0, 1]
    assert predictions[0]["scores"] == pytest.approx(np.exp([0, 2, 1]) / np.exp([0, 2, 1]).sum())
    assert all(isinstance(s, float) for s in predictions[0]["scores"])
    scores = choice.score(predictions, examples, None)
    assert scores == pytest.approx({"accuracy": 2 / 3, "accuracy_middle": 0.5, "accuracy_high": 1.0})
    assert choice.agreement(predictions, predictions) == {"choice_agreement": 1.0}
    flipped = [{**p, "label": 2} for p in predictions]
    assert choice.agreement(predictions, flipped) == {"choice_agreement": 0.0}
    path = choice.write_predictions(predictions, examples, None, "test", tmp_path / "out")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert path.name == "test_predictions.jsonl"
    assert [(r["id"], r["label"], r["answer"]) for r in lines] == [
        ("high1-0", 1, "B"), ("middle1-0", 0, "A"), ("middle1-1", 1, "B")
    ]  # fmt: skip
    assert lines[0]["scores"] == predictions[0]["scores"]
    unlabelled = QuestionSet([Question(PASSAGE, "q", ("a", "b"), None, "x")], "new.jsonl")
    with pytest.raises(DataError, match=r"new\.jsonl: has no answers"):
        choice.score(predictions[:1], unlabelled, None)


def test_build_model_keeps_only_a_multiple_choice_head(tmp_path, encoder_dir):
    fresh = choice.build_model(encoder_dir, None, classifier_dropout=0.1)
    assert fresh.config.classifier_dropout == 0.1 and fresh.config.id2label is None
    saved = fresh.save_pretrained(tmp_path / "mc")
    again = choice.build_model(saved, None)
    for key in ("classifier.weight", "roberta.pooler.dense.weight"):
        torch.testing.assert_close(again.state_dict()[key], fresh.state_dict()[key])
    assert choice.labels_from_config(again.config) is None
    # A one-label token classifier's classifier.* has the shape of a scorer but is another head: not reused.
    tagger = RobertaForTokenClassification(RobertaConfig.tiny(id2label={0: "O"})).save_pretrained(
        tmp_path / "tag"
    )
    built = choice.build_model(tagger, None)
    assert not torch.equal(
        built.classifier.weight, load_file(str(tagger / "model.safetensors"))["classifier.weight"]
    )


# ------------------------------------------------------------------------------------------- end to end
def test_finetune_race_then_evaluate_best(tmp_path, encoder_dir):
    out = tmp_path / "race"
    config = FinetuneConfig(
        model=encoder_dir, task="race", data_dir=race_dir(), out=out, lr=3e-3, batch_size=8, max_steps=6,
        max_train_samples=32, max_eval_samples=48, max_length=128, eval_every=3, progress=False,
    )  # fmt: skip
    assert config.family == "multiple-choice" and tasks.task_family("race") is choice
    resolved = config.resolved()
    assert (resolved.epochs, resolved.weight_decay, resolved.warmup_ratio) == (4, 0.1, 0.06)
    results = finetune(config)
    assert results["main_metric"] == "dev/accuracy" and results["steps"] == 6
    best = results["best"]
    # The first 48 dev questions are all from RACE-H.
    assert {"dev/loss", "dev/accuracy", "dev/accuracy_high"} <= set(best)
    saved = json.loads((out / "best" / "config.json").read_text(encoding="utf-8"))
    assert saved["architectures"] == ["RobertaForMultipleChoice"]
    again = evaluate_model(out / "best", task="race", data_dir=race_dir(), max_samples=48, max_length=128)
    assert again["dev/examples"] == 48
    assert again["dev/accuracy"] == pytest.approx(best["dev/accuracy"])
    assert again["dev/loss"] == pytest.approx(best["dev/loss"], rel=1e-4)


def test_finetune_custom_files_with_predictions(tmp_path, encoder_dir):
    lines = dev_lines(12)  # 12 real passages: 8 to train on, 4 to validate, 2 of them also to predict
    train = write_lines(tmp_path / "train.jsonl.gz", lines[:8])
    dev = write_lines(tmp_path / "dev.jsonl", lines[8:])
    records = [json.loads(line) for line in lines[8:10]]
    for r in records:
        del r["answers"]
    test = write_lines(tmp_path / "test.jsonl", records)
    out = tmp_path / "custom"
    config = FinetuneConfig(
        model=encoder_dir, family="multiple-choice", train_file=train, validation_file=dev, test_file=test,
        out=out, lr=1e-3, batch_size=8, max_steps=2, max_length=128, predict=True, progress=False,
    )  # fmt: skip
    resolved = config.resolved()
    assert (resolved.lr, resolved.batch_size, resolved.epochs) == (1e-3, 8, 4)
    results = finetune(config)
    assert results["task"] == "custom" and "dev/accuracy" in results["best"]
    (written,) = results["predictions"]
    rows = [json.loads(line) for line in Path(written).read_text(encoding="utf-8").splitlines()]
    expected_ids = [
        f"{r['id'].removesuffix('.txt')}-{k}" for r in records for k in range(len(r["questions"]))
    ]
    assert [r["id"] for r in rows] == expected_ids
    assert all(r["answer"] == "ABCD"[r["label"]] and sum(r["scores"]) == pytest.approx(1.0) for r in rows)
    again = evaluate_model(out / "best", validation_file=dev, max_length=128)
    assert again["dev/accuracy"] == pytest.approx(results["best"]["dev/accuracy"])
