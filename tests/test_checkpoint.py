"""Model folders: save/load, tied weights stored once, clear errors on bad folders, atomic writes."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from rtoolkit import (
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
    RobertaModel,
    Tokenizer,
)
from rtoolkit.checkpoint import CheckpointError, atomic_directory, load_state_dict, model_summary


@pytest.fixture
def mlm_dir(tmp_path, tiny_config, tokenizer):
    model = RobertaForMaskedLM(tiny_config)
    folder = tmp_path / "mlm"
    model.save_pretrained(folder, tokenizer=tokenizer)
    return folder


def test_folder_layout_and_tied_weights_stored_once(mlm_dir):
    names = {p.name for p in mlm_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.json", "merges.txt"} <= names
    keys = set(load_file(str(mlm_dir / "model.safetensors")))
    assert "lm_head.decoder.weight" not in keys and "lm_head.decoder.bias" not in keys
    assert {"lm_head.bias", "roberta.embeddings.word_embeddings.weight"} <= keys
    assert json.loads((mlm_dir / "config.json").read_text())["architectures"] == ["RobertaForMaskedLM"]


def test_round_trip_keeps_outputs_and_tying(mlm_dir, tiny_config):
    original = RobertaForMaskedLM(tiny_config)
    original.save_pretrained(mlm_dir)
    loaded = RobertaForMaskedLM.from_pretrained(mlm_dir)
    ids = torch.randint(4, tiny_config.vocab_size, (2, 6))
    original.eval()
    with torch.no_grad():
        assert torch.equal(original(ids).logits, loaded(ids).logits)
    assert loaded.lm_head.decoder.weight is loaded.roberta.embeddings.word_embeddings.weight
    assert Tokenizer.from_pretrained(mlm_dir).vocab_size == 1000  # re-saving kept the tokenizer


def test_new_classifier_on_pretrained_encoder(mlm_dir):
    clf = RobertaForSequenceClassification.from_pretrained(mlm_dir, num_labels=3)
    mlm = RobertaForMaskedLM.from_pretrained(mlm_dir)
    assert clf.config.num_labels == 3 and clf.classifier.out_proj.out_features == 3
    assert torch.equal(
        clf.roberta.encoder.layer[0].attention.self.query.weight,
        mlm.roberta.encoder.layer[0].attention.self.query.weight,
    )
    encoder = RobertaModel.from_pretrained(mlm_dir)
    assert encoder.pooler is None


def test_missing_unexpected_and_misshaped_keys_are_listed(mlm_dir, tmp_path):
    state = load_file(str(mlm_dir / "model.safetensors"))
    broken = dict(state)
    del broken["roberta.encoder.layer.1.output.dense.weight"]
    broken["roberta.encoder.layer.9.extra"] = torch.zeros(1)
    broken["roberta.embeddings.LayerNorm.weight"] = torch.ones(7)
    save_file(broken, str(mlm_dir / "model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        RobertaForMaskedLM.from_pretrained(mlm_dir)
    message = str(info.value)
    assert "missing keys [roberta.encoder.layer.1.output.dense.weight]" in message
    assert "unexpected keys [roberta.encoder.layer.9.extra]" in message
    assert "roberta.embeddings.LayerNorm.weight: checkpoint (7,) vs model (64,)" in message


def test_wrong_head_size_is_a_shape_error(tmp_path, tiny_config):
    RobertaForSequenceClassification(RobertaConfig.tiny(num_labels=3)).save_pretrained(tmp_path)
    with pytest.raises(
        CheckpointError, match=r"classifier.out_proj.weight: checkpoint \(3, 64\) vs model \(2, 64\)"
    ):
        RobertaForSequenceClassification.from_pretrained(tmp_path, num_labels=2)


def test_bad_folders_give_clear_errors(tmp_path, mlm_dir):
    with pytest.raises(CheckpointError, match="config.json is missing"):
        RobertaForMaskedLM.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="model folder not found"):
        RobertaForMaskedLM.from_pretrained(tmp_path / "does" / "not" / "exist")
    (mlm_dir / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors: cannot read weights .* corrupt"):
        RobertaForMaskedLM.from_pretrained(mlm_dir)
    (mlm_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no weights: expected model.safetensors"):
        load_state_dict(mlm_dir)


def test_legacy_bin_is_loaded_without_unpickling_code(tmp_path, tiny_config):
    model = RobertaForMaskedLM(tiny_config)
    tiny_config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    loaded = RobertaForMaskedLM.from_pretrained(tmp_path)
    assert torch.equal(loaded.lm_head.dense.weight, model.lm_head.dense.weight)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="cannot read weights safely"):
        load_state_dict(tmp_path)


def test_interrupted_save_leaves_previous_folder_intact(tmp_path, tiny_config):
    target = tmp_path / "ckpt"
    RobertaForMaskedLM(tiny_config).save_pretrained(target)
    before = load_file(str(target / "model.safetensors"))
    with pytest.raises(RuntimeError, match="disk full"), atomic_directory(target) as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("disk full")
    after = load_file(str(target / "model.safetensors"))
    assert before.keys() == after.keys()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp folder left behind


def test_summary(mlm_dir):
    summary = model_summary(mlm_dir)
    assert summary["architecture"] == "RobertaForMaskedLM"
    assert (
        summary["parameters"] == RobertaForMaskedLM(RobertaConfig.from_pretrained(mlm_dir)).num_parameters()
    )
    assert summary["tokenizer_vocab_size"] == 1000 and summary["max_tokens"] == 128


def test_hub_name_offline_gives_clear_error(monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        CheckpointError, match=r"model folder not found: 'FacebookAI/roberta-base'.*Pass a local folder"
    ):
        RobertaForMaskedLM.from_pretrained("FacebookAI/roberta-base")
