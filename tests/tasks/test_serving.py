"""Serving the task families: `Predictor.answer` / `choose` / `tag` on finetuned folders and on their ONNX exports,
`rtoolkit export` of each head validated on the real data, `rtoolkit predict answer|choose|tag`, and
`rtoolkit finetune` / `evaluate` of a family from the command line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rtoolkit import Predictor, tasks
from rtoolkit.cli import main
from rtoolkit.tasks import choice, qa, tagging
from rtoolkit.tasks.common import TaskData
from rtoolkit.train.evaluation import predict_examples
from tests.conftest import shared_data

# The real file each family's export is validated on (--eval-data).
EVAL_FILES = {
    "question-answering": ("squad1", "dev-v1.1.json"),
    "multiple-choice": ("race", "dev.jsonl.gz"),
    "token-classification": ("conll2003", "eng.testa"),
}
FAR_CONTEXT = " ".join(["The river ran slowly past the mill and the fields."] * 30)


@pytest.fixture(scope="module")
def predictors(family_dirs) -> dict[str, Predictor]:
    return {name: Predictor.from_pretrained(folder) for name, folder in family_dirs.items()}


@pytest.fixture(scope="module")
def squad_examples() -> qa.QADataset:
    return qa.read_squad(shared_data("squad1", "dev-v1.1.json")).first(12)


def _evaluation_path(predictor: Predictor, fam, examples):
    """What `rtoolkit evaluate` decodes for `examples` (rtoolkit.train.evaluation), with no Predictor in between."""
    data = TaskData(None, {}, {}, (), "", labels=fam.labels_from_config(predictor.config))
    model = fam.HEAD.from_pretrained(predictor.source)
    return predict_examples(
        model, fam, predictor.tokenizer, examples, data, max_length=predictor.max_length, batch_size=4
    )


# ------------------------------------------------------------------------------------------- Predictor
def test_answer_gives_context_substrings_at_character_offsets(predictors, squad_examples):
    predictor = predictors["question-answering"]
    assert predictor.tasks == {"answer", "embed"}  # a torch folder embeds too
    questions, contexts = [e.question for e in squad_examples], [e.context for e in squad_examples]
    results = predictor.answer(questions, contexts)
    assert len(results) == len(questions)
    for result, context in zip(results, contexts, strict=True):
        assert set(result) == {"answer", "score", "start", "end"}
        assert result["answer"] == context[result["start"] : result["end"]] and result["answer"].strip()
        assert 0.0 < result["score"] <= 1.0
    # the same answers as evaluation decodes
    expected = _evaluation_path(predictor, qa, squad_examples)
    assert [r["answer"] for r in results] == [qa.top_answer(e) for e in expected]

    top = predictor.answer(questions[0], contexts[0], top_k=3)
    assert len(top) == 3 and top[0] == results[0]
    assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)


def test_answer_reads_a_long_context_in_windows(predictors):
    predictor = predictors["question-answering"]
    context = FAR_CONTEXT + " At the very end the miller, whose name was Thomas Gray, locked the door."
    assert len(predictor.tokenizer.encode(context)) > 3 * predictor.max_length
    result = predictor.answer("What was the miller's name?", context)
    assert result["answer"] == context[result["start"] : result["end"]]
    top = predictor.answer("What was the miller's name?", context, top_k=20)
    assert len({(t["start"], t["end"]) for t in top}) == 20  # candidates from every window, each once


def test_answer_with_a_no_answer_threshold(predictors, family_dirs):
    predictor = predictors["question-answering"]
    question, context = "Who wrote it?", "The letter was written in London in 1890."
    empty = predictor.answer(question, context, null_threshold=-1e9)  # the no-answer score always wins
    assert (empty["answer"], empty["start"], empty["end"]) == ("", 0, 0)
    span, plain = predictor.answer(question, context, null_threshold=1e9), predictor.answer(question, context)
    assert (span["answer"], span["start"], span["end"]) == (plain["answer"], plain["start"], plain["end"])
    assert span["score"] < plain["score"]  # the no-answer candidate shares the probability
    with pytest.raises(ValueError, match="null_threshold must be a finite number"):
        predictor.answer(question, context, null_threshold=float("nan"))
    result = CliRunner().invoke(
        main,
        ["predict", "answer", "--model", str(family_dirs["question-answering"]), "--question", question,
         "--context", context, "--null-threshold", "-1e9"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _json_lines(result.output)[0]["answer"] == ""


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p.answer("", "Some context."), "question"),
        (lambda p: p.answer("Who?", "   "), "context"),
        (lambda p: p.answer(["Who?", "What?"], ["One context."]), r"2 question\(s\) but 1 context\(s\)"),
        (lambda p: p.answer("Who?", "A context.", top_k=0), "top_k must be a positive integer"),
        (lambda p: p.answer(" ".join(["why"] * 400), "A context."), "question"),
        (lambda p: p.tag("Hello"), "cannot do tag"),
    ],
)
def test_bad_answer_calls_say_what_is_wrong(predictors, call, message):
    with pytest.raises(ValueError, match=message):
        call(predictors["question-answering"])


def test_choose_ranks_every_option_with_probabilities(predictors):
    predictor = predictors["multiple-choice"]
    assert predictor.tasks == {"choose", "embed"}  # a torch folder embeds too
    race = choice.read_race(shared_data("race", "dev.jsonl.gz"), limit=6)
    for question in race:
        ranked = predictor.choose(question.passage, question.question, question.options)
        assert sorted(r["index"] for r in ranked) == list(range(len(question.options)))
        assert [r["option"] for r in ranked] == [question.options[r["index"]] for r in ranked]
        assert sum(r["score"] for r in ranked) == pytest.approx(1.0, abs=1e-5)
        assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    expected = _evaluation_path(predictor, choice, race)
    first = race[0]
    ranked = predictor.choose(first.passage, first.question, first.options)
    assert ranked[0]["index"] == expected[0]["label"]
    assert [r["score"] for r in ranked] == pytest.approx(
        sorted(expected[0]["scores"], reverse=True), abs=1e-6
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["only one"], "at least two"),
        ("ab", "list of at least two strings"),
        (["fine", ""], "options"),
        (["fine", 3], "options"),
    ],
)
def test_choose_refuses_a_wrong_option_list(predictors, options, message):
    with pytest.raises(ValueError, match=message):
        predictors["multiple-choice"].choose("A passage.", "A question?", options)


def test_tag_gives_entities_at_character_offsets(predictors):
    predictor = predictors["token-classification"]
    assert predictor.tasks == {"tag", "embed"}  # a torch folder embeds too
    types = {label.split("-", 1)[1] for label in predictor.config.id2label.values() if label != "O"}
    assert types == {"LOC", "MISC", "ORG", "PER"}
    dev = tagging.read_conll(shared_data("conll2003", "eng.testa")).first(40)
    texts = [" ".join(sentence.words) for sentence in dev]
    results = predictor.tag(texts)
    assert len(results) == len(texts) and sum(len(r) for r in results) > 0
    for entities, text in zip(results, texts, strict=True):
        for entity in entities:
            assert set(entity) == {"entity", "text", "start", "end", "score"} and entity["entity"] in types
            assert entity["text"] == text[entity["start"] : entity["end"]]
            assert not entity["text"][0].isspace() and not entity["text"][-1].isspace()
    assert predictor.tag(texts[0]) == results[0]
    with pytest.raises(ValueError, match="empty"):
        predictor.tag(["Fine.", "  "])


def test_tag_over_the_token_limit_is_cut_or_refused(predictors, family_dirs):
    predictor = predictors["token-classification"]
    text = " ".join(["London"] * 300)  # far over the 128-token limit
    entities = predictor.tag(text)  # tagged up to the limit
    assert all(e["end"] <= len(text) for e in entities)
    with pytest.raises(ValueError, match="exceed the 128-token limit"):
        predictor.tag(text, truncation=False)
    result = CliRunner().invoke(
        main, ["predict", "tag", "--model", str(family_dirs["token-classification"]), "--no-truncation", text]
    )
    assert result.exit_code == 1 and "exceed the 128-token limit" in result.output


# ------------------------------------------------------------------------------------------ export + serving
@pytest.mark.parametrize("family", list(EVAL_FILES))
def test_export_validates_every_precision_on_real_examples_and_serves_the_same(tmp_path, family_dirs, family):
    folder = family_dirs[family]
    out = tmp_path / "export"
    eval_file = shared_data(*EVAL_FILES[family])
    result = CliRunner().invoke(
        main,
        ["export", str(folder), "--out", str(out), "--optimize", "--quantize", "int8", "--fp16",
         "--eval-data", str(eval_file)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "export_manifest.json").read_text())
    assert manifest["task"] == family
    files = [a["file"] for a in manifest["artifacts"]]
    assert files == ["model.onnx", "model.optimized.onnx", "model.int8.onnx", "model.fp16.onnx"]
    agreement_key = {
        "question-answering": "answer",
        "multiple-choice": "choice",
        "token-classification": "tag",
    }
    for artifact in manifest["artifacts"]:
        validation = artifact["validation"]
        assert artifact["passed"], validation
        assert validation["inputs"] == str(eval_file) and validation["compared_rows"] >= 48
        key = f"{agreement_key[family]}_agreement"
        assert validation[key] >= validation["criteria"]["min_agreement"]
    assert manifest["artifacts"][0]["validation"]["max_abs_diff"] < 1e-4
    assert f"{agreement_key[family]}_agreement" in result.output  # the summary shows the agreement

    torch_predictor = Predictor.from_pretrained(folder)
    onnx_predictor = Predictor.from_pretrained(out, backend="onnx")
    assert onnx_predictor.tasks < torch_predictor.tasks  # an export serves its one task
    fam = tasks.family(family)
    examples = fam.read_examples(eval_file, limit=8)
    if family == "question-answering":
        args = [[e.question for e in examples], [e.context for e in examples]]
        got, want = onnx_predictor.answer(*args), torch_predictor.answer(*args)
        assert [(g["answer"], g["start"], g["end"]) for g in got] == [
            (w["answer"], w["start"], w["end"]) for w in want
        ]
        assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], abs=1e-4)
    elif family == "multiple-choice":
        for q in examples:
            got = onnx_predictor.choose(q.passage, q.question, q.options)
            want = torch_predictor.choose(q.passage, q.question, q.options)
            assert [g["index"] for g in got] == [w["index"] for w in want]
    else:
        texts = [" ".join(s.words) for s in examples]
        got, want = onnx_predictor.tag(texts), torch_predictor.tag(texts)
        assert [[(e["entity"], e["start"], e["end"]) for e in g] for g in got] == [
            [(e["entity"], e["start"], e["end"]) for e in w] for w in want
        ]


def test_export_refuses_trt_for_a_family_head(tmp_path, family_dirs):
    result = CliRunner().invoke(
        main, ["export", str(family_dirs["question-answering"]), "--out", str(tmp_path / "x"), "--trt"]
    )
    assert result.exit_code != 0
    assert "question-answering export is served with ONNX Runtime" in result.output
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------ CLI predict
def _json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_predict_answer_from_options_and_json_lines(tmp_path, family_dirs, predictors, squad_examples):
    folder = str(family_dirs["question-answering"])
    question, context = squad_examples[0].question, squad_examples[0].context
    result = CliRunner().invoke(
        main, ["predict", "answer", "--model", folder, "--question", question, "--context", context]
    )
    assert result.exit_code == 0, result.output
    (line,) = _json_lines(result.output)
    assert line == {"question": question, **predictors["question-answering"].answer(question, context)}

    records = tmp_path / "questions.jsonl"
    records.write_text(
        "\n".join(json.dumps({"question": q, "context": c}) for q, c in zip(
            [e.question for e in squad_examples][:3], [e.context for e in squad_examples][:3], strict=True)) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    result = CliRunner().invoke(
        main, ["predict", "answer", "--model", folder, "--input", str(records), "--top-k", "2"]
    )
    assert result.exit_code == 0, result.output
    lines = _json_lines(result.output)
    assert [len(line["predictions"]) for line in lines] == [2, 2, 2]
    assert (
        lines[0]["predictions"][0]["answer"]
        == predictors["question-answering"].answer(question, context)["answer"]
    )

    records.write_text('{"question": "Who?", "context": "Tom."}\n{"question": "Who?"}\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["predict", "answer", "--model", folder, "--input", str(records)])
    assert result.exit_code != 0
    assert "line 2: 'context' must be a non-empty string" in result.output
    assert "Traceback" not in result.output


def test_predict_choose_and_tag(family_dirs, predictors):
    options = ["He missed the bus", "He was ill", "The school was closed", "He went to the park"]
    passage, question = "Tom missed the bus, so he walked to school and was late.", "Why was Tom late?"
    args = ["--passage", passage, "--question", question, *[x for o in options for x in ("--option", o)]]
    result = CliRunner().invoke(
        main, ["predict", "choose", "--model", str(family_dirs["multiple-choice"]), *args]
    )
    assert result.exit_code == 0, result.output
    (line,) = _json_lines(result.output)
    ranked = predictors["multiple-choice"].choose(passage, question, options)
    assert [(p["index"], p["option"]) for p in line["predictions"]] == [
        (r["index"], r["option"]) for r in ranked
    ]
    assert [p["score"] for p in line["predictions"]] == pytest.approx([r["score"] for r in ranked], abs=1e-6)
    assert line["choice"] == line["predictions"][0]["option"]

    result = CliRunner().invoke(
        main,
        ["predict", "choose", "--model", str(family_dirs["multiple-choice"]), *args[:4], "--option", "one"],
    )
    assert result.exit_code != 0 and "at least two" in result.output

    text = "Sherlock Holmes met Dr. Watson in London."
    result = CliRunner().invoke(
        main, ["predict", "tag", "--model", str(family_dirs["token-classification"]), text]
    )
    assert result.exit_code == 0, result.output
    (line,) = _json_lines(result.output)
    expected = predictors["token-classification"].tag(text)
    assert line["text"] == text and len(line["entities"]) == len(expected)
    for got, want in zip(line["entities"], expected, strict=True):
        assert got == {**want, "score": pytest.approx(want["score"], abs=1e-6)}


# --------------------------------------------------------------------------------- CLI finetune + evaluate
def test_finetune_and_evaluate_a_family_from_the_command_line(tmp_path, encoder_dir):
    out = tmp_path / "ner"
    data = str(shared_data("conll2003"))
    result = CliRunner().invoke(
        main,
        ["finetune", "--model", str(encoder_dir), "--task", "conll2003", "--data-dir", data, "--out", str(out),
         "--max-steps", "3", "--max-train-samples", "48", "--max-eval-samples", "24", "--max-length", "64",
         "--batch-size", "16", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "best" / "model.safetensors").is_file()
    best = json.loads((out / "eval_results.json").read_text())["best"]
    result = CliRunner().invoke(
        main,
        ["evaluate", "--model", str(out / "best"), "--task", "conll2003", "--data-dir", data, "--max-samples", "24",
         "--max-length", "64", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output[result.output.index("{") :])
    assert scores["dev/f1"] == pytest.approx(best["dev/f1"], abs=1e-9)

    from transformers import AutoModelForTokenClassification

    loaded = AutoModelForTokenClassification.from_pretrained(out / "best")
    assert type(loaded).__name__ == "RobertaForTokenClassification"
    assert loaded.config.id2label == {int(k): v for k, v in json.loads(
        (out / "best" / "config.json").read_text())["id2label"].items()}  # fmt: skip


@pytest.mark.parametrize("family", list(EVAL_FILES))
def test_transformers_loads_the_finetuned_folders_with_equal_outputs(family_dirs, family):
    import torch

    transformers = pytest.importorskip("transformers")
    auto = {
        "question-answering": transformers.AutoModelForQuestionAnswering,
        "multiple-choice": transformers.AutoModelForMultipleChoice,
        "token-classification": transformers.AutoModelForTokenClassification,
    }[family]
    folder = family_dirs[family]
    theirs, info = auto.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    fam = tasks.family(family)
    ours = fam.HEAD.from_pretrained(folder).eval()
    generator = torch.Generator().manual_seed(0)
    shape = (2, 3, 16) if fam.INPUT_RANK == 3 else (2, 16)
    ids = torch.randint(3, 900, shape, generator=generator)
    with torch.no_grad():
        mine, hf = ours(input_ids=ids), theirs.eval()(input_ids=ids)
    for name in fam.OUTPUTS:
        torch.testing.assert_close(getattr(mine, name), getattr(hf, name), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("family", list(EVAL_FILES))
def test_gpu_bf16_finetune_then_cuda_evaluation_and_serving_agree_with_the_cpu(tmp_path, encoder_dir, family):
    import torch

    from rtoolkit.train.finetune import FinetuneConfig, evaluate_model, finetune
    from tests.conftest import FAMILY_RUNS

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    run = {k: v for k, v in FAMILY_RUNS[family].items() if k != "data"}
    data_dir = shared_data(FAMILY_RUNS[family]["data"])
    out = tmp_path / "run"
    results = finetune(
        FinetuneConfig(
            model=encoder_dir, data_dir=data_dir, out=out, lr=2e-3, batch_size=16,
            max_train_samples=16 * run["max_steps"], max_eval_samples=64, precision="bf16", device="cuda",
            progress=False, **run,
        )
    )  # fmt: skip
    assert json.loads((out / "run_config.json").read_text())["precision"] == "bf16"
    options = dict(
        task=run["task"], data_dir=data_dir, max_length=128, stride=run.get("stride"), max_samples=64
    )
    on_gpu = evaluate_model(out / "best", device="cuda", precision="fp32", **options)
    on_cpu = evaluate_model(out / "best", device="cpu", precision="fp32", **options)
    assert on_gpu["dev/loss"] == pytest.approx(on_cpu["dev/loss"], rel=1e-3)
    main = results["main_metric"]
    assert on_gpu[main] == pytest.approx(on_cpu[main], abs=2.0 if family == "question-answering" else 0.02)

    fam = tasks.family(family)
    examples = fam.read_examples(shared_data(*EVAL_FILES[family]), limit=16)
    gpu, cpu = Predictor.from_pretrained(out / "best", device="cuda"), Predictor.from_pretrained(out / "best")
    if family == "question-answering":
        args = [[e.question for e in examples], [e.context for e in examples]]
        same = [g["answer"] == c["answer"] for g, c in zip(gpu.answer(*args), cpu.answer(*args), strict=True)]
    elif family == "multiple-choice":
        same = [
            gpu.choose(q.passage, q.question, q.options)[0]["index"]
            == cpu.choose(q.passage, q.question, q.options)[0]["index"]
            for q in examples
        ]
    else:
        texts = [" ".join(s.words) for s in examples]
        same = [
            [(e["entity"], e["start"], e["end"]) for e in g]
            == [(e["entity"], e["start"], e["end"]) for e in c]
            for g, c in zip(gpu.tag(texts), cpu.tag(texts), strict=True)
        ]
    assert sum(same) >= 0.9 * len(same)
