"""The settings of one training run (``portraittalk train``), and the learning-rate curve they give."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import PortraitTalkConfig, preset
from ..errors import InputError


@dataclass
class TrainSettings:
    stage: int | str                    # "vae", "decoder", "text", "base", 1, 2 or "motion"
    data: str
    out: str
    config: str | PortraitTalkConfig = "tiny"   # a preset's name, or the config itself
    # weights to start from (stage 2: stage 1's output; motion: stage 2's); a converted file of another config
    # warm-starts stage 1 or 2 of ``config`` (weights.warm_start)
    init: str | None = None
    backbone: str | None = None         # backbone file or folder; none: a random one of the config's shapes
    steps: int = 1000
    batch_size: int = 4
    learning_rate: float = 1e-4
    frames: int = 8                     # stage 2 and motion clip length
    motion_frames: int = 2
    seed: int = 0
    mixed_precision: str = "no"         # no | fp16 | bf16
    gradient_checkpointing: bool = False
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    log_every: int = 10
    drop_text: float = 0.1
    drop_identity: float = 0.1
    drop_audio: float = 0.1
    masked_weight: float = 2.0
    noise_offset: float = 0.0           # base, 1, 2: offset noise (see Trainer.training_noise)
    text_encoder_lr_scale: float = 1.0  # base: the text encoder's learning rate as a share of the UNet's (0: frozen)
    stills: str | None = None           # vae, decoder, text, base, 1: a stills file (synth/stills.py) mixed with the frames
    mouth_weight: float = 1.0
    lr_schedule: str = "constant"       # constant | cosine
    warmup_steps: int = 0
    extra: dict = field(default_factory=dict)


def model_config(settings: TrainSettings) -> PortraitTalkConfig:
    """The config of the model a run trains: ``settings.config``, a preset's name or a PortraitTalkConfig."""
    return settings.config if isinstance(settings.config, PortraitTalkConfig) else preset(settings.config)


def learning_rate_at(step: int, settings: TrainSettings) -> float:
    """Linear warm-up from 1 / ``warmup_steps`` (not 0: no step is wasted), times a constant or a cosine decay to 0
    at ``settings.steps`` that starts at step 0. diffusers' ``get_cosine_schedule_with_warmup`` (and its constant
    one) is another curve: it starts at 0 and begins the cosine after the warm-up, so it would not retrain the
    demo recipe's stages as they were trained."""
    warmup = min(1.0, (step + 1) / settings.warmup_steps) if settings.warmup_steps else 1.0
    if settings.lr_schedule == "constant":
        return settings.learning_rate * warmup
    if settings.lr_schedule == "cosine":
        progress = min(1.0, step / max(1, settings.steps))
        return settings.learning_rate * warmup * 0.5 * (1 + math.cos(math.pi * progress))
    raise InputError(f"unknown learning-rate schedule '{settings.lr_schedule}'", "use constant or cosine")
