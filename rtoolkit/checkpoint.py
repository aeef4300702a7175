"""Hugging Face model folders in and out: config.json, model.safetensors, tokenizer files.

Writes are atomic (a temporary file or folder, then a rename), tied weights are stored once, and loading never
unpickles: safetensors, or `torch.load(weights_only=True)` for a legacy `pytorch_model.bin`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from rtoolkit.config import CONFIG_NAME, RobertaConfig

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"
# Keys that alias another tensor (tied to the word embeddings / to lm_head.bias) and so are stored once.
TIED_KEYS = ("lm_head.decoder.weight", "lm_head.decoder.bias")
# Non-persistent buffers that older Hugging Face checkpoints contain.
IGNORED_KEYS = (
    "roberta.embeddings.position_ids",
    "roberta.embeddings.token_type_ids",
    "embeddings.position_ids",
    "embeddings.token_type_ids",
)

M = TypeVar("M", bound=nn.Module)


class CheckpointError(ValueError):
    """A model folder that cannot be loaded as asked; the message names the file and what is wrong."""


# ---------------------------------------------------------------------------------------------- atomic i/o
_TMP_TAG = (
    ".tmp-"  # .NAME.tmp-XXXX: a folder being written, or (after an exchange) the previous NAME being deleted
)
_OLD_TAG = (
    ".old-"  # .NAME.old-PID: the previous NAME during a two-rename replacement (no exchange on this system)
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def umask_permissions(path: Path) -> None:
    """mkdtemp/mkstemp create 0700/0600; give outputs the permissions the user's umask asks for instead (a folder
    written by one user and read by another, e.g. a container's non-root user on a mounted volume)."""
    mode = 0o777 if path.is_dir() else 0o666
    os.chmod(path, mode & ~_umask())


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # old kernel, or a file system without it
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_directory(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the folder `new` in place of `target` so that `target` always names a complete folder, the old or the
    new one: one atomic exchange where the system allows it (Linux), else two renames whose gap
    `recover_directory` repairs on the next run. The previous folder is then deleted."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the previous folder
        return
    old = target.with_name(f".{target.name}{_OLD_TAG}{os.getpid()}")
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def recover_directory(target: str | os.PathLike) -> None:
    """Repair what an interrupted write or replacement of `target` left: bring a previous folder back when `target`
    is missing, and delete half-written temporary folders and already-replaced previous folders."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    olds = sorted(target.parent.glob(f".{target.name}{_OLD_TAG}*"))
    if olds and not target.exists():
        os.replace(olds[-1], target)  # interrupted between the two renames: the previous folder comes back
        logger.warning("recovered %s from an interrupted replacement", target)
        olds = olds[:-1]
    for leftover in [*olds, *target.parent.glob(f".{target.name}{_TMP_TAG}*")]:
        shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it takes `target`'s place (`replace_directory`).

    A crash inside the block leaves any previous `target` untouched; leftovers of an earlier interrupted write are
    cleaned up (or an interrupted replacement recovered) first. The folder gets the user's umask permissions.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TMP_TAG}", dir=target.parent))
    umask_permissions(tmp)
    try:
        yield tmp
        replace_directory(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file in one rename (never half-written), with the user's umask permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask_permissions(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------------------------------ folder lookup
def resolve_model_dir(path: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a Hub name fetched with huggingface_hub when it is installed and online."""
    folder = Path(path)
    if folder.is_dir():
        return folder
    if folder.exists():
        raise CheckpointError(
            f"{folder} is a file; expected a model folder (config.json + model.safetensors)"
        )
    name = str(path)
    looks_like_hub_id = name.count("/") <= 1 and not name.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise CheckpointError(f"model folder not found: {folder}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"model folder not found: {name!r}. To fetch it from the Hugging Face Hub install huggingface_hub "
            f"(pip install huggingface_hub), or download it and pass the local folder"
        ) from None
    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
    except Exception as exc:  # offline, unknown repo, auth: all end the same way for the user
        raise CheckpointError(
            f"model folder not found: {name!r}, and fetching it from the Hugging Face Hub failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Pass a local folder"
        ) from None


def load_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the weights of a model folder (safetensors, sharded safetensors, or a legacy .bin, safely)."""
    folder = Path(folder)
    single, index, legacy = folder / WEIGHTS_NAME, folder / WEIGHTS_INDEX_NAME, folder / LEGACY_WEIGHTS_NAME
    try:
        if single.is_file():
            return load_file(str(single))
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_file(str(folder / shard)))
            return state
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        bad = single if single.is_file() else index
        raise CheckpointError(
            f"{bad}: cannot read weights ({exc}); the file is corrupt or incomplete"
        ) from None
    if legacy.is_file():
        try:
            return torch.load(str(legacy), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{legacy}: cannot read weights safely ({exc})") from None
    raise CheckpointError(f"{folder} has no weights: expected {WEIGHTS_NAME} (or {LEGACY_WEIGHTS_NAME})")


def weight_names(folder: str | os.PathLike) -> list[str]:
    """Tensor names of a model folder, read from the safetensors headers (no weights loaded) when possible."""
    from safetensors import safe_open

    folder = Path(folder)
    if (folder / WEIGHTS_NAME).is_file():
        with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
            return list(f.keys())
    if (folder / WEIGHTS_INDEX_NAME).is_file():
        index = json.loads((folder / WEIGHTS_INDEX_NAME).read_text(encoding="utf-8"))
        return list(index.get("weight_map", {}))
    return list(load_state_dict(folder))


def has_weights(folder: str | os.PathLike) -> bool:
    """The folder holds model weights (safetensors, sharded safetensors or a legacy .bin)."""
    return any((Path(folder) / n).is_file() for n in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, LEGACY_WEIGHTS_NAME))


# --------------------------------------------------------------------------------------------- save / load
def save_model(model: nn.Module, directory: str | os.PathLike, *, tokenizer=None) -> Path:
    """Write a Hugging Face model folder atomically: config.json, model.safetensors and the tokenizer files."""
    config: RobertaConfig = model.config
    config.architectures = [type(model).__name__]
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in TIED_KEYS}
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        config.save_pretrained(tmp)
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        elif directory.is_dir():
            # Re-saving into a folder that already holds a tokenizer keeps it.
            for name in (
                "tokenizer.json",
                "vocab.json",
                "merges.txt",
                "tokenizer_config.json",
                "special_tokens_map.json",
            ):
                if (directory / name).is_file():
                    shutil.copy2(directory / name, tmp / name)
    return directory


def _adapt_prefix(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Let a bare RobertaModel load a task checkpoint (strip 'roberta.') and vice versa (add it)."""
    wants_prefix = any(k.startswith("roberta.") for k in model.state_dict())
    has_prefix = any(k.startswith("roberta.") for k in state)
    if wants_prefix and not has_prefix:
        return {f"roberta.{k}": v for k, v in state.items()}
    if has_prefix and not wants_prefix:
        return {k[len("roberta.") :]: v for k, v in state.items() if k.startswith("roberta.")}
    return state


def load_weights(
    model: nn.Module, state: dict[str, torch.Tensor], *, source: str = "checkpoint", strict: bool = False
) -> list[str]:
    """Copy `state` into `model`; returns the head keys left freshly initialised.

    Encoder keys must all be present with the right shapes. Head keys (lm_head, classifier, pooler) may be missing
    (a new head, e.g. a classifier on a pretrained encoder) unless `strict`; keys of other heads are ignored.
    Anything else raises CheckpointError listing the keys.
    """
    state = {k: v for k, v in _adapt_prefix(state, model).items() if k not in IGNORED_KEYS}
    own = {k: v for k, v in model.state_dict().items() if k not in TIED_KEYS}
    state = {k: v for k, v in state.items() if k not in TIED_KEYS}
    head_prefixes = ("lm_head.", "classifier.", "pooler.", "roberta.pooler.")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    missing_encoder = [k for k in missing if strict or not k.startswith(head_prefixes)]
    unexpected_other = [k for k in unexpected if strict or not k.startswith(head_prefixes)]
    mis_shaped = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    ]
    problems = []
    if missing_encoder:
        problems.append(f"missing keys {_preview(missing_encoder)}")
    if unexpected_other:
        problems.append(f"unexpected keys {_preview(unexpected_other)}")
    if mis_shaped:
        problems.append(f"mis-shaped keys {_preview(sorted(mis_shaped))}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(
            f"{source}: weights hold NaN or inf values in {_preview(sorted(broken))}; the checkpoint is broken "
            f"(saved while training diverged?), load an earlier one"
        )
    with torch.no_grad():
        for k, v in state.items():
            if k in own:
                own[k].copy_(v.to(own[k].dtype))
    fresh = [k for k in missing if k.startswith(head_prefixes)]
    if fresh:
        logger.info("%s: %d head tensors newly initialised (%s)", source, len(fresh), _preview(fresh))
    return fresh


def _preview(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)} in all)"


def load_model(cls: type[M], path: str | os.PathLike, *, strict: bool = False, **config_overrides: Any) -> M:
    """Build `cls` from a model folder's config.json and load its weights (see `load_weights`)."""
    folder = resolve_model_dir(path)
    if not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"{folder} is not a model folder: {CONFIG_NAME} is missing")
    config = RobertaConfig.from_pretrained(folder)
    if config_overrides:
        data = {**config.to_dict(), **config_overrides}
        if "num_labels" in config_overrides and "id2label" not in config_overrides:
            data.pop("id2label", None)
            data.pop("label2id", None)
        config = RobertaConfig.from_dict(data)
    state = load_state_dict(folder)
    kwargs: dict[str, Any] = {}
    if cls.__name__ == "RobertaModel":
        kwargs["add_pooling_layer"] = any(k.endswith("pooler.dense.weight") for k in state)
    model = cls(config, **kwargs)
    load_weights(model, state, source=str(folder), strict=strict)
    model.eval()
    return model


# ----------------------------------------------------------------------------------------------- train state
def save_train_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write optimizer/scheduler/RNG/data-position state (tensors and plain Python values) atomically."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state not found: {path}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read training state ({exc})") from None


def model_summary(path: str | os.PathLike) -> dict[str, Any]:
    """What `rtoolkit info` prints: architecture, sizes, parameter count (tied weights once), vocabulary."""
    folder = resolve_model_dir(path)
    if not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"{folder} is not a model folder: {CONFIG_NAME} is missing")
    config = RobertaConfig.from_pretrained(folder)
    state = load_state_dict(folder)
    params = sum(v.numel() for k, v in state.items() if k not in TIED_KEYS and k not in IGNORED_KEYS)
    summary: dict[str, Any] = {
        "folder": str(folder),
        "architecture": (config.architectures or ["unknown"])[0],
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size,
        "max_tokens": config.max_tokens,
        "parameters": params,
        "parameters_human": f"{params / 1e6:.2f}M",
    }
    if config.id2label and "Classification" in summary["architecture"]:
        summary["labels"] = [config.id2label[i] for i in sorted(config.id2label)]
    if (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file():
        from rtoolkit.tokenizer import Tokenizer

        summary["tokenizer_vocab_size"] = Tokenizer.from_pretrained(folder).vocab_size
    else:
        summary["tokenizer_vocab_size"] = None
    return summary
