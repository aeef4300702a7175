"""GLUE readers on the real files in ../shared/data and on small files in the official formats of the other
tasks; custom CSV / TSV / JSONL readers and their errors."""

import json
from collections import Counter

import pytest

from rtoolkit.data.glue import (
    GLUE_TASKS,
    DataError,
    LabelSpace,
    encode_rows,
    get_task,
    infer_label_space,
    read_glue,
    read_rows,
    write_glue_submission,
    write_predictions,
)
from tests.conftest import shared_data

REAL = [(t, s) for t in ("sst2", "rte", "stsb") for s in ("train", "dev", "test")]


def data_lines(path) -> int:
    """Non-blank lines after the header, counted without any CSV parsing."""
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip()) - 1


@pytest.mark.parametrize(("task", "split"), REAL)
def test_reads_every_real_file_without_losing_a_row(task, split):
    folder = shared_data(task)
    data = read_glue(task, folder, split)
    assert len(data) == data_lines(folder / f"{split}.tsv")
    assert all(data.texts)
    if GLUE_TASKS[task].text_columns[1:]:
        assert data.pairs is not None and all(data.pairs)
    if split == "test":
        assert data.labels is None
        assert data.ids == [str(i) for i in range(len(data))]  # the files' own index column
    else:
        assert data.labels is not None and len(data.labels) == len(data)


def test_real_label_counts_and_bare_quotes():
    sst2 = read_glue("sst2", shared_data("sst2"), "train")
    assert Counter(sst2.labels) == {0: 29780, 1: 37569}
    rte = read_glue("rte", shared_data("rte"), "dev")
    names = GLUE_TASKS["rte"].label_names
    assert Counter(names[i] for i in rte.labels) == {"entailment": 146, "not_entailment": 131}
    rte_train = read_glue("rte", shared_data("rte"), "train")
    with open(shared_data("rte", "train.tsv"), encoding="utf-8") as f:
        quotes_in_file = f.read().count('"')
    # Bare quotes stay inside the sentences (quoting disabled), none swallowed as CSV quoting.
    assert quotes_in_file > 0
    assert sum(t.count('"') for t in rte_train.texts + rte_train.pairs) == quotes_in_file
    stsb = read_glue("stsb", shared_data("stsb"), "dev")
    assert len(stsb) == 1500 and min(stsb.labels) == 0.0 and max(stsb.labels) == 5.0
    assert stsb.texts[0] == "A man with a hard hat is dancing."
    assert stsb.pairs[0] == "A man wearing a hard hat is dancing."


def test_task_folder_or_glue_root(tmp_path):
    root = tmp_path / "glue_data" / "SST-2"
    root.mkdir(parents=True)
    (root / "dev.tsv").write_text('sentence\tlabel\nit \'s "fine" \t1\nbad \t0\n', encoding="utf-8")
    data = read_glue("SST-2", tmp_path / "glue_data", "dev")
    assert data.texts == ['it \'s "fine"', "bad"] and data.labels == [1, 0]
    with pytest.raises(FileNotFoundError, match="train.tsv"):
        read_glue("sst2", tmp_path / "glue_data", "train")
    with pytest.raises(DataError, match="unknown GLUE task"):
        get_task("squad")


# Small files in the official layouts of the tasks not in ../shared/data.
OFFICIAL = {
    "cola": (
        "dev.tsv",
        'gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\nbc01\t0\t*\tHe said "go" .\n',
        ["The sailors rode the breeze clear of the rocks.", 'He said "go" .'],
        None,
        [1, 0],
    ),
    "mrpc": (
        "dev.tsv",
        'Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said "yes".\tHe agreed.\n0\t3\t4\tA b.\tC d.\n',
        ['He said "yes".', "A b."],
        ["He agreed.", "C d."],
        [1, 0],
    ),
    "qqp": (
        "dev.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t1\t2\tWhy?\tHow?\t0\n8\t3\t4\tA?\tA?\t1\n",
        ["Why?", "A?"],
        ["How?", "A?"],
        [0, 1],
    ),
    "qnli": (
        "dev.tsv",
        "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tentailment\n1\tWhen?\tBlue.\tnot_entailment\n",
        ["Who?", "When?"],
        ["Him.", "Blue."],
        [0, 1],
    ),
    "wnli": (
        "dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\tThe cat sat.\tIt sat.\t1\n",
        ["The cat sat."],
        ["It sat."],
        [1],
    ),
}


@pytest.mark.parametrize("task", sorted(OFFICIAL))
def test_official_layouts(tmp_path, task):
    name, content, texts, pairs, labels = OFFICIAL[task]
    (tmp_path / name).write_text(content, encoding="utf-8")
    data = read_glue(task, tmp_path, "dev")
    assert data.texts == texts
    assert data.pairs == pairs
    assert data.labels == labels


def test_cola_test_file_has_a_header(tmp_path):
    (tmp_path / "test.tsv").write_text("index\tsentence\n0\tBill whistled.\n1\tHe left .\n", encoding="utf-8")
    data = read_glue("cola", tmp_path, "test")
    assert data.texts == ["Bill whistled.", "He left ."] and data.labels is None and data.ids == ["0", "1"]


def test_mnli_matched_and_mismatched(tmp_path):
    header = (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
    )
    row = (
        "0\t1\t1e\tfiction\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tThe {} one.\tA man.\tneutral\tneutral\t"
        "neutral\tentailment\tneutral\t{}\n"
    )
    (tmp_path / "dev_matched.tsv").write_text(header + row.format("m", "neutral"), encoding="utf-8")
    (tmp_path / "dev_mismatched.tsv").write_text(header + row.format("mm", "contradiction"), encoding="utf-8")
    task = get_task("mnli")
    assert task.eval_splits == ("dev_matched", "dev_mismatched")
    matched = read_glue(task, tmp_path, "dev")  # "dev" means the first eval split
    assert matched.texts == ["The m one."] and matched.labels == [1]
    assert read_glue(task, tmp_path, "dev_mismatched").labels == [2]
    with pytest.raises(DataError, match="no split 'validation'"):
        read_glue(task, tmp_path, "validation")


def test_glue_errors_name_file_and_line(tmp_path):
    (tmp_path / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: malformed row: expected 4 fields .* got 3"):
        read_glue("rte", tmp_path, "dev")
    (tmp_path / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match=r"dev.tsv:2: label 'maybe' is not a rte label"):
        read_glue("rte", tmp_path, "dev")
    (tmp_path / "dev.tsv").write_text("index\tsentence1\tlabel\n0\ta\tentailment\n")
    with pytest.raises(DataError, match=r"no column\(s\) \['sentence2'\]"):
        read_glue("rte", tmp_path, "dev")


def test_submission_format(tmp_path):
    out = write_glue_submission("rte", "test", ["0", "1"], [1, 0], tmp_path)
    assert out.name == "RTE.tsv"
    assert out.read_text() == "index\tprediction\n0\tnot_entailment\n1\tentailment\n"
    out = write_glue_submission("stsb", "test", ["0", "1"], [5.7, 2.25], tmp_path)
    assert out.read_text() == "index\tprediction\n0\t5.000\n1\t2.250\n"  # clipped to the 0-5 scale
    assert write_glue_submission("mnli", "test_mismatched", ["3"], [2], tmp_path).name == "MNLI-mm.tsv"


def test_presets_follow_the_fairseq_recipe():
    assert {
        t: (GLUE_TASKS[t].lr, GLUE_TASKS[t].batch_size) for t in ("rte", "stsb", "sst2", "mrpc", "mnli")
    } == {
        "rte": (2e-5, 16),
        "stsb": (2e-5, 16),
        "sst2": (1e-5, 32),
        "mrpc": (1e-5, 16),
        "mnli": (1e-5, 32),
    }
    assert all(t.epochs == 10 and t.warmup_ratio == 0.06 for t in GLUE_TASKS.values())
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["mnli"].num_labels == 3
    assert GLUE_TASKS["cola"].main_metric == "mcc" and GLUE_TASKS["mrpc"].main_metric == "f1"


# --------------------------------------------------------------------------------------------- custom data
def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_custom_csv_tsv_jsonl_agree(tmp_path):
    csv_file = write(tmp_path / "a.csv", 'review,label\n"great, really",pos\nawful,neg\n"said ""meh""",neu\n')
    tsv_file = write(tmp_path / "a.tsv", 'review\tlabel\ngreat, really\tpos\nawful\tneg\nsaid "meh"\tneu\n')
    jsonl_file = write(
        tmp_path / "a.jsonl",
        "\n".join(
            json.dumps({"review": t, "label": y})
            for t, y in [("great, really", "pos"), ("awful", "neg"), ('said "meh"', "neu")]
        )
        + "\n\n",
    )
    for path in (csv_file, tsv_file, jsonl_file):
        rows = read_rows(path, text_column="review", label_column="label")
        assert rows.texts == ["great, really", "awful", 'said "meh"'], path
        space = infer_label_space(rows)
        assert space.names == ("neg", "neu", "pos")
        assert encode_rows(rows, space).labels == [2, 0, 1]


def test_integer_labels_sort_numerically_and_pairs(tmp_path):
    path = write(
        tmp_path / "t.jsonl",
        "".join(json.dumps({"q": f"q{i}", "a": f"a{i}", "y": y}) + "\n" for i, y in enumerate([10, 2, 2, 1])),
    )
    rows = read_rows(path, text_column="q", text_pair_column="a", label_column="y")
    assert rows.pairs == ["a0", "a1", "a2", "a3"]
    space = infer_label_space(rows)
    assert space.names == ("1", "2", "10") and not space.is_regression
    assert encode_rows(rows, space).labels == [2, 1, 1, 0]
    assert space.id2label == {0: "1", 1: "2", 2: "10"}


def test_float_labels_mean_regression(tmp_path):
    path = write(tmp_path / "r.csv", "text,score\na,0.5\nb,3\nc,4.25\n")
    rows = read_rows(path, text_column="text", label_column="score")
    space = infer_label_space(rows)
    assert space.is_regression and space.num_labels == 1
    assert encode_rows(rows, space).labels == [0.5, 3.0, 4.25]
    ints = read_rows(
        write(tmp_path / "i.csv", "text,score\na,1\nb,3\n"), text_column="text", label_column="score"
    )
    assert not infer_label_space(ints).is_regression
    assert infer_label_space(ints, regression=True).is_regression  # asked for


def test_unlabelled_file_for_predictions(tmp_path):
    path = write(tmp_path / "u.tsv", "text\nfirst\nsecond\n")
    rows = read_rows(path, text_column="text", label_column="label", require_label=False)
    data = encode_rows(rows, LabelSpace(("neg", "pos")))
    assert data.labels is None and data.ids == ["0", "1"]
    out = write_predictions(tmp_path / "p.tsv", data, [1, 0], LabelSpace(("neg", "pos")))
    assert out.read_text() == "index\tprediction\n0\tpos\n1\tneg\n"


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "message"),
    [
        (
            "missing.csv",
            "sentence,label\nhi,1\n",
            {},
            r"missing column 'text'; the file has columns \['sentence', 'label'\]",
        ),
        ("nolabel.csv", "text,y\nhi,1\n", {}, r"missing column 'label'"),
        ("nopair.jsonl", '{"text": "a", "label": 1}\n', {"text_pair_column": "b"}, r"missing column 'b'"),
        ("empty.csv", "", {}, r"empty.csv: file is empty"),
        ("blank.jsonl", "\n\n", {}, r"blank.jsonl: file is empty"),
        ("header.tsv", "text\tlabel\n", {}, r"header.tsv: has a header \(text, label\) but no data rows"),
        ("fields.csv", "text,label\na,1\nb,1,extra\n", {}, r"fields.csv:3: malformed row: expected 2 fields"),
        (
            "fields.tsv",
            "text\tlabel\na\t1\n\nb\n",
            {},
            r"fields.tsv:4: malformed row: expected 2 fields .* got 1",
        ),
        (
            "bad.jsonl",
            '{"text": "a", "label": 1}\n{"text": "b", label: 1}\n',
            {},
            r"bad.jsonl:2: malformed row: invalid JSON",
        ),
        (
            "list.jsonl",
            '{"text": "a", "label": 1}\n[1, 2]\n',
            {},
            r"list.jsonl:2: malformed row: expected a JSON object",
        ),
        (
            "key.jsonl",
            '{"text": "a", "label": 1}\n{"txt": "b", "label": 0}\n',
            {},
            r"key.jsonl:2: malformed row: missing key\(s\) \['text'\]",
        ),
        (
            "null.jsonl",
            '{"text": "a", "label": 1}\n{"text": null, "label": 0}\n',
            {},
            r"null.jsonl:2: column 'text' is null",
        ),
        ("nolab.csv", "text,label\na,1\nb,\n", {}, r"nolab.csv:3: empty label in column 'label'"),
        ("quote.csv", 'text,label\n"a" b,1\n', {}, r"quote.csv:2: malformed row"),
        ("suffix.txt", "text,label\na,1\n", {}, r"cannot tell the format"),
    ],
)
def test_custom_data_errors(tmp_path, name, content, kwargs, message):
    path = write(tmp_path / name, content)
    with pytest.raises(DataError, match=message):
        read_rows(path, text_column="text", label_column="label", **kwargs)


def test_validation_label_unseen_in_training(tmp_path):
    train = read_rows(write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\n"), text_column="text")
    valid = read_rows(write(tmp_path / "valid.csv", "text,label\nc,pos\nd,neutral\n"), text_column="text")
    with pytest.raises(
        DataError,
        match=r"valid.csv:3: label 'neutral' never appears in the training data "
        r"\(known labels: neg, pos\)",
    ):
        encode_rows(valid, infer_label_space(train))


def test_label_space_errors(tmp_path):
    one = read_rows(write(tmp_path / "one.csv", "text,label\na,pos\nb,pos\n"), text_column="text")
    with pytest.raises(DataError, match="classification needs at least two labels"):
        infer_label_space(one)
    words = read_rows(write(tmp_path / "w.csv", "text,label\na,0.5\nb,high\n"), text_column="text")
    with pytest.raises(DataError, match=r"w.csv:3: label 'high' in column 'label' is not a number"):
        infer_label_space(words)
    with pytest.raises(FileNotFoundError, match="data file not found"):
        read_rows(tmp_path / "nothing.csv", text_column="text")
