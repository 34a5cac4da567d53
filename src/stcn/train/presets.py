"""The paper's training stages and the synthetic stage, as overridable presets."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (written to ``run_dir/config.yaml``)."""

    stage: str = "synthetic"
    model: str = "stcn"  # a stcn.model.PRESETS name
    iterations: int = 300_000  # where the run stops
    schedule_length: int | None = None  # the length the lr steps / curriculum refer to (None: iterations)
    batch_size: int = 4
    lr: float = 1e-5
    weight_decay: float = 1e-7
    lr_steps: tuple[int, ...] = (250_000,)
    lr_gamma: float = 0.1
    crop: int = 384
    clip_frames: int = 3  # frames per training clip (the paper's 3); longer only for the generated-video stages
    single_object: bool = False
    bootstrap_start: int = 20_000
    bootstrap_end: int = 70_000
    bootstrap_top_p: float = 0.15
    # max_skip curriculum: (fraction of training at which it takes effect, max skip)
    skip_curriculum: tuple[tuple[float, int], ...] = ((0.0, 5), (0.1, 10), (0.2, 15), (0.3, 20), (0.4, 25), (0.9, 5))
    train_bn: bool = False  # the paper freezes BatchNorm statistics (ImageNet-pretrained backbones)
    pretrained_backbones: bool = True
    amp: bool = True  # CUDA only
    bf16: bool = False
    seed: int = 14159265
    log_every: int = 50
    image_every: int = 1000
    save_every: int = 1000
    keep_checkpoints: int = 3
    datasets: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_steps"] = list(self.lr_steps)
        d["skip_curriculum"] = [list(x) for x in self.skip_curriculum]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["lr_steps"] = tuple(d.get("lr_steps", ()))
        d["skip_curriculum"] = tuple(tuple(x) for x in d.get("skip_curriculum", ()))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def max_skip(self, it: int) -> int:
        skip = self.skip_curriculum[0][1]
        length = self.schedule_length or self.iterations
        for fraction, value in self.skip_curriculum:
            if it >= fraction * length:
                skip = value
        return skip

    def override(self, **changes) -> "TrainConfig":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _scaled(iterations: int, *points: int, reference: int) -> tuple[int, ...]:
    return tuple(int(p * iterations / reference) for p in points)


STAGES: dict[str, TrainConfig] = {
    # stage 0: static images deformed into clips, single object, batch 8, 300k, decay at 150k
    "0": TrainConfig(stage="0", iterations=300_000, batch_size=8, lr_steps=(150_000,), single_object=True),
    # stage 1: BL30K, batch 4, 500k, decay at 400k; max skip falls back to 5 at 80 %
    "1": TrainConfig(stage="1", iterations=500_000, batch_size=4, lr_steps=(400_000,),
                     skip_curriculum=((0.0, 5), (0.1, 10), (0.2, 15), (0.3, 20), (0.4, 25), (0.8, 5))),
    # stage 2: DAVIS + YouTube-VOS after BL30K, batch 4, 300k, decay at 250k
    "2": TrainConfig(stage="2", iterations=300_000, batch_size=4, lr_steps=(250_000,)),
    # stage 3: DAVIS + YouTube-VOS after stage 0, batch 4, 150k, decay at 125k
    "3": TrainConfig(stage="3", iterations=150_000, batch_size=4, lr_steps=(125_000,)),
    # synthetic videos from the generator: no files, no pretrained weights; trains from scratch on a
    # CPU, so BatchNorm statistics are learnt and the learning rate is higher.
    "synthetic": TrainConfig(
        stage="synthetic", model="small", iterations=6000, batch_size=4, lr=2e-4, lr_steps=(4500,), crop=192,
        bootstrap_start=1000, bootstrap_end=3000, train_bn=True, pretrained_backbones=False,
        skip_curriculum=((0.0, 3), (0.2, 5), (0.4, 8), (0.9, 5)), log_every=20, image_every=500,
        save_every=250,
    ),
    # The built-in real-footage model (docs/demo-model.md): the small network, fine-tuned from the synthetic
    # demo model on CPU, first on real photos with teacher masks deformed into clips (the paper's stage 0
    # on our own static set), then on synthetic video with real appearance (real cutouts on real photos).
    "real-static": TrainConfig(
        stage="real-static", model="small", iterations=800, batch_size=4, lr=1e-4, lr_steps=(600,), crop=160,
        bootstrap_start=0, bootstrap_end=200, train_bn=True, pretrained_backbones=False, log_every=20,
        image_every=200, save_every=100,
    ),
    "real-video": TrainConfig(
        stage="real-video", model="small", iterations=4000, batch_size=4, lr=1e-4, lr_steps=(3000,), crop=160,
        bootstrap_start=0, bootstrap_end=500, train_bn=True, pretrained_backbones=False,
        skip_curriculum=((0.0, 3), (0.2, 5), (0.4, 8), (0.9, 5)), log_every=20, image_every=500,
        save_every=100,
    ),
    # Your own videos (--data DIR, stcn.data.finetune_set) from trained weights (--load-network): the
    # network preset is the checkpoint's (stcn.train.finetune), not this one. A short schedule at the
    # paper's lr (half the synthetic stage's / 20 for the small model), BatchNorm frozen whatever the
    # model: a handful of videos in batches of 4 gives poor statistics, and the loaded ones are good.
    # Max skip stays low (sparse annotations are counted in video frames, see finetune_set).
    "finetune": TrainConfig(
        stage="finetune", model="stcn", iterations=2000, batch_size=4, lr=1e-5, lr_steps=(1500,), crop=384,
        bootstrap_start=0, bootstrap_end=0, train_bn=False, pretrained_backbones=False,
        skip_curriculum=((0.0, 5), (0.5, 10), (0.9, 5)), log_every=20, image_every=200, save_every=100,
    ),
}


def stage_config(stage: str, *, schedule_length: int | None = None, **overrides) -> TrainConfig:
    """The preset of ``stage`` with ``overrides`` (None values ignored).

    The schedule (lr steps, bootstrap warm-up, max-skip curriculum) is the preset's, whatever
    ``iterations`` (the stopping point) is, so that a run stopped early and resumed follows the same
    schedule as an uninterrupted one. ``schedule_length`` rescales the schedule to a run of that length
    (and makes it the default ``iterations``).
    """
    if stage not in STAGES:
        raise KeyError(stage)
    base = STAGES[stage]
    ref = base.iterations
    length = schedule_length or ref
    if length != ref:
        overrides.setdefault("lr_steps", _scaled(length, *base.lr_steps, reference=ref))
        overrides.setdefault("bootstrap_start", _scaled(length, base.bootstrap_start, reference=ref)[0])
        overrides.setdefault("bootstrap_end", _scaled(length, base.bootstrap_end, reference=ref)[0])
    if overrides.get("iterations") is None:
        overrides["iterations"] = length
    return base.override(schedule_length=length, **overrides)
