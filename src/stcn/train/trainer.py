"""The training loop: AMP, frozen or trained BatchNorm, checkpoints, resume, logging, signals.

One iteration = one batch of clips (3 frames, or ``clip_frames``) through :func:`stcn.train.clip_pass.forward_clip` and
:func:`stcn.train.losses.clip_losses`. Data items are pure functions of (seed, index) and the
iteration fixes the indices, so a resumed run sees exactly the data an uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from stcn.errors import UserError
from stcn.io.files import atomic_write
from stcn.model.input import denormalise
from stcn.model.network import PRESETS, STCN
from stcn.train.checkpoints import require_latest_checkpoint, save_checkpoint
from stcn.train.clip_pass import forward_clip
from stcn.train.losses import clip_losses
from stcn.train.presets import TrainConfig
from stcn.weights.io import save_safetensors


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite: the run stops, its last good checkpoint kept."""


class _IterationSampler(torch.utils.data.Sampler):
    """Yields the dataset indices of iterations [start, stop): rank r of W takes its share of each batch."""

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.stop, self.batch_size, self.rank, self.world = start, stop, batch_size, rank, world

    def __iter__(self):
        for it in range(self.start, self.stop):
            base = (it * self.world + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.batch_size


def build_network(config: TrainConfig) -> STCN:
    return STCN(PRESETS[config.model], single_object=config.single_object,
                pretrained_backbones=config.pretrained_backbones)


def extend_single_object_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A stage-0 state dict for the multi-object network: the value encoder's first conv gets its
    5th input channel (the others' mask) from an orthogonal init, as the original's training does."""
    out = dict(state_dict)
    w = out["value_encoder.conv1.weight"]
    if w.shape[1] == 4:
        extra = torch.empty(w.shape[0], 1, *w.shape[2:])
        torch.nn.init.orthogonal_(extra)
        out["value_encoder.conv1.weight"] = torch.cat([w, extra.to(w.dtype)], dim=1)
    return out


class Trainer:
    """Runs one training configuration in ``run_dir``.

    Args:
        config: the resolved :class:`TrainConfig`.
        dataset: yields clip dicts (see stcn.data.synthetic_clips) indexed by sample number.
        run_dir: checkpoints, config.yaml, TensorBoard logs and final.safetensors go here.
        device: torch device.
        rank, world: distributed position (rank 0 logs and saves).
        model: wrap/override the network (DDP passes its module here).
    """

    def __init__(self, config: TrainConfig, dataset: Dataset, run_dir: str | Path, *, device: str = "cpu",
                 rank: int = 0, world: int = 1, num_workers: int = 0, load_network: str | None = None) -> None:
        self.config = config
        self.dataset = dataset
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.rank, self.world = rank, world
        self.num_workers = num_workers
        torch.manual_seed(config.seed)
        self.network = build_network(config).to(self.device)
        if load_network:
            from stcn.weights.io import load_state_dict_strict, read_checkpoint

            ckpt = read_checkpoint(load_network)
            sd = ckpt.state_dict if config.single_object else extend_single_object_state(ckpt.state_dict)
            load_state_dict_strict(self.network, sd, ckpt.path)
        self.module = self.network  # what forward runs (a DDP wrapper when distributed)
        params = [p for p in self.network.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(config.lr_steps), config.lr_gamma)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and not config.bf16)
        self.iteration = 0
        self._stop_signal: int | None = None
        self._writer = None

    # ----------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "it": self.iteration,
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "config": json.dumps(self.config.to_dict()),
            "stcn_config": self.network.config.to_json(),
        }

    def resume(self) -> None:
        it, state = require_latest_checkpoint(self.run_dir)
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.iteration = it

    def save(self) -> Path | None:
        if self.rank != 0:
            return None
        return save_checkpoint(self.run_dir, self.iteration, self.state(), keep=self.config.keep_checkpoints)

    def write_config(self) -> None:
        if self.rank != 0:
            return
        import yaml

        atomic_write(self.run_dir / "config.yaml", yaml.safe_dump(self.config.to_dict(), sort_keys=False))

    def _autocast(self):
        if not self.use_amp:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.config.bf16 else torch.float16)

    def _log(self, scalars: dict[str, float], images: dict | None = None) -> None:
        if self.rank != 0:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        if self._writer:
            for k, v in scalars.items():
                self._writer.add_scalar(k, v, self.iteration)
            for k, v in (images or {}).items():
                self._writer.add_image(k, v, self.iteration)
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps({"it": self.iteration, **scalars}) + "\n")

    def _on_signal(self, signum, frame) -> None:
        self._stop_signal = signum

    # ----------------------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.config
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        self.network.train(cfg.train_bn)
        with self._autocast():
            if cfg.single_object:
                out = self.module(batch["rgb"], batch["gt"]) if self.module is not self.network else \
                    forward_clip(self.network, batch["rgb"], batch["gt"])
                losses = clip_losses(out, batch["cls_gt"], batch["gt"], self.iteration,
                                     start=cfg.bootstrap_start, end=cfg.bootstrap_end, top_p=cfg.bootstrap_top_p)
            else:
                args = (batch["rgb"], batch["gt"], batch["sec_gt"], batch["selector"])
                out = self.module(*args) if self.module is not self.network else forward_clip(self.network, *args)
                losses = clip_losses(out, batch["cls_gt"], batch["gt"], self.iteration, batch["sec_gt"],
                                     batch["selector"], start=cfg.bootstrap_start, end=cfg.bootstrap_end,
                                     top_p=cfg.bootstrap_top_p)
        loss = losses["total_loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                # .item() of the detached loss: float(loss) warns "Converting a tensor with requires_grad=True"
                f"non-finite loss ({loss.detach().item()}) at iteration {self.iteration}; "
                f"the last good checkpoint is in "
                f"{self.run_dir / 'checkpoints'}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        stats = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}
        stats["iou"] = (stats["iou/i"] + 1) / (stats["iou/u"] + 1)
        if "iou/sec_i" in stats:
            stats["sec_iou"] = (stats["iou/sec_i"] + 1) / (stats["iou/sec_u"] + 1)
        self._last = (batch, out)
        return stats

    def _images(self) -> dict:
        batch, out = self._last
        frames = denormalise(batch["rgb"][0].detach().float().cpu()).clamp(0, 1)  # (T, 3, H, W)
        gt = batch["gt"][0].float().cpu().expand(-1, 3, -1, -1)
        pred = torch.cat([batch["gt"][0, :1].float().cpu()]
                         + [out[f"mask_{i}"][:1].detach().float().cpu() for i in range(1, len(frames))])
        pred = pred.expand(-1, 3, -1, -1)
        rows = torch.cat([torch.cat(list(frames), 2), torch.cat(list(gt), 2), torch.cat(list(pred), 2)], 1)
        return {"clip/frames_gt_pred": rows}

    def fit(self, *, resume: bool = False, progress: bool = True) -> Path:
        """Train up to ``config.iterations``; returns the path of ``final.safetensors``."""
        cfg = self.config
        if resume:
            self.resume()
        self.write_config()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        loader = DataLoader(
            self.dataset, batch_size=cfg.batch_size,
            sampler=_IterationSampler(self.iteration, cfg.iterations, cfg.batch_size, self.rank, self.world),
            num_workers=self.num_workers, pin_memory=self.device.type == "cuda", drop_last=True,
            persistent_workers=False,
        )
        bar = None
        if progress and self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=cfg.iterations, initial=self.iteration, desc=f"train stage {cfg.stage}",
                       dynamic_ncols=True)
        try:
            wait_start = time.perf_counter()
            for batch in loader:
                data_time = time.perf_counter() - wait_start
                start = time.perf_counter()
                stats = self.train_step(batch)
                self.iteration += 1
                step_time = time.perf_counter() - start
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['total_loss']:.3f}", iou=f"{stats['iou']:.3f}")
                if self.iteration % cfg.log_every == 0 or self.iteration == cfg.iterations:
                    scalars = {f"loss/{k}": v for k, v in stats.items() if k.startswith(("loss", "total"))}
                    scalars.update({"iou/object1": stats["iou"], "bootstrap/p": stats["p"],
                                    "lr": self.scheduler.get_last_lr()[0],
                                    "time/seconds_per_iteration": step_time + data_time,
                                    "time/data_wait_fraction": data_time / max(step_time + data_time, 1e-9)})
                    if "sec_iou" in stats:
                        scalars["iou/object2"] = stats["sec_iou"]
                    images = self._images() if self.iteration % cfg.image_every == 0 else None
                    self._log(scalars, images)
                if self.iteration % cfg.save_every == 0:
                    self.save()
                if self._stop_signal is not None:
                    path = self.save()
                    raise KeyboardInterrupt(f"stopped by signal {self._stop_signal} at iteration "
                                            f"{self.iteration}; checkpoint {path}")
                wait_start = time.perf_counter()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if bar is not None:
                bar.close()
            if self._writer:
                self._writer.flush()
        final = self.run_dir / "final.safetensors"
        if self.rank == 0:
            self.save()
            save_safetensors(self.network.state_dict(), final, {
                "stcn_config": self.network.config.to_json(), "iterations": str(self.iteration),
                "stage": cfg.stage,
            })
        return final
