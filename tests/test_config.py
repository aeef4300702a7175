import json
import re

import pytest

from rtoolkit.config import ConfigError, RobertaConfig


def test_presets_match_fairseq_sizes():
    base, large = RobertaConfig.base(), RobertaConfig.large()
    assert (base.num_hidden_layers, base.hidden_size, base.num_attention_heads, base.intermediate_size) == (
        12,
        768,
        12,
        3072,
    )
    assert (
        large.num_hidden_layers,
        large.hidden_size,
        large.num_attention_heads,
        large.intermediate_size,
    ) == (24, 1024, 16, 4096)
    for c in (base, large):
        assert c.vocab_size == 50265 and c.max_position_embeddings == 514 and c.max_tokens == 512
        assert c.layer_norm_eps == 1e-5 and c.type_vocab_size == 1 and c.pad_token_id == 1
    assert RobertaConfig.preset("tiny", hidden_size=32).hidden_size == 32


def test_accepts_transformers_config_fields():
    transformers = pytest.importorskip("transformers")
    hf = transformers.RobertaConfig(
        vocab_size=321,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=66,
        num_labels=3,
    )
    ours = RobertaConfig.from_dict(hf.to_dict())
    assert (ours.vocab_size, ours.hidden_size, ours.num_hidden_layers, ours.num_labels) == (321, 48, 3, 3)
    assert ours.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    back = transformers.RobertaConfig.from_dict(ours.to_dict())
    assert back.hidden_size == 48 and back.model_type == "roberta" and back.num_labels == 3


def test_json_round_trip(tmp_path):
    config = RobertaConfig.tiny(
        id2label={0: "neg", 1: "pos"}, architectures=["RobertaForSequenceClassification"]
    )
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "roberta" and data["id2label"] == {"0": "neg", "1": "pos"}
    loaded = RobertaConfig.from_pretrained(tmp_path)
    assert loaded == config
    assert loaded.label2id == {"neg": 0, "pos": 1}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 100, "num_attention_heads": 3}, "divisible by num_attention_heads"),
        ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer"),
        ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob must be in [0, 1)"),
        ({"hidden_act": "swishy"}, "hidden_act 'swishy' is not supported"),
        ({"max_position_embeddings": 2}, "max_position_embeddings (2) must be at least pad_token_id + 2"),
        ({"pad_token_id": 5000}, "pad_token_id (5000) must be a token id below vocab_size"),
        ({"problem_type": "ranking"}, "problem_type must be one of"),
    ],
)
def test_invalid_values_raise_actionable_errors(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        RobertaConfig.tiny(**overrides)


def test_bad_json_file_names_the_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"hidden_size": 64,\n "oops"}')
    with pytest.raises(ConfigError, match=r"config.json: invalid JSON at line 2"):
        RobertaConfig.from_json_file(bad)
    bad.write_text('{"model_type": "gpt2"}')
    with pytest.raises(ConfigError, match="expected 'roberta'"):
        RobertaConfig.from_json_file(bad)
    with pytest.raises(ConfigError, match="unknown model preset 'huge'"):
        RobertaConfig.preset("huge")
