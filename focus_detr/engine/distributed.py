"""Distributed set-up for torchrun (CPU: gloo, CUDA: NCCL) and DDP wrapping."""

import datetime
import inspect
import logging
import os

import torch
import torch.distributed as dist
from detectron2.utils import comm
from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks
from torch.nn.parallel import DistributedDataParallel

__all__ = ["launched_by_torchrun", "init_torchrun_process_group", "create_ddp_model"]

logger = logging.getLogger(__name__)

_TORCHRUN_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)


def launched_by_torchrun():
    """True when the torchrun (torch.distributed.run) environment variables are set."""
    return all(v in os.environ for v in _TORCHRUN_VARS)


def init_torchrun_process_group(device, timeout_minutes=30):
    """Initialise the default process group from torchrun's environment.

    Uses NCCL when `device` is CUDA (and pins this process to GPU LOCAL_RANK), gloo on CPU.
    Also creates detectron2's per-machine group (`comm._LOCAL_PROCESS_GROUP`), which
    `detectron2.engine.launch` would otherwise set, so that `comm.get_local_rank()` /
    `get_local_size()` work. Ranks of one machine are contiguous (torchrun's assignment).
    """
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank, local_world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    cuda = str(device).startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(
                "train.device is cuda but CUDA is not available; use "
                "train.device=cpu for gloo training"
            )
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    if world % local_world:
        raise RuntimeError(
            f"WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE="
            f"{local_world}: every machine must run the same number of processes"
        )
    if comm._LOCAL_PROCESS_GROUP is None:
        for machine in range(world // local_world):
            ranks = list(range(machine * local_world, (machine + 1) * local_world))
            group = dist.new_group(ranks)  # every process must create every group
            if rank in ranks:
                comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    logger.info(f"torchrun: rank {rank}/{world} (local {local_rank}/{local_world}), {backend}")
    return backend


def _ddp_arguments():
    return inspect.signature(DistributedDataParallel.__init__).parameters


def create_ddp_model(model, device, fp16_compression=False, **kwargs):
    """Wrap `model` in DistributedDataParallel when there is more than one process.

    Args:
        model: a module already on `device`.
        device: "cpu" or "cuda"; on CUDA the replica is on GPU `comm.get_local_rank()`.
        fp16_compression: compress gradients to fp16 for the all-reduce (CUDA only).
        kwargs: DistributedDataParallel options (broadcast_buffers, find_unused_parameters).
    """
    if comm.get_world_size() == 1:
        return model
    cuda = str(device).startswith("cuda")
    if cuda:
        kwargs.setdefault("device_ids", [comm.get_local_rank()])
    if "broadcast_buffers" in kwargs and "forward_sync_buffers" in _ddp_arguments():
        # newer torch renamed it (buffers are synced at construction either way)
        kwargs["forward_sync_buffers"] = kwargs.pop("broadcast_buffers")
    ddp = DistributedDataParallel(model, **kwargs)
    if fp16_compression and cuda:
        ddp.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
    return ddp
