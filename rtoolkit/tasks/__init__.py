"""Task families: what a finetuned head learns, each family one module, read top to bottom.

    classification          GLUE and custom CSV/TSV/JSONL rows: one label (or a score) per text or text pair
    question-answering      SQuAD: the answer's span in a context (rtoolkit.tasks.qa)
    multiple-choice         RACE: the right option for a question about a passage (rtoolkit.tasks.choice)
    token-classification    CoNLL-2003 NER: a label per word (rtoolkit.tasks.tagging)

Every family module defines the same names, which the finetuning recipe, `rtoolkit evaluate`, export validation,
the Predictor and the demo use without knowing which family they hold:

    NAME            its task name in exports and manifests (one of rtoolkit.runtime.artifacts.TASKS)
    HEAD            the model class (Hugging Face's name and weight keys)
    OUTPUTS         the model outputs it reads: attributes of the head's output, names of the exported graph's outputs
    TOKEN_OUTPUTS   those of OUTPUTS with a token axis (cut to each feature's length)
    INPUT_RANK      2 for (batch, sequence) inputs, 3 for (batch, choices, sequence)
    PRESETS         {task name: Preset}: the named tasks (`--task`) and their recipes from the paper or fairseq
    CUSTOM          the Preset of custom data of this family
    load_data(cfg, *, train=True) -> TaskData                   examples of every split, metrics, label information
    build_model(folder, labels, *, classifier_dropout) -> HEAD  the head for TaskData.labels on the encoder in `folder`
    labels_from_config(config) -> labels                        a trained head's label information (its config)
    encode(tokenizer, examples, *, max_length, stride) -> Features
    collate(tokenizer, features, rows) -> dict of tensors       model keyword arguments (labels when there are some)
    postprocess(outputs, features, examples, data, **options) -> list    one prediction per example, in the form the
                                                                Predictor returns it
    score(predictions, examples, data) -> dict[str, float]      the family's metrics
    agreement(reference, candidate) -> dict[str, float]         how far two models' predictions agree (export
                                                                validation: PyTorch vs each exported graph)
    write_predictions(predictions, examples, data, split, folder) -> Path
    evaluation_data(model, request) -> TaskData                 the splits `rtoolkit evaluate` scores a trained model on
    read_examples(path, *, limit) -> examples                   labelled examples from a file in the family's format
    sample_examples() -> examples                               a few built-in examples (export validation without data)

The mappings below are the only place that lists the families; nothing else branches on them.
"""

from __future__ import annotations

from types import ModuleType
from typing import Literal

from rtoolkit.tasks import choice, classification, qa, tagging

FamilyName = Literal["classification", "question-answering", "multiple-choice", "token-classification"]
FAMILIES: dict[str, ModuleType] = {
    classification.NAME: classification,
    choice.NAME: choice,
    tagging.NAME: tagging,
    qa.NAME: qa,
}


def family(name: str) -> ModuleType:
    """The family module called `name` ("classification", "question-answering", ...)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown task family {name!r}; choose one of {', '.join(FAMILIES)}") from None


def task_family(task: str) -> ModuleType:
    """The family of a named task (`sst2` -> classification, `squad` -> question-answering, ...)."""
    for module in FAMILIES.values():
        if task in module.PRESETS:
            return module
    names = [t for module in FAMILIES.values() for t in module.PRESETS]
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(names)}")


def head_class(task: str) -> type:
    """The model class of an export task (rtoolkit.runtime.artifacts.TASKS): the LM head, the bare encoder, or a
    family's HEAD."""
    from rtoolkit.model import RobertaForMaskedLM, RobertaModel

    if task == "fill-mask":
        return RobertaForMaskedLM
    if task == "embedding":
        return RobertaModel
    return family(task).HEAD


def task_names() -> list[str]:
    """Every named task, family by family."""
    return [t for module in FAMILIES.values() for t in module.PRESETS]


__all__ = ["FAMILIES", "FamilyName", "family", "head_class", "task_family", "task_names"]
