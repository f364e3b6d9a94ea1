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
    # -- Hallo's computation (issue 26, docs/hallo.md): each default is PortraitTalk's own behaviour -----------------
    # The cross-attention context of both UNets: "text" (CLIP text, identity and audio in decoupled branches) or
    # "identity" (the identity tokens are the whole context, plain attn2, no text path: hallo/models/image_proj.py
    # feeds both of their UNets).
    context: str = "text"
    # Keys and values of the reference bank: "own" (IdentityAttention's to_k_ref/to_v_ref) or "denoiser" (the
    # denoiser's own attn1.to_k/to_v over [frame; reference] tokens: hallo/models/mutual_self_attention.py:253-263).
    reference_keys: str = "own"
    # The bank as stored between the reference pass and the denoiser: None (as computed) or "float16" (their
    # update() casts it to float16 even in fp32 runs: mutual_self_attention.py:404,453).
    reference_bank_dtype: str | None = None
    # The reference pass's contexts: "per_video" (each video's own rows) or "tiled" (the [uncond, cond] pair
    # repeated over the rows, so row r gets cond when r is odd: mutual_self_attention.py:341-346).
    reference_context: str = "per_video"
    # Which reference row each denoiser frame's attn1 reads: "per_video" (its own video's) or "tiled" (the videos'
    # rows tiled over the (video, frame) batch, so batch row k reads video k % videos: their reader's repeat on a
    # 3-dimensional tensor, mutual_self_attention.py:235-247; with CFG's two videos the conditional video's even
    # frames read the unconditional reference row).
    reference_frames: str = "per_video"
    # IdentityNet's last layers: True keeps conv_norm_out/conv_out (stage 1 trains its noise prediction); False
    # drops them, as their reference UNet has none (hallo/models/unet_2d_condition.py:686,921).
    identity_net_output: bool = True
    # Motion-module GroupNorm: "clip" (diffusers, over all frames) or "frame" (AnimateDiff v2 as first written,
    # hallo/models/motion_module.py:284-290).
    motion_norm: str = "clip"
    # What the motion modules see before the clip: "latent_frames" (nothing: our motion frames are latents of the
    # clip) or "reference_prefix" (the reference pass's motion-frame rows, prepended and dropped again:
    # hallo/models/unet_3d_blocks.py:440-490,697-748,1149-1202).
    motion_context: str = "latent_frames"
    # Which blocks run a motion module: "all" or "attention" (the attention-free down and up blocks skip theirs, as
    # their train-mode inference with checkpointing does: unet_3d_blocks.py:905-916,1376-1388).
    motion_blocks: str = "all"
    # Audio in the denoiser: "decoupled" (a branch of attn2) or "region_blocks" (a RegionAudioBlock after every
    # spatial transformer, before its motion module: unet_3d_blocks.py:357-375,586-603,1048-1065).
    audio_attention: str = "decoupled"
    # Audio projection: "mixed" (AudioProjection, layers mixed by learnt weights) or "flat" (FlatAudioProjection,
    # hallo/models/audio_proj.py) with ``audio_hidden_dim`` (0: AudioProjection's own default width).
    audio_projection: str = "mixed"
    audio_hidden_dim: int = 0
    # The structure encoder's input channels (4: placement + landmarks; Hallo's face locator: an RGB face box).
    structure_input_channels: int = 4
    # How wav2vec2's features reach the video rate: "resampled" (the 50 Hz hidden states averaged over each frame,
    # audio/features.frame_windows) or "encoder_input" (Hallo: the CNN features interpolated to the frame count
    # before the encoder, layers 1.. only, the audio padded with silence to whole clips: audio_processor.py:104-125).
    audio_frames: str = "resampled"
    # "encoder_input" audio read in pieces of this many seconds, each encoded on its own (Hallo2's long mode,
    # use_cut: hallo2 scripts/inference_long.py:228-253); 0: the whole audio in one pass.
    audio_segment_seconds: float = 0.0
    # Hallo2's long mode (use_mask, mask_rate: inference_long.py:404-418): this share of the motion frames' pixels
    # outside the face box is zeroed before the reference pass, drawn once a clip before its noise; 0: none.
    motion_frame_drop: float = 0.0
    # What the photo gives the model: "aligned_face" (an aligned face crop, its normalised embedding and structure
    # maps: face/) or "hallo" (the whole photo resized, the raw ArcFace embedding, the face box for the structure
    # encoder and the full/face/lip region masks from mediapipe landmarks: face/hallo_regions.py).
    reference_inputs: str = "aligned_face"
    # The unconditional branch: "drop" (PortraitTalk's nested guidance skips each path) or "zero" (Hallo's: zero
    # face-locator residual, zero audio tokens, the projection of a zero face embedding, no bank:
    # hallo/animate/face_animate.py:291-298,339-343,377-378). Read by the hosts.
    uncond_inputs: str = "drop"
    # Overrides of the backbone's noise schedule (diffusers scheduler config keys); empty: the backbone's own.
    schedule: dict[str, Any] = field(default_factory=dict)
    version: int = CONFIG_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        # JSON has no tuples: normalise so a config read back from a file equals the one saved.
        for name in ("unet", "motion", "vae", "text_encoder"):
            setattr(self, name, {k: tuple(v) if isinstance(v, list) else v for k, v in getattr(self, name).items()})
        self.structure_channels = tuple(self.structure_channels)
        self.schedule = dict(self.schedule)

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


# Hallo's inference config (configs/inference/default.yaml:77-88; scripts/inference.py:185-193): DDIM on
# diffusers' plain linear betas, v-prediction, zero terminal SNR, trailing spacing, set_alpha_to_one at True.
HALLO_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
                      steps_offset=1, clip_sample=False, set_alpha_to_one=True, prediction_type="v_prediction",
                      rescale_betas_zero_snr=True, timestep_spacing="trailing")

_HALLO_OPTIONS = dict(
    context="identity", reference_keys="denoiser", reference_bank_dtype="float16", reference_context="tiled",
    reference_frames="tiled", identity_net_output=False, motion_norm="frame", motion_context="reference_prefix",
    motion_blocks="attention", audio_attention="region_blocks", audio_projection="flat", uncond_inputs="zero",
    audio_frames="encoder_input", reference_inputs="hallo", schedule=dict(HALLO_SCHEDULE),
)


def hallo() -> PortraitTalkConfig:
    """Hallo's Net (fudan-generative-vision/hallo, docs/hallo.md) at full size: SD1.5 shapes, AnimateDiff v2 motion
    modules, 16 region audio blocks, ImageProjModel(768, 512, 4), AudioProjModel(5, 12, 768, 512, 768, 32),
    FaceLocator(320) with widths (16, 32, 64, 128) on an RGB face box (scripts/inference.py:206-220); 16-frame clips
    with 2 motion frames at 512 px and 25 fps."""
    return sd15().replace(
        name="hallo", clip_frames=16, motion_frames=2, identity_tokens=4, audio_tokens=32, audio_window=2,
        audio_layers=12, audio_dim=768, audio_hidden_dim=512, face_embed_dim=512,
        structure_channels=(16, 32, 64, 128), structure_input_channels=3, **_HALLO_OPTIONS)


def hallo_tiny() -> PortraitTalkConfig:
    """Hallo's Net at the size of the golden fixtures (tests/fixtures/hallo/tiny_net.json): 4 levels of 32 channels,
    one layer per block, cross and audio width 32, 8 heads; face embedding 16 -> 4 tokens; 5 x 3 x 16 audio
    windows -> 32 -> 32 -> 4 tokens; face locator widths (8, 8, 16, 16); 64 px, 4 frames and 2 motion frames."""
    widths = (32, 32, 32, 32)
    base = tiny()
    return base.replace(
        name="hallo_tiny",
        unet=dict(base.unet, block_out_channels=widths, down_block_types=sd15().unet["down_block_types"],
                  up_block_types=sd15().unet["up_block_types"]),
        motion=dict(block_out_channels=widths, motion_layers_per_block=1, motion_mid_block_layers_per_block=1,
                    motion_num_attention_heads=8, motion_norm_num_groups=32, motion_max_seq_length=32,
                    use_motion_mid_block=True),
        resolution=64, clip_frames=4, motion_frames=2, identity_tokens=4, audio_tokens=4, audio_window=2,
        audio_front_end="wav2vec2", audio_layers=3, audio_dim=16, audio_hidden_dim=32, face_embed_dim=16,
        face_encoder="arcface", structure_channels=(8, 8, 16, 16), structure_input_channels=3, **_HALLO_OPTIONS)


def hallo2() -> PortraitTalkConfig:
    """Hallo2 (fudan-generative-vision/hallo2; docs/hallo2.md): Hallo's Net, key for key, run in its long mode: the
    audio read in 60 s pieces and a quarter of the motion frames' pixels outside the face dropped
    (configs/inference/long.yaml:20-22)."""
    return hallo().replace(name="hallo2", audio_segment_seconds=60.0, motion_frame_drop=0.25)


PRESETS = {"sd15": sd15, "tiny": tiny, "demo": demo}
# Hallo's computation: the configs of converted weights (portraittalk convert hallo --config) and of random-weight
# runs (preset()); kept out of PRESETS, PortraitTalk's own model sizes, which training and the bench offer.
HALLO_PRESETS = {"hallo": hallo, "hallo2": hallo2, "hallo_tiny": hallo_tiny}


def preset(name: str) -> PortraitTalkConfig:
    """A config by name: PortraitTalk's presets, or Hallo's (their Net's computation, for converted weights)."""
    known = {**PRESETS, **HALLO_PRESETS}
    if name not in known:
        raise InputError(f"unknown model config '{name}'", f"use one of: {', '.join(known)}")
    return known[name]()
