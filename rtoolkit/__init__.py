"""rtoolkit: RoBERTa (Liu et al., 2019) pretraining, finetuning, export and serving."""

from rtoolkit.config import RobertaConfig
from rtoolkit.model import RobertaForMaskedLM, RobertaForSequenceClassification, RobertaModel
from rtoolkit.predictor import Predictor
from rtoolkit.tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "RobertaConfig",
    "RobertaModel",
    "RobertaForMaskedLM",
    "RobertaForSequenceClassification",
    "Tokenizer",
    "Predictor",
    "__version__",
]
