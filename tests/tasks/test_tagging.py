"""Token classification (rtoolkit.tasks.tagging): CoNLL reading and IOB1 -> IOB2, first-sub-token labels, entities
with character offsets, the entity-level metric against seqeval, bad inputs, and finetuning end to end on
CoNLL-2003 (../shared/data/conll2003) with a tiny encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rtoolkit import tasks
from rtoolkit.config import RobertaConfig
from rtoolkit.data.glue import DataError
from rtoolkit.model import IGNORE_INDEX, RobertaForTokenClassification
from rtoolkit.tasks import tagging
from rtoolkit.tasks.common import TaskData
from rtoolkit.train.evaluation import EvaluationRequest
from rtoolkit.train.finetune import FinetuneConfig, evaluate_model, finetune
from tests.conftest import shared_data

CONLL_LABELS = ("O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER")


@pytest.fixture(scope="module")
def conll_dir():
    return shared_data("conll2003")


@pytest.fixture(scope="module")
def dev(conll_dir):
    return tagging.read_conll(conll_dir / "eng.testa", labels=CONLL_LABELS)


def task_data(labels=CONLL_LABELS) -> TaskData:
    return TaskData(None, {}, {}, tagging.METRICS, "f1", labels=labels)


def one_hot_outputs(features, tag_ids_per_feature, *, num_labels, high=4.0):
    """Fake model outputs: logits (T, L) whose argmax at each covered word's first sub-token is the given tag."""
    outputs = []
    for i, tag_ids in enumerate(tag_ids_per_feature):
        logits = np.zeros((features.lengths[i], num_labels), dtype=np.float32)
        for position, tag in zip(features.info[i], tag_ids, strict=False):
            logits[position, tag] = high
        outputs.append({"logits": logits})
    return outputs


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------- tags
def test_iob1_becomes_iob2_and_iob2_stays():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG", "I-MISC", "O", "B-PER"]
    assert tagging.to_iob2(iob1) == [
        "B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG", "B-MISC", "O", "B-PER",
    ]  # fmt: skip
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG"]
    assert tagging.to_iob2(iob2) == iob2


def test_entity_spans_follow_conlleval_chunks():
    tags = ["I-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "I-ORG", "O", "I-MISC"]
    assert tagging.entity_spans(tags) == [
        ("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 6), ("ORG", 6, 7), ("MISC", 8, 9),
    ]  # fmt: skip
    assert tagging.entity_spans(["O", "O"]) == []
    assert tagging.entity_spans(["B-PER"]) == [("PER", 0, 1)]


# --------------------------------------------------------------------------------------------- reader
def test_reads_conll2003_as_published(conll_dir, dev):
    train = tagging.read_conll(conll_dir / "eng.train")
    # SOURCE.md's counts (Tjong Kim Sang & De Meulder 2003, Table 2): -DOCSTART- lines are not sentences.
    for data, sentences, words, per_type in (
        (train, 14041, 203621, {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}),
        (dev, 3250, 51362, {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842}),
    ):
        assert len(data) == sentences
        assert sum(len(s.words) for s in data) == words
        counts = {}
        for s in data:
            assert s.tags is not None and len(s.tags) == len(s.words)
            assert tagging.DOCSTART not in s.words
            for kind, _, _ in tagging.entity_spans(s.tags):
                counts[kind] = counts.get(kind, 0) + 1
            # IOB2: every entity starts with B-.
            for prev, tag in zip(("O", *s.tags), s.tags, strict=False):
                if tag.startswith("I-"):
                    assert prev[2:] == tag[2:], s
        assert counts == per_type
    assert tagging.label_names(train) == CONLL_LABELS
    first = train[0]
    assert first.tags is not None
    assert first.words[:3] == ("EU", "rejects", "German")
    assert first.tags[:3] == ("B-ORG", "O", "B-MISC")
    assert first.line == 3  # line 1 is -DOCSTART-, line 2 blank
    assert first.text == " ".join(first.words)
    assert all(first.text[a : a + len(w)] == w for a, w in zip(first.starts, first.words, strict=True))
    assert len(tagging.read_examples(conll_dir / "eng.testa", limit=7)) == 7


# ------------------------------------------------------------------------------------------- features
def test_only_the_first_sub_token_of_each_word_is_labelled(tokenizer, dev):
    examples = dev.first(60)
    features = tagging.encode(tokenizer, examples, max_length=512)
    index = {name: i for i, name in enumerate(CONLL_LABELS)}
    several = 0
    for i, sentence in enumerate(examples):
        ids = features.inputs["input_ids"][i]
        labels = features.inputs["labels"][i]
        firsts = features.info[i]
        # Word by word equals the whole text: the features are what the model sees for the sentence's text.
        assert ids.tolist() == tokenizer.encode(sentence.text, max_length=None)
        assert len(firsts) == len(sentence.words)
        assert labels[0] == IGNORE_INDEX and labels[-1] == IGNORE_INDEX  # <s>, </s>
        assert np.flatnonzero(labels != IGNORE_INDEX).tolist() == firsts.tolist()
        assert labels[firsts].tolist() == [index[t] for t in sentence.tags]
        bounds = [*firsts.tolist(), len(ids) - 1]
        for k, word in enumerate(sentence.words):
            piece = tokenizer.id_to_token(int(ids[bounds[k]]))
            assert piece.startswith("Ġ") == (k > 0), (word, piece)  # a later word begins with its space
            assert tokenizer.decode(ids[bounds[k] : bounds[k + 1]].tolist()) == (" " if k else "") + word
            several += bounds[k + 1] - bounds[k] > 1
    assert several > 100  # many words are split into several sub-tokens

    batch = tagging.collate(tokenizer, features, [0, 1, 2])
    width = max(len(features.inputs["input_ids"][r]) for r in (0, 1, 2))
    assert batch["input_ids"].shape == batch["labels"].shape == (3, width)
    assert "attention_mask" in batch
    padded = batch["attention_mask"] == 0
    assert (batch["labels"][padded] == IGNORE_INDEX).all()
    same = tagging.collate(tokenizer, features, [0])
    assert "attention_mask" not in same  # nothing padded: no mask (flash-eligible attention)


def test_a_cut_sentence_tags_its_uncovered_words_o(tokenizer):
    examples = tagging.make_examples(["Alice Smith met Bob Jones in Paris and London yesterday ."])
    features = tagging.encode(tokenizer, examples, max_length=8)
    assert features.lengths[0] == 8
    covered = len(features.info[0])
    assert 0 < covered < len(examples[0].words)
    labels = CONLL_LABELS
    every_word_per = [[labels.index("B-PER")] * covered]
    (prediction,) = tagging.postprocess(
        one_hot_outputs(features, every_word_per, num_labels=len(labels)), features, examples, task_data()
    )
    assert prediction["tags"] == ["B-PER"] * covered + ["O"] * (len(examples[0].words) - covered)


# ---------------------------------------------------------------------------------------- predictions
def test_entities_carry_character_offsets_into_the_original_text(tokenizer):
    text = "  Angela  Merkel visited New York City\ton Monday .  "
    examples = tagging.make_examples([text])
    assert examples[0].words == ("Angela", "Merkel", "visited", "New", "York", "City", "on", "Monday", ".")
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC", "O", "I-MISC", "O"]
    features = tagging.encode(tokenizer, examples, max_length=64)
    labels = CONLL_LABELS
    logits = np.zeros((features.lengths[0], len(labels)), dtype=np.float32)
    strengths = [1.0, 2.0, 3.0, 0.5, 1.5, 2.5, 3.5, 4.0, 0.2]
    for position, tag, strength in zip(features.info[0], tags, strengths, strict=True):
        logits[position, labels.index(tag)] = strength
    (prediction,) = tagging.postprocess([{"logits": logits}], features, examples, task_data())

    def prob(strength):  # softmax of one logit `strength` among nine, the others 0
        return np.exp(strength) / (np.exp(strength) + len(labels) - 1)

    assert prediction["tags"] == tags
    entities = prediction["entities"]
    assert [(e["entity"], e["text"], e["start"], e["end"]) for e in entities] == [
        ("PER", "Angela  Merkel", 2, 16),
        ("LOC", "New York City", 25, 38),
        ("MISC", "Monday", 42, 48),  # I-MISC after O starts an entity (conlleval)
    ]
    for e in entities:
        assert text[e["start"] : e["end"]] == e["text"]
    assert entities[0]["score"] == pytest.approx((prob(1.0) + prob(2.0)) / 2, abs=1e-6)
    assert entities[1]["score"] == pytest.approx((prob(0.5) + prob(1.5) + prob(2.5)) / 3, abs=1e-6)
    assert entities[2]["score"] == pytest.approx(prob(4.0), abs=1e-6)

    same = tagging.agreement([prediction], [prediction])
    assert same == {"tag_agreement": 1.0, "entity_agreement": 1.0}
    moved = {"tags": ["O", *tags[1:]], "entities": entities[1:]}
    assert tagging.agreement([prediction], [moved]) == {
        "tag_agreement": pytest.approx(8 / 9),
        "entity_agreement": 0.0,
    }


def test_sample_examples_run_through_a_random_tagger(tokenizer):
    from rtoolkit.tasks.common import run_model

    config = RobertaConfig.tiny(num_labels=len(CONLL_LABELS), id2label=dict(enumerate(CONLL_LABELS)))
    model = RobertaForTokenClassification(config)
    examples = tagging.sample_examples()
    features = tagging.encode(tokenizer, examples, max_length=64)
    loss, outputs = run_model(model, tagging, tokenizer, features, batch_size=2)
    assert loss is None
    data = task_data(tagging.labels_from_config(model.config))
    predictions = tagging.postprocess(outputs, features, examples, data)
    assert len(predictions) == len(examples)
    for sentence, p in zip(examples, predictions, strict=True):
        assert len(p["tags"]) == len(sentence.words) and set(p["tags"]) <= set(CONLL_LABELS)
        for e in p["entities"]:
            assert sentence.text[e["start"] : e["end"]] == e["text"] and 0 < e["score"] <= 1


# --------------------------------------------------------------------------------------------- metric
def perturbed(tags: tuple[str, ...], sentence_index: int, counter: list[int]) -> list[str]:
    """Gold tags with systematic mistakes: some entities dropped, some shifted one word right, some relabelled,
    and a stray I-MISC after O in some sentences."""
    out = list(tags)
    for kind, first, end in tagging.entity_spans(tags):
        counter[0] += 1
        n = counter[0]
        if n % 4 == 0:  # drop
            out[first:end] = ["O"] * (end - first)
        elif n % 5 == 0 and end < len(out) and out[end] == "O":  # shift right by one word
            out[first : end + 1] = ["O", f"B-{kind}", *[f"I-{kind}"] * (end - first - 1)]
        elif n % 7 == 0:  # relabel
            other = "ORG" if kind != "ORG" else "LOC"
            out[first:end] = [f"B-{other}", *[f"I-{other}"] * (end - first - 1)]
    if sentence_index % 6 == 0 and "O" in out:
        out[out.index("O")] = "I-MISC"
    return out


def test_entity_scores_equal_seqeval(dev):
    seqeval = pytest.importorskip("seqeval.metrics")
    examples = dev.first(800)
    gold = [list(s.tags) for s in examples]
    counter = [0]
    predicted = [perturbed(s.tags, i, counter) for i, s in enumerate(examples)]
    ours = tagging.entity_scores(gold, predicted)
    expected = {
        "precision": seqeval.precision_score(gold, predicted),
        "recall": seqeval.recall_score(gold, predicted),
        "f1": seqeval.f1_score(gold, predicted),
        "accuracy": seqeval.accuracy_score(gold, predicted),
    }
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name
    p, r, f = ours["precision"], ours["recall"], ours["f1"]
    assert min(p, r, f) > 0.5 and max(p, r, f) < 0.95
    assert len({round(p, 6), round(r, 6), round(f, 6)}) == 3
    # score() reads the tags of the family's predictions.
    predictions = [{"tags": t, "entities": []} for t in predicted]
    assert tagging.score(predictions, examples, task_data()) == ours
    assert tagging.entity_scores(gold, gold) == {"f1": 1.0, "precision": 1.0, "recall": 1.0, "accuracy": 1.0}


# ------------------------------------------------------------------------------------------ bad input
def test_bad_files_name_the_file_and_line(tmp_path):
    empty = write(tmp_path / "empty.conll", "")
    with pytest.raises(DataError, match=r"empty\.conll: no sentences"):
        tagging.read_conll(empty)
    blank = write(tmp_path / "blank.conll", "-DOCSTART- -X- O O\n\n\n")
    with pytest.raises(DataError, match=r"blank\.conll: no sentences"):
        tagging.read_conll(blank)
    short = write(tmp_path / "short.conll", "EU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-MISC\n")
    with pytest.raises(DataError, match=r"short\.conll:3: 3 column\(s\), but line 1 has 4"):
        tagging.read_conll(short)
    lone = write(tmp_path / "lone.conll", "EU\nrejects O\n")
    with pytest.raises(DataError, match=r"lone\.conll:1: one column"):
        tagging.read_conll(lone)
    bad_tag = write(tmp_path / "bad_tag.conll", "Alice PERSON\n")
    with pytest.raises(DataError, match=r"bad_tag\.conll:1: tag 'PERSON' is not a BIO tag"):
        tagging.read_conll(bad_tag)
    unlabelled = write(tmp_path / "test.conll", "Alice\nsings\n\nBob\n")
    assert [s.words for s in tagging.read_conll(unlabelled, require_tags=False)] == [
        ("Alice", "sings"),
        ("Bob",),
    ]
    assert tagging.read_conll(unlabelled, require_tags=False)[0].tags is None
    with pytest.raises(DataError, match="file not found"):
        tagging.read_conll(tmp_path / "missing.conll")


def test_unknown_tag_in_validation_names_file_and_line(tmp_path, encoder_dir):
    train = write(tmp_path / "train.txt", "Alice B-PER\nsings O\n\nin O\nParis B-LOC\n")
    valid = write(tmp_path / "valid.txt", "Bob B-PER\n\nAcme I-ORG\nsells O\n")
    config = FinetuneConfig(
        model=encoder_dir, family="token-classification", train_file=train, validation_file=valid,
        out=tmp_path / "run",
    )  # fmt: skip
    with pytest.raises(
        DataError, match=r"valid\.txt:3: tag 'I-ORG' \(IOB2 B-ORG\) was not seen in .*train\.txt"
    ):
        tagging.load_data(config)
    # Both tags of a type seen in training are known, even one training never shows (I-LOC here).
    write(valid, "New I-LOC\nYork I-LOC\n")
    data = tagging.load_data(config)
    assert data.labels == ("O", "B-LOC", "B-PER", "I-LOC", "I-PER")
    assert data.evals["dev"][0].tags == ("B-LOC", "I-LOC")


def test_make_examples_refuses_empty_texts():
    with pytest.raises(DataError, match=r"texts\[1\] is empty"):
        tagging.make_examples(["Alice sings", ""])
    with pytest.raises(DataError, match=r"texts\[0\] is blank"):
        tagging.make_examples([" \t\n"])
    with pytest.raises(DataError, match="no texts"):
        tagging.make_examples([])


# ------------------------------------------------------------------------------------------ end to end
def test_finetune_conll2003_and_evaluate_best(tmp_path, encoder_dir, conll_dir):
    assert tasks.task_family("conll2003") is tagging
    out = tmp_path / "ner"
    config = FinetuneConfig(
        model=encoder_dir, task="conll2003", data_dir=conll_dir, out=out, lr=1e-3, batch_size=8, max_steps=6,
        max_train_samples=48, max_eval_samples=40, eval_every=2, max_length=128, progress=False,
    )  # fmt: skip
    assert config.family == "token-classification"
    results = finetune(config)
    assert results["main_metric"] == "dev/f1"
    best = results["best"]
    saved = json.loads((out / "best" / "config.json").read_text(encoding="utf-8"))
    assert saved["architectures"] == ["RobertaForTokenClassification"]
    assert [saved["id2label"][str(i)] for i in range(len(CONLL_LABELS))] == list(CONLL_LABELS)
    # best/ (an early step) predicts entities, some right: the f1 it is checked against is not a trivial 0.
    assert best["dev/f1"] > 0 and best["dev/precision"] != best["dev/recall"], best
    # ... and evaluating best/ afresh gives the numbers recorded for it.
    again = evaluate_model(out / "best", task="conll2003", data_dir=conll_dir, max_samples=40, max_length=128)
    assert again["dev/examples"] == 40
    for name in ("f1", "precision", "recall", "accuracy", "loss"):
        assert again[f"dev/{name}"] == pytest.approx(best[f"dev/{name}"], abs=1e-6), name

    # Continued finetuning keeps the trained head for the same labels; other labels get a new one.
    trained = load_file(str(out / "best" / "model.safetensors"))["classifier.weight"]
    kept = tagging.build_model(out / "best", CONLL_LABELS)
    assert torch.equal(kept.classifier.weight, trained)
    fresh = tagging.build_model(out / "best", ("O", "B-X", "I-X"))
    assert fresh.classifier.weight.shape == (3, trained.shape[1])


def test_finetune_custom_files_and_write_predictions(tmp_path, encoder_dir, dev):
    def conll(sentences):  # IOB2, two columns: word and tag
        return "".join(
            "".join(f"{w} {t}\n" for w, t in zip(s.words, s.tags, strict=True)) + "\n" for s in sentences
        )

    train = write(tmp_path / "train.txt", conll(dev.sentences[:40]))
    valid = write(tmp_path / "valid.txt", conll(dev.sentences[40:60]))
    test = write(
        tmp_path / "test.txt",
        "".join("".join(f"{w}\n" for w in s.words) + "\n" for s in dev.sentences[60:65]),
    )
    out = tmp_path / "custom"
    config = FinetuneConfig(
        model=encoder_dir, family="token-classification", train_file=train, validation_file=valid,
        test_file=test, out=out, lr=3e-3, batch_size=8, max_steps=4, max_length=128, predict=True, progress=False,
    )  # fmt: skip
    results = finetune(config)
    (written,) = results["predictions"]
    lines = Path(written).read_text(encoding="utf-8").split("\n\n")
    assert [len(block.splitlines()) for block in lines if block.strip()] == [
        len(s.words) for s in dev.sentences[60:65]
    ]
    first = lines[0].splitlines()[0].split()
    assert first[0] == dev[60].words[0] and first[1] in CONLL_LABELS and len(first) == 2
    again = evaluate_model(out / "best", validation_file=valid, max_length=128)
    assert again["dev/f1"] == pytest.approx(results["best"]["dev/f1"], abs=1e-6)
    assert again["dev/loss"] == pytest.approx(results["best"]["dev/loss"], abs=1e-6)

    # Gold and predicted columns for labelled sentences (conlleval's input).
    data = task_data()
    path = tagging.write_predictions(
        [{"tags": ["O"] * len(s.words), "entities": []} for s in dev[:2]], dev.first(2), data, "dev", tmp_path
    )
    assert path.name == "dev_predictions.conll"
    assert (
        path.read_text(encoding="utf-8").splitlines()[0]
        == f"{dev[0].words[0]} {dev[0].tags and dev[0].tags[0]} O"
    )


def test_evaluation_data_reads_the_named_task_in_model_labels(conll_dir):
    config = RobertaConfig.tiny(num_labels=len(CONLL_LABELS), id2label=dict(enumerate(CONLL_LABELS)))
    model = RobertaForTokenClassification(config)

    def request(split: str, *, task: str | None = "conll2003", validation_file: Path | None = None):
        return EvaluationRequest(
            Path("m"), task, conll_dir, split, validation_file, "text", None, "label", None, max_samples=5
        )

    data = tagging.evaluation_data(model, request("dev"))
    assert list(data.evals) == ["dev"] and len(data.evals["dev"]) == 5 and data.labels == CONLL_LABELS
    if not (conll_dir / "eng.testb").exists():  # the shared folder holds no test file
        with pytest.raises(DataError, match="no eng.testb"):
            tagging.evaluation_data(model, request("test"))
    custom = tagging.evaluation_data(
        model, request("dev", task=None, validation_file=conll_dir / "eng.testa")
    )
    assert [s.words for s in custom.evals["dev"]] == [s.words for s in data.evals["dev"]]
    generic = RobertaForTokenClassification(RobertaConfig.tiny(num_labels=3))
    with pytest.raises(DataError, match="not BIO tags"):
        tagging.evaluation_data(generic, request("dev"))
