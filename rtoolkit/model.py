"""The RoBERTa encoder and its heads, in plain PyTorch, readable top to bottom.

Embeddings -> self-attention -> layer -> encoder -> RobertaModel -> heads -> task models.
Module and parameter names equal Hugging Face's (`roberta.encoder.layer.0.attention.self.query.weight`, ...), so
state dicts are interchangeable with `transformers` and no converter is needed.

Shapes: B = batch, T = sequence length, H = hidden size, nh = heads, hs = head size, V = vocabulary, N = masked rows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rtoolkit.config import ACTIVATIONS, RobertaConfig

logger = logging.getLogger(__name__)

# Added to attention scores of padded keys. Finite (not finfo.min) so fp16/bf16 graphs never produce -inf - -inf.
MASK_FILL = -1e4
IGNORE_INDEX = -100  # label of positions that are not predicted (not a token id: id 0 is <s>)


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor | None = None  # (B, H)


@dataclass
class HeadOutput:
    logits: (
        torch.Tensor
    )  # MLM: (B, T, V), or (N, V) with labels; classification: (B, num_labels); tokens: (B, T,
    loss: torch.Tensor | None = None  # num_labels); multiple choice: (B, C)


@dataclass
class SpanOutput:
    start_logits: torch.Tensor  # (B, T): where the answer starts
    end_logits: torch.Tensor  # (B, T): where it ends (inclusive)
    loss: torch.Tensor | None = None


def create_position_ids(input_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """RoBERTa/fairseq positions: the first real token gets padding_idx + 1, padding keeps padding_idx. (B, T)"""
    not_pad = input_ids.ne(padding_idx).int()
    return (torch.cumsum(not_pad, dim=1).type_as(not_pad) * not_pad).long() + padding_idx


def extended_attention_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T) 1/0 mask -> (B, 1, 1, T) additive mask: 0 where attended, MASK_FILL on padding."""
    if attention_mask is None:
        return None
    mask = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T)
    return (1.0 - mask) * MASK_FILL


def check_input_ids(input_ids: torch.Tensor, config: RobertaConfig) -> None:
    """Raise ValueError, naming the numbers, for ids the embeddings cannot look up: a sequence longer than the
    position table, or (for ids on the host, where checking costs no device sync) an id outside the vocabulary."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, sequence), got shape {tuple(input_ids.shape)}")
    length = input_ids.shape[1]
    if length > config.max_tokens:
        raise ValueError(
            f"a sequence of {length} tokens is longer than this model allows ({config.max_tokens} tokens, <s> and </s> "
            f"included: max_position_embeddings {config.max_position_embeddings}); truncate the input"
        )
    if input_ids.device.type != "cpu" or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= config.vocab_size):
        bad = input_ids[(input_ids < 0) | (input_ids >= config.vocab_size)][0]
        raise ValueError(
            f"token id {int(bad)} is outside this model's vocabulary (ids 0 .. {config.vocab_size - 1}); was the "
            f"text encoded with another tokenizer?"
        )


class RobertaEmbeddings(nn.Module):
    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        position_ids = create_position_ids(input_ids, self.padding_idx)  # (B, T)
        # RoBERTa has a single token type (id 0); its row is added everywhere, as in Hugging Face.
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)  # (B, T, H)
        x = x + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class RobertaSelfAttention(nn.Module):
    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, H = x.shape
        q = self.query(x).view(B, T, self.num_heads, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, self.num_heads, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, self.num_heads, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        if attn_mask is not None:
            attn_mask = attn_mask.to(q.dtype)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout_p if self.training else 0.0
        )  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, H)  # (B, T, H)


class RobertaSelfOutput(nn.Module):
    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)  # post-LN


class RobertaAttention(nn.Module):
    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.self = RobertaSelfAttention(config)
        self.output = RobertaSelfOutput(config)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, attn_mask), x)


class RobertaIntermediate(nn.Module):
    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))  # (B, T, intermediate_size)


class RobertaOutput(nn.Module):
    """FFN down-projection + residual + LayerNorm."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)  # post-LN


class RobertaLayer(nn.Module):
    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.attention = RobertaAttention(config)
        self.intermediate = RobertaIntermediate(config)
        self.output = RobertaOutput(config)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, attn_mask)
        return self.output(self.intermediate(x), x)


class RobertaEncoder(nn.Module):
    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.layer = nn.ModuleList(RobertaLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, attn_mask)
        return x


class RobertaPooler(nn.Module):
    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))  # (B, H)


class PreTrainedMixin:
    """`from_pretrained` / `save_pretrained` for the model classes (implemented in rtoolkit.checkpoint)."""

    config: RobertaConfig

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs):
        from rtoolkit.checkpoint import load_model

        return load_model(cls, path, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike, *, tokenizer=None) -> Path:
        from rtoolkit.checkpoint import save_model

        return save_model(self, directory, tokenizer=tokenizer)

    def init_weights(self) -> None:
        """BERT init: N(0, initializer_range) for Linear/Embedding weights, zero biases and padding rows."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # shared (tied) parameters counted once


class RobertaModel(PreTrainedMixin, nn.Module):
    """The bare encoder: (B, T) token ids -> (B, T, H) hidden states."""

    def __init__(self, config: RobertaConfig, add_pooling_layer: bool = True, *, initialize: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = RobertaEmbeddings(config)
        self.encoder = RobertaEncoder(config)
        self.pooler = RobertaPooler(config) if add_pooling_layer else None
        if initialize:  # a task model initialises everything once, heads included
            self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        check_input_ids(input_ids, self.config)
        x = self.embeddings(input_ids)  # (B, T, H)
        x = self.encoder(x, extended_attention_mask(attention_mask, x.dtype))  # (B, T, H)
        pooled = self.pooler(x) if self.pooler is not None else None
        return EncoderOutput(last_hidden_state=x, pooler_output=pooled)


VOCAB_MULTIPLE = (
    64  # GPU matmuls want output widths that are multiples of 8 (16-byte rows); 64 suits every tile
)


def padded_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, multiple: int
) -> torch.Tensor:
    """`F.linear(x, weight, bias)` computed with the output width rounded up to `multiple` and cut back:
    the same numbers, but an aligned matmul (on GPUs an odd width such as 50,265 picks an unaligned kernel).
    (..., H) x (V, H) -> (..., V)."""
    V = weight.shape[0]
    pad = -V % multiple
    if not pad:
        return F.linear(x, weight, bias)
    logits = F.linear(x, F.pad(weight, (0, 0, 0, pad)), F.pad(bias, (0, pad)))  # (..., V + pad)
    return logits[..., :V]


class RobertaLMHead(nn.Module):
    """dense -> gelu -> LayerNorm -> decoder (tied to the word embeddings) + bias."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias  # one vector, two names, as in Hugging Face

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(F.gelu(self.dense(features)))  # (..., H)
        if (
            x.is_cuda
        ):  # 50,265 output rows leave the matmul unaligned (a slow kernel): pad the matmul, not the weights
            return padded_linear(x, self.decoder.weight, self.bias, multiple=VOCAB_MULTIPLE)  # (..., V)
        return self.decoder(x)  # (..., V)


def head_dropout(config: RobertaConfig) -> nn.Dropout:
    """The dropout of a task head: `classifier_dropout`, or the encoder's `hidden_dropout_prob` when it is None (as in
    Hugging Face)."""
    p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    return nn.Dropout(p)


class RobertaClassificationHead(nn.Module):
    """`<s>` hidden state -> dropout -> dense -> tanh -> dropout -> out_proj."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = head_dropout(config)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.dropout(hidden[:, 0, :])  # (B, H): the <s> token
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)  # (B, num_labels)


class RobertaForMaskedLM(PreTrainedMixin, nn.Module):
    """Encoder + LM head. With labels, only rows where labels != -100 go through the LM head (fairseq's trick)."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.config = config
        self.roberta = RobertaModel(config, add_pooling_layer=False, initialize=False)
        self.lm_head = RobertaLMHead(config)
        self.lm_head.decoder.weight = self.roberta.embeddings.word_embeddings.weight  # tied
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> HeadOutput:
        hidden = self.roberta(input_ids, attention_mask).last_hidden_state  # (B, T, H)
        if labels is None:
            return HeadOutput(logits=self.lm_head(hidden))  # (B, T, V)
        selected = labels.ne(IGNORE_INDEX)  # (B, T)
        logits = self.lm_head(hidden[selected])  # (N, V)
        targets = labels[selected]  # (N,)
        loss = F.cross_entropy(logits.float(), targets) if targets.numel() else logits.sum() * 0.0
        return HeadOutput(logits=logits, loss=loss)


class RobertaForSequenceClassification(PreTrainedMixin, nn.Module):
    """Encoder + classification head on `<s>`. num_labels == 1 (or problem_type 'regression') is regression."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.config = config
        self.roberta = RobertaModel(config, add_pooling_layer=False, initialize=False)
        self.classifier = RobertaClassificationHead(config)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> HeadOutput:
        hidden = self.roberta(input_ids, attention_mask).last_hidden_state  # (B, T, H)
        logits = self.classifier(hidden)  # (B, num_labels)
        if labels is None:
            return HeadOutput(logits=logits)
        return HeadOutput(logits=logits, loss=self.classification_loss(logits, labels))

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        problem = self.config.problem_type
        if problem is None:
            if self.config.num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int32, torch.int16, torch.uint8):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        logits = logits.float()
        if problem == "regression":
            return (
                F.mse_loss(logits.squeeze(-1), labels.float().view(-1))
                if self.config.num_labels == 1
                else F.mse_loss(logits, labels.float())
            )
        if problem == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.config.num_labels), labels.view(-1).long())
        return F.binary_cross_entropy_with_logits(logits, labels.float())


class RobertaForTokenClassification(PreTrainedMixin, nn.Module):
    """Encoder + a label per token (NER): dropout -> classifier on every hidden state. Labels of -100 are ignored
    (sub-tokens after a word's first, padding)."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.config = config
        self.roberta = RobertaModel(config, add_pooling_layer=False, initialize=False)
        self.dropout = head_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> HeadOutput:
        hidden = self.roberta(input_ids, attention_mask).last_hidden_state  # (B, T, H)
        logits = self.classifier(self.dropout(hidden))  # (B, T, num_labels)
        if labels is None:
            return HeadOutput(logits=logits)
        loss = F.cross_entropy(
            logits.float().view(-1, self.config.num_labels), labels.view(-1), ignore_index=IGNORE_INDEX
        )
        return HeadOutput(logits=logits, loss=loss)


class RobertaForQuestionAnswering(PreTrainedMixin, nn.Module):
    """Encoder + extractive QA: `qa_outputs` maps every hidden state to a start and an end logit (config.num_labels
    is 2, as in Hugging Face). The loss averages the start and end cross-entropies; positions outside the sequence
    (e.g. a window without the answer clamped to T) are ignored."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.config = config
        self.roberta = RobertaModel(config, add_pooling_layer=False, initialize=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
    ) -> SpanOutput:
        hidden = self.roberta(input_ids, attention_mask).last_hidden_state  # (B, T, H)
        start, end = self.qa_outputs(hidden).split(1, dim=-1)  # (B, T, 1) each
        start, end = start.squeeze(-1).contiguous(), end.squeeze(-1).contiguous()  # (B, T)
        if start_positions is None or end_positions is None:
            return SpanOutput(start_logits=start, end_logits=end)
        ignored = start.size(1)
        starts = start_positions.view(-1).clamp(0, ignored)
        ends = end_positions.view(-1).clamp(0, ignored)
        loss = (
            F.cross_entropy(start.float(), starts, ignore_index=ignored)
            + F.cross_entropy(end.float(), ends, ignore_index=ignored)
        ) / 2
        return SpanOutput(start_logits=start, end_logits=end, loss=loss)


class RobertaForMultipleChoice(PreTrainedMixin, nn.Module):
    """Encoder + one score per option (RACE): each (B, C, T) option sequence is encoded on its own, its pooled `<s>`
    state (the pooler: dense + tanh, as in Hugging Face) goes through dropout and a one-output classifier, and the
    scores are read as (B, C) logits over the options."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.config = config
        self.roberta = RobertaModel(config, add_pooling_layer=True, initialize=False)
        self.dropout = head_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> HeadOutput:
        if input_ids.dim() != 3:
            raise ValueError(
                f"input_ids must be (batch, choices, sequence), got shape {tuple(input_ids.shape)}"
            )
        batch, choices, length = input_ids.shape
        flat_mask = None if attention_mask is None else attention_mask.reshape(batch * choices, length)
        pooled = self.roberta(input_ids.reshape(batch * choices, length), flat_mask).pooler_output  # (B*C, H)
        logits = self.classifier(self.dropout(pooled)).view(batch, choices)  # (B, C)
        if labels is None:
            return HeadOutput(logits=logits)
        return HeadOutput(logits=logits, loss=F.cross_entropy(logits.float(), labels.view(-1)))


def flops_per_token(config: RobertaConfig, seq_len: int, *, masked_fraction: float = 0.0) -> float:
    """Training FLOPs per token: 6 * non-embedding params + 12 * L * H * T (attention), as in the MFU literature,
    plus the LM head on the masked rows only (dense H x H and decoder H x V, 6 FLOPs per weight per row) when
    `masked_fraction` (e.g. 0.15) is given: the FLOPs masked-LM training actually needs."""
    H, L, FF = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_layer = 4 * H * H + 2 * H * FF  # q, k, v, o and the two FFN matrices
    head = masked_fraction * 6.0 * (H * H + H * config.vocab_size)
    return 6.0 * L * per_layer + 12.0 * L * H * seq_len + head


__all__ = [
    "EncoderOutput",
    "HeadOutput",
    "SpanOutput",
    "RobertaModel",
    "RobertaForMaskedLM",
    "RobertaForSequenceClassification",
    "RobertaForQuestionAnswering",
    "RobertaForMultipleChoice",
    "RobertaForTokenClassification",
    "create_position_ids",
    "flops_per_token",
    "MASK_FILL",
    "IGNORE_INDEX",
]
