"""Multi-process training (``torchrun --nproc_per_node N -m stcn.cli train ...``).

:func:`wrap_distributed` turns a :class:`~stcn.train.trainer.Trainer` built in each process into one
member of a DistributedDataParallel run:

* the process group comes from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...),
  with NCCL on GPUs and Gloo on CPUs;
* the trainer's ``module`` becomes a DDP wrapper around a small module whose forward is
  :func:`stcn.train.clip_pass.forward_clip` of the network, so gradients are averaged over the
  processes (each rank's loss is its samples' mean, so the average is the global batch's mean);
* BatchNorm layers that are trained (``train_bn``: the synthetic stage) use the statistics of the
  global batch (``nn.SyncBatchNorm`` on GPUs, an all-reduce implementation on CPUs), so N processes
  with batch B train exactly like one process with batch N*B; the paper's stages freeze BatchNorm;
* the logged statistics are the global ones (losses averaged over ranks, IoU from summed counts).

Rank r of W reads sample indices ``(it * W + r) * B ...`` (the trainer's sampler): together the
ranks read the indices one process with batch ``W * B`` reads, in the same order. Rank 0 alone
writes logs and checkpoints.
"""
from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist
from torch import nn

from stcn.train.clip_pass import forward_clip


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_process_group(device: torch.device) -> None:
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)


class ClipForward(nn.Module):
    """``forward(*clip)`` = :func:`forward_clip` of ``network`` (what DDP wraps)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, *args: torch.Tensor) -> dict[str, torch.Tensor]:
        return forward_clip(self.network, *args)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the incoming gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training mode inside a process group, normalises with the mean and
    variance of the whole distributed batch (differentiably), like ``nn.SyncBatchNorm``, which
    supports GPUs only. Same parameters, buffers and state-dict keys as BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats is not None and dist.is_available()
                and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        xf = x.float()
        count = torch.tensor([x.numel() // channels], dtype=torch.float32, device=x.device)
        count = _AllReduceSum.apply(count)
        mean = _AllReduceSum.apply(xf.sum(dim=(0, 2, 3))) / count
        centred = xf - mean.view(1, -1, 1, 1)
        var = _AllReduceSum.apply(centred.pow(2).sum(dim=(0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                n = float(count)
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                unbiased = var.detach() * (n / max(n - 1, 1))
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)


def convert_batchnorm(module: nn.Module, *, cuda: bool) -> nn.Module:
    """Replace every BatchNorm2d of ``module`` (in place) by its global-batch version, sharing the
    parameter and buffer tensors (an optimizer built on them stays valid)."""
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_batchnorm(child, cuda=cuda)
    return module


def _global_stats(stats: dict[str, float], device: torch.device) -> dict[str, float]:
    """Losses and the bootstrap fraction averaged over ranks; IoU counts summed, IoU recomputed."""
    keys = sorted(stats)
    values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    world = dist.get_world_size()
    out = {}
    for k, v in zip(keys, values.tolist()):
        out[k] = v if k.startswith("iou/") else v / world
    out["iou"] = (out["iou/i"] + 1) / (out["iou/u"] + 1)
    if "iou/sec_i" in out:
        out["sec_iou"] = (out["iou/sec_i"] + 1) / (out["iou/sec_u"] + 1)
    return out


def wrap_distributed(trainer) -> object:
    """Make ``trainer`` one rank of a DDP run when ``WORLD_SIZE`` > 1 (no-op otherwise); returns it."""
    if world_size() <= 1:
        return trainer
    device = trainer.device
    init_process_group(device)
    if trainer.config.train_bn:
        convert_batchnorm(trainer.network, cuda=device.type == "cuda")
    wrapper = ClipForward(trainer.network)
    ddp = nn.parallel.DistributedDataParallel(
        wrapper, device_ids=[device.index if device.index is not None else 0] if device.type == "cuda" else None,
    )
    trainer.module = ddp
    # 1x1 convolutions' gradients may come with other (equivalent) strides than their buckets
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    step = trainer.train_step

    def train_step(batch):
        return _global_stats(step(batch), device)

    trainer.train_step = train_step
    return trainer


def shutdown(*, barrier: bool = True) -> None:
    """Leave the process group together: a rank that tears gloo down while another still talks to it
    (rank 0 writing the final checkpoint) can abort with "terminate called without an active exception"."""
    if dist.is_available() and dist.is_initialized():
        try:
            if barrier:  # only after success: a rank that died would leave the others waiting here
                dist.barrier()
        finally:
            dist.destroy_process_group()
