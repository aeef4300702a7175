"""torchrun / DDP / FSDP helpers: one code path for 1 process and N processes.

    dist_info = init_distributed("cuda")        # reads RANK / WORLD_SIZE / LOCAL_RANK set by torchrun
    device = dist_info.device                   # "cuda" -> cuda:LOCAL_RANK: one GPU per process
    model = wrap_model(model.to(device), dist_info, fsdp=False, compile=True)   # compile, then DDP
    my_rows = shard(rows, dist_info)            # each rank its own slice of a global batch
    if dist_info.is_main: ...                   # only rank 0 writes files
    cleanup_distributed(dist_info)

Without torchrun (no WORLD_SIZE in the environment) everything is a no-op and `world_size == 1`.
Backend: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized: bool = False  # True when this call set up (and so owns) the process group

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, metrics and logs progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(
    device: str | torch.device | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cuda_available: bool | None = None,
    cuda_device_count: int | None = None,
) -> torch.device:
    """The device of this process, for one process or each process of a torchrun job.

    `None`/"auto": cuda:LOCAL_RANK when CUDA is available, else cpu. "cuda" (no index) is cuda:LOCAL_RANK, so
    every torchrun process gets its own GPU. "cuda:N" is taken as given in a single process, and refused when
    torchrun starts several processes on this node (they would all share GPU N). "cpu" is cpu.
    `env` (default `os.environ`) supplies LOCAL_RANK / LOCAL_WORLD_SIZE; `cuda_available` and
    `cuda_device_count` default to what torch sees (arguments so the rule can be tested without a GPU).
    """
    env = os.environ if env is None else env
    local_rank = int(env.get("LOCAL_RANK", "0"))
    local_world = int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1")))
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if device is None or str(device) == "auto":
        if not available:
            return torch.device("cpu")
        device = "cuda"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {str(device)!r}") from None
    if dev.type != "cuda":
        return dev
    if not available:
        raise RuntimeError(f"device {str(device)!r} was asked for but CUDA is not available on this machine")
    if dev.index is not None and local_world > 1:
        raise ValueError(
            f"device {str(device)!r} would put all {local_world} processes of this node on one GPU; pass "
            f"--device cuda (each torchrun process takes cuda:LOCAL_RANK) or set CUDA_VISIBLE_DEVICES"
        )
    index = local_rank if dev.index is None else dev.index
    count = torch.cuda.device_count() if cuda_device_count is None else cuda_device_count
    if index >= count:
        who = f"LOCAL_RANK {local_rank}" if dev.index is None else f"device {str(device)!r}"
        raise ValueError(
            f"{who} needs GPU {index} but only {count} GPU(s) are visible; start at most {count} processes "
            f"per node (torchrun --nproc-per-node {count})"
        )
    return torch.device("cuda", index)


def init_distributed(device: str | torch.device | None = None, *, timeout_s: float = 1800) -> DistInfo:
    """Join the torchrun process group when launched by torchrun; a single-process DistInfo otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if world_size <= 1:
        return DistInfo(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    initialized = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=dev if dev.type == "cuda" else None,
        )
        initialized = True
        logger.info("rank %d/%d joined (%s on %s)", rank, world_size, backend, dev)
    return DistInfo(
        rank=rank, local_rank=local_rank, world_size=world_size, device=dev, initialized=initialized
    )


def cleanup_distributed(info: DistInfo) -> None:
    """Leave the process group this module created (no-op otherwise)."""
    if info.initialized and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum `tensor` over ranks in place (returned for convenience); identity with one process."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(value: int, info: DistInfo) -> int:
    """The largest `value` over ranks (e.g. how many micro-batches every rank must run); identity with one process."""
    if not info.distributed:
        return value
    tensor = torch.tensor(value, dtype=torch.int64, device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def broadcast_object(obj: T, info: DistInfo) -> T:
    """Rank 0's `obj` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(items: Sequence[T], info: DistInfo) -> Sequence[T]:
    """This rank's contiguous slice of a global batch (sizes differ by at most one between ranks)."""
    from rtoolkit.data.batching import shard as shard_items

    return shard_items(items, info.rank, info.world_size)


def compile_model(model: nn.Module, *, backend: str = "inductor", mode: str | None = None) -> nn.Module:
    """`torch.compile` every encoder layer in place (the module tree, its type and its state-dict keys stay the same).

    Layers are where the time goes and their shapes are static for fixed-length blocks; the masked-rows LM head,
    whose row count changes every batch, stays eager. Compile before wrapping in DDP/FSDP (`wrap_model` does), so
    DDP's `no_sync` still sees its own module and gradient accumulation all-reduces once per optimizer step.
    """
    for layer in unwrap_model(model).roberta.encoder.layer:
        layer.compile(backend=backend, mode=mode)
    return model


def wrap_model(
    model: nn.Module,
    info: DistInfo,
    *,
    fsdp: bool = False,
    compile: bool = False,
    compile_backend: str = "inductor",
) -> nn.Module:
    """Compile (optional), then DDP or FSDP2 (`fully_shard`, one unit per encoder layer plus the root) under torchrun.

    With one process the (compiled) model is returned as is.
    """
    if compile:
        compile_model(model, backend=compile_backend)
    if not info.distributed:
        if fsdp:
            logger.warning("--fsdp ignored: one process (launch with torchrun to shard the model)")
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in unwrap_model(model).roberta.encoder.layer:
            fully_shard(layer)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def ddp_module(model: nn.Module) -> nn.parallel.DistributedDataParallel | None:
    """The DistributedDataParallel wrapper in `model`'s wrapper chain (also under an outer torch.compile), or None."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            return model
        if not hasattr(model, "_orig_mod"):
            return None
        model = model._orig_mod


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model under DDP and torch.compile wrappers (FSDP2 shards in place and needs no unwrapping)."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def is_fsdp(model: nn.Module) -> bool:
    """True when `model` was sharded with FSDP2 `fully_shard`."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        return False
    return isinstance(unwrap_model(model), FSDPModule)


__all__ = [
    "DistInfo",
    "all_reduce_max",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "compile_model",
    "ddp_module",
    "init_distributed",
    "is_fsdp",
    "resolve_device",
    "shard",
    "unwrap_model",
    "wrap_model",
]
