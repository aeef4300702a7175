"""rtoolkit: RoBERTa (Liu et al., 2019) pretraining, finetuning, export and serving."""

from rtoolkit.config import RobertaConfig
from rtoolkit.model import (
    RobertaForMaskedLM,
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
)
from rtoolkit.predictor import Predictor
from rtoolkit.tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "RobertaConfig",
    "RobertaModel",
    "RobertaForMaskedLM",
    "RobertaForSequenceClassification",
    "RobertaForQuestionAnswering",
    "RobertaForMultipleChoice",
    "RobertaForTokenClassification",
    "Tokenizer",
    "Predictor",
    "__version__",
]
