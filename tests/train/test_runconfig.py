"""The run configs' shared conventions: every setting documented once and offered by the CLI with that default and
help, errors in field names (flags on the command line), the same resume and seeding rules, and the fairseq
switches (weight decay on every parameter, fairseq's warmup, the head's dropout preset)."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest
import torch
from click.testing import CliRunner

from rtoolkit.cli import main
from rtoolkit.config import ConfigError, RobertaConfig
from rtoolkit.data.glue import GLUE_TASKS
from rtoolkit.model import RobertaForMaskedLM
from rtoolkit.train.finetune import FinetuneConfig, finetune
from rtoolkit.train.optim import build_optimizer, linear_schedule
from rtoolkit.train.pretrain import PretrainConfig, pretrain
from rtoolkit.train.runconfig import field_docs

CONFIGS = [(PretrainConfig, "pretrain"), (FinetuneConfig, "finetune")]


@pytest.mark.parametrize(("config_cls", "command"), CONFIGS)
def test_every_setting_is_documented_and_offered_by_its_command_with_that_default(config_cls, command):
    docs = field_docs(config_cls)
    params = {p.name: p for p in main.commands[command].params}
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        assert docs.get(f.name), f"{config_cls.__name__}.{f.name} has no docstring"
        if hints[f.name] is dict or typing.get_origin(hints[f.name]) is dict:
            continue  # not a command-line setting (e.g. extra_model_config)
        assert f.name in params, f"{command} has no option for {f.name}"
        param = params[f.name]
        if f.default is not dataclasses.MISSING and f.name != "on_nonfinite":
            default = param.default
            assert (tuple(default) if isinstance(default, list) else default) == f.default, f.name
        if f.name != "on_nonfinite":
            assert param.help.split()[:3] == docs[f.name].split()[:3], f.name


def test_help_and_defaults_come_from_the_config():
    result = CliRunner().invoke(main, ["pretrain", "--help"])
    assert result.exit_code == 0
    words = " ".join(result.output.split())
    assert "Decoupled weight decay. [default: 0.01]" in words
    assert "--format [full-sentences|doc-sentences" in words
    assert "[default: 0.15]" in words  # the mask probability of rtoolkit.data.masking.MaskingConfig
    finetune_help = " ".join(CliRunner().invoke(main, ["finetune", "--help"]).output.split())
    assert "--precision [auto|fp32|bf16|fp16]" in finetune_help
    assert "--train PATH" in finetune_help and "--format [csv|tsv|jsonl]" in finetune_help


def test_library_errors_name_fields_and_the_cli_names_flags(tmp_path):
    with pytest.raises(ConfigError) as info:
        FinetuneConfig(model=tmp_path, out=tmp_path / "o", task="sst2", data_dir=tmp_path, warmup_ratio=2)
    assert str(info.value) == "warmup_ratio must be in [0, 1], got 2" and info.value.fields == (
        "warmup_ratio",
    )
    with pytest.raises(ConfigError, match=r"^max_steps must be >= 1, got 0$"):
        PretrainConfig(out=tmp_path, max_steps=0).resolved()
    result = CliRunner().invoke(
        main, ["finetune", "--model", str(tmp_path), "--out", str(tmp_path / "o"), "--task", "sst2",
               "--data-dir", str(tmp_path), "--warmup-ratio", "2"],
    )  # fmt: skip
    assert result.exit_code == 1 and result.output == "error: --warmup-ratio must be in [0, 1], got 2.0\n"


def test_paths_are_paths_in_both_configs(tmp_path):
    f = FinetuneConfig(
        model=str(tmp_path), out=str(tmp_path / "o"), train_file="t.jsonl", validation_file="v.jsonl"
    )
    p = PretrainConfig(out=str(tmp_path), data=str(tmp_path), eval_data=[str(tmp_path)])
    assert all(
        isinstance(v, type(tmp_path)) for v in (f.model, f.out, f.train_file, p.out, p.data, *p.eval_data)
    )


def test_glue_presets_use_fairseqs_head_dropout_and_it_can_be_set():
    assert {t.classifier_dropout for t in GLUE_TASKS.values()} == {0.0}
    base = dict(model="m", out="o", task="rte", data_dir="d")
    assert FinetuneConfig(**base).resolved().classifier_dropout == 0.0
    assert FinetuneConfig(**base, classifier_dropout=0.1).resolved().classifier_dropout == 0.1
    assert (
        FinetuneConfig(model="m", out="o", train_file="t", validation_file="v").resolved().classifier_dropout
        == 0.0
    )


def test_decay_all_decays_biases_and_layernorm_as_fairseq_does():
    model = RobertaForMaskedLM(RobertaConfig.tiny())
    ours = build_optimizer(model, lr=1e-3, weight_decay=0.01)
    fairseq = build_optimizer(model, lr=1e-3, weight_decay=0.01, decay_all=True)
    exempt = ours.param_groups[1]["params"]
    assert exempt and all(p.dim() == 1 for p in exempt)  # biases and LayerNorm weights
    assert [len(g["params"]) for g in fairseq.param_groups] == [len([*model.parameters()]), 0]


def test_fairseq_warmup_lags_one_step_and_the_decay_is_the_same():
    def rates(**kw):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = linear_schedule(opt, warmup_steps=4, total_steps=10, **kw)
        out = []
        for _ in range(10):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    assert rates() == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    # fairseq's polynomial_decay: the first two updates at 1/warmup, the peak at update warmup + 1.
    assert rates(fairseq_warmup=True) == pytest.approx(
        [0.25, 0.25, 0.5, 0.75, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]
    )


def test_both_recipes_refuse_to_resume_nothing(tmp_path, pretrain_data):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        pretrain(PretrainConfig(out=tmp_path / "p", data=pretrain_data, resume=True, progress=False))
    assert not (tmp_path / "p" / "run_config.json").exists()


def test_finetune_resume_refuses_changed_settings(tmp_path, tokenizer):
    torch.manual_seed(0)
    encoder = tmp_path / "encoder"
    RobertaForMaskedLM(RobertaConfig.tiny()).save_pretrained(encoder, tokenizer=tokenizer)
    rows = [{"text": f"a {'good' if i % 2 else 'bad'} film", "label": i % 2} for i in range(16)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    common = dict(model=encoder, out=tmp_path / "run", train_file=data, validation_file=data, max_steps=2,
                  save_every=1, progress=False)  # fmt: skip
    finetune(FinetuneConfig(**common, batch_size=8))
    recorded = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert recorded["classifier_dropout"] == 0.0 and recorded["model"] == str(encoder)
    with pytest.raises(ConfigError, match=r"batch_size: 8 -> 4"):
        finetune(FinetuneConfig(**common, batch_size=4, resume=True))
