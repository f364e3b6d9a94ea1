"""Model configuration as data.

One ``PortraitTalkConfig`` describes every size of the model: the real one on a Stable Diffusion 1.5
backbone (``sd15``) and a tiny one for tests and quick runs (``tiny``). Both are built by the same
code; only these numbers differ. The config travels inside every weights file (see ``weights.py``),
so a file always rebuilds the network it was saved from.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError, WeightsError

CONFIG_VERSION = 1


@dataclass
class PortraitTalkConfig:
    name: str
    # UNet2DConditionModel kwargs shared by the backbone UNet, IdentityNet and AnimateNet's base.
    unet: dict[str, Any]
    # MotionAdapter kwargs for AnimateNet's temporal modules (AnimateDiff layout).
    motion: dict[str, Any]
    # AutoencoderKL kwargs and CLIPTextConfig kwargs: used only to build a backbone from scratch
    # (tiny tests, the embedded demo); a real SD1.5 backbone brings its own.
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    resolution: int = 512
    fps: float = 25.0
    clip_frames: int = 16        # frames denoised together, motion frames included
    motion_frames: int = 4       # frames of the previous clip that condition the next
    identity_tokens: int = 4     # K: tokens per reference face embedding
    audio_tokens: int = 8        # M: tokens per video frame
    audio_window: int = 2        # each frame sees audio features of +-window neighbouring frames
    audio_front_end: str = "wav2vec2"   # "wav2vec2" | "logmel"
    audio_layers: int = 13       # hidden states per audio feature (wav2vec2-base: 12 layers + embeddings)
    audio_dim: int = 768
    head_motion_channels: int = 0       # SpeechHeadMotion's width (models/head_pose.py); 0: no head motion from speech
    face_encoder: str = "arcface"       # "arcface" (insightface) | "builtin" (small CNN in the weights file)
    face_embed_dim: int = 512
    face_encoder_size: int = 112 # input side of the builtin face encoder
    structure_channels: tuple[int, ...] = (16, 32, 96, 256)
    face_fraction: float = 0.35  # eyes-to-chin share of the frame height: head, hair and shoulders in view
    region: str = "face"         # what generation redraws by default: "face" (whole frames) or "mouth" (lip sync)
    restyle_scale: float = 7.5   # text guidance of the restyle step (GenerationSettings.restyle), by default
    audio_scale: float = 3.5     # audio guidance by default (GenerationSettings.audio_scale; chosen per model on val)
    tokenizer: str = "byte_level"       # a backbone trained here: tokenizers.TOKENIZERS (SD1.5 brings CLIP's)
    version: int = CONFIG_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        # JSON has no tuples: normalise so a config read back from a file equals the one saved.
        for name in ("unet", "motion", "vae", "text_encoder"):
            setattr(self, name, {k: tuple(v) if isinstance(v, list) else v for k, v in getattr(self, name).items()})
        self.structure_channels = tuple(self.structure_channels)

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet["cross_attention_dim"])

    @property
    def latent_channels(self) -> int:
        return int(self.unet.get("in_channels", 4))

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PortraitTalkConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise WeightsError(f"the model config stored in the weights file is not valid JSON ({err})",
                               "re-save the weights with this version of portraittalk") from err
        if data.get("version", 0) > CONFIG_VERSION:
            raise WeightsError(f"the weights file has config version {data['version']}, newer than this "
                               f"portraittalk understands ({CONFIG_VERSION})", "update portraittalk")
        if not isinstance(data, dict):
            raise WeightsError(f"the model config stored in the weights file is a JSON {type(data).__name__}, "
                               "not an object", "re-save the weights with this version of portraittalk")
        fields = dataclasses.fields(cls)
        required = [f.name for f in fields
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise WeightsError(f"the model config stored in the weights file lacks {', '.join(missing)}",
                               "re-save the weights with this version of portraittalk (train or save_model), "
                               "or use the file as it was released")
        known = {f.name for f in fields}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes) -> "PortraitTalkConfig":
        return dataclasses.replace(self, **changes)


def sd15() -> PortraitTalkConfig:
    """Stable Diffusion 1.5 shapes, AnimateDiff v2/v3 motion modules, wav2vec2-base, ArcFace."""
    return PortraitTalkConfig(
        name="sd15",
        unet=dict(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
        ),
        motion=dict(
            block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2,
            motion_mid_block_layers_per_block=1, motion_num_attention_heads=8,
            motion_norm_num_groups=32, motion_max_seq_length=32, use_motion_mid_block=True,
        ),
        vae=dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        ),
        text_encoder=dict(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
        ),
        resolution=512, clip_frames=16, motion_frames=4, identity_tokens=4, audio_tokens=8,
        audio_front_end="wav2vec2", audio_layers=13, audio_dim=768, face_encoder="arcface",
    )


def tiny() -> PortraitTalkConfig:
    """The smallest model that exercises every code path: for tests and CPU smoke runs."""
    return PortraitTalkConfig(
        name="tiny",
        unet=dict(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            # 32 norm groups and 8 heads, as in SD1.5: ComfyUI's UNet and VAE hard-code both, so the tiny
            # model runs in the ComfyUI host too.
            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
        ),
        motion=dict(
            block_out_channels=(32, 64), motion_layers_per_block=1,
            motion_mid_block_layers_per_block=1, motion_num_attention_heads=2,
            motion_norm_num_groups=8, motion_max_seq_length=32, use_motion_mid_block=True,
        ),
        vae=dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=64,
            block_out_channels=(32, 32, 32, 32), norm_num_groups=32,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        ),
        text_encoder=dict(
            vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
        ),
        resolution=64, clip_frames=8, motion_frames=2, identity_tokens=2, audio_tokens=2,
        audio_front_end="logmel", audio_layers=1, audio_dim=80, face_encoder="builtin",
        face_encoder_size=32, structure_channels=(8, 8, 16, 16),
    )


def demo() -> PortraitTalkConfig:
    """The embedded demo model: tiny's networks on a VAE that downsamples 4x, not 8x, so that at 64 px the
    mouth spans a few latent cells (at 8x, with a small VAE, it was one cell and lip shapes were lost).
    64 channels at every level: ComfyUI's VAE hard-codes 32 norm groups, and with 32 channels those are
    per-channel (instance) norms that erase flat colours; at 400 steps 64 channels halved the colour error."""
    base = tiny()
    return base.replace(
        name="demo",
        vae=dict(base.vae, block_out_channels=(64, 64, 64), down_block_types=("DownEncoderBlock2D",) * 3,
                 up_block_types=("UpDecoderBlock2D",) * 3),
        unet=dict(base.unet, sample_size=16),
        structure_channels=(8, 16, 16),
        # Byte by byte, 77 positions hold only the first half of a caption (never the background); whole words hold
        # all of it (tokenizers.py).
        tokenizer="caption_words",
        # Trained in minutes on a CPU, it cannot draw whole frames that hold together (see docs/demo_model.md,
        # "Region mouth, and training options"); redrawing only the mouth region of the photo, it makes steady
        # lip-synced video.
        region="mouth",
        # The head moves with the speech (models/head_pose.py), as the procedural faces' heads do.
        head_motion_channels=64,
        # The most audio guidance whose face holds as still as a still face's, on val (docs/demo_model.md, figures).
        audio_scale=9.0,
        # The restyle guidance that found the most asked backgrounds on val (docs/demo_model.md, figures).
        restyle_scale=5.0,
    )


PRESETS = {"sd15": sd15, "tiny": tiny, "demo": demo}


def preset(name: str) -> PortraitTalkConfig:
    if name not in PRESETS:
        raise InputError(f"unknown model config '{name}'", f"use one of: {', '.join(PRESETS)}")
    return PRESETS[name]()
