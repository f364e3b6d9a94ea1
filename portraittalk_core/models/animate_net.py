"""AnimateNet: the denoising UNet. A frozen base UNet plus PortraitTalk's trainable modules.

Hosted on diffusers' ``UNetMotionModel`` (the base UNet with AnimateDiff motion modules between its
layers), so diffusers ``MotionAdapter`` weights (AnimateDiff v2/v3) load into the temporal modules
as they are. Added modules:

- identity attention over the reference bank (``attn1`` processors);
- decoupled identity and audio cross-attention (``attn2`` processors);
- a structure encoder whose output is added after ``conv_in``;
- the temporal (motion) modules, whose contribution can be scaled (``motion_scale``), as can the structure
  residual's (``structure_strength``).

Hallo's layout (docs/hallo.md; config options, each default PortraitTalk's): the bank read through ``attn1``'s own
projections and the identity tokens as the only context (``reference_keys``, ``context``); a ``RegionAudioBlock``
after every spatial transformer (``audio_attention``: hooked on ``attentions[j]``, stored as the block's
``audio_blocks[j]``); per-frame motion GroupNorm, the reference pass's motion rows as a prefix of every motion
module, and no motion module in the attention-free blocks (``motion_norm``, ``motion_context``, ``motion_blocks``).

The base weights never train, so a user's own SD1.5 checkpoint or LoRA can stand in for them:
``added_state_dict()`` is everything that is ours, and the weights file holds only that.
"""

from __future__ import annotations

import functools

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from einops import rearrange, repeat
from torch import nn

from ..config import PortraitTalkConfig
from ..errors import WeightsError
from .attention import AttentionContext, DecoupledCrossAttention, IdentityAttention, transformer_attention_layers
from .audio_block import REGIONS, RegionAudioBlock, mask_level, region_audio_widths
from .motion_module import (SkippedMotionModule, drop_motion_prefix, join_motion_prefix, normalise_per_frame,
                            prefix_frames_from_bank)
from .structure import structure_encoder

ADDED_MARKERS = ("motion_modules.", ".processor.", "structure_encoder.", "audio_blocks.")


def is_added_parameter(name: str) -> bool:
    """True for AnimateNet parameters that PortraitTalk adds and trains (not the base UNet's)."""
    return any(marker in name for marker in ADDED_MARKERS)


def _zero_motion_outputs(adapter: MotionAdapter) -> None:
    # AnimateDiff starts its temporal layers at identity (zero output projection), so a fresh
    # AnimateNet makes exactly the base model's images until it is trained or loads motion weights.
    for name, module in adapter.named_modules():
        if name.endswith("proj_out") and isinstance(module, nn.Linear):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)


def split_reference_record(record: dict[str, torch.Tensor], refs: int
                           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Hallo's reading of an IdentityNet record made over ``refs`` rows a video ([reference, motion frames]):
    (bank, motion_prefix) for the AttentionContext. The bank is each video's reference row, which attn1 reads
    (hallo/models/mutual_self_attention.py:235-263); the prefix, keyed by the motion module of the same layer, holds
    all rows ((videos refs), N, C), of which the motion modules take rows 1.. of each video (:248-252,327)."""
    bank, prefix = {}, {}
    for name, recorded in record.items():
        rows = rearrange(recorded, "b (r n) c -> b r n c", r=refs)
        bank[name] = rows[:, 0]
        block, _, rest = name.partition(".attentions.")
        index, _, inner = rest.partition(".")
        if inner.startswith("transformer_blocks.0."):  # the transformer's first block hands its rows on
            prefix[f"{block}.motion_modules.{index}"] = rearrange(rows, "b r n c -> (b r) n c")
    return bank, prefix


class AnimateNet(nn.Module):
    def __init__(self, config: PortraitTalkConfig, base_unet: UNet2DConditionModel | None = None):
        super().__init__()
        base_unet = base_unet if base_unet is not None else UNet2DConditionModel(**config.unet)
        adapter = MotionAdapter(**config.motion)
        _zero_motion_outputs(adapter)
        self.unet = UNetMotionModel.from_unet2d(base_unet, adapter)
        self.structure_encoder = structure_encoder(self.unet.config.block_out_channels[0],
                                                   config.structure_channels, config.structure_input_channels)
        shared_keys = config.reference_keys == "denoiser"
        tiled_bank = config.reference_frames == "tiled"
        decoupled_audio = config.audio_attention == "decoupled"
        processors = dict(self.unet.attn_processors)  # motion modules keep theirs
        for name, layer in transformer_attention_layers(self.unet).items():
            processors[f"{name}.processor"] = (
                IdentityAttention(name, layer, shared=shared_keys, tiled_bank=tiled_bank) if name.endswith("attn1")
                else DecoupledCrossAttention(name, layer, audio=decoupled_audio, identity=config.context == "text"))
        self.unet.set_attn_processor(processors)
        self.motion_scale = 1.0
        self.structure_strength = 1.0   # weight of the structure residual, as ComfyUI's structure patch has it
        self._structure_residual: torch.Tensor | None = None
        self._context: AttentionContext | None = None
        self._motion_inputs: dict[int, torch.Tensor] = {}  # a prefixed module's own frames, for _scale_motion
        self.unet.conv_in.register_forward_hook(self._add_structure)
        self._hallo_layout(config)
        for module in self._motion_modules():
            module.register_forward_hook(self._scale_motion)
        self.freeze_base()

    def _blocks(self) -> dict[str, nn.Module]:
        """The UNet's blocks by their names in its state dict."""
        return {**{f"down_blocks.{i}": b for i, b in enumerate(self.unet.down_blocks)}, "mid_block": self.unet.mid_block,
                **{f"up_blocks.{i}": b for i, b in enumerate(self.unet.up_blocks)}}

    def _hallo_layout(self, config: PortraitTalkConfig) -> None:
        """Hallo's per-block differences, each where its config option asks for it (nothing at the defaults)."""
        channels = tuple(self.unet.config.block_out_channels)
        # SD1.5's attention_head_dim is, in diffusers' naming quirk, the number of heads (8), as for Hallo's blocks.
        heads = config.unet["attention_head_dim"]
        for block_name, block in self._blocks().items():
            has_attention = hasattr(block, "attentions")
            if hasattr(block, "motion_modules"):
                if config.motion_blocks == "attention" and not has_attention:
                    block.motion_modules = nn.ModuleList(SkippedMotionModule() for _ in block.motion_modules)
                elif config.motion_norm == "frame":
                    for module in block.motion_modules:
                        normalise_per_frame(module)
                if config.motion_context == "reference_prefix" and has_attention:
                    for j, module in enumerate(block.motion_modules):
                        name = f"{block_name}.motion_modules.{j}"
                        module.register_forward_pre_hook(functools.partial(self._join_prefix, name), with_kwargs=True)
                        # Before any other forward hook (_scale_motion), so those see the clip's frames only.
                        module.register_forward_hook(self._drop_prefix, prepend=True)
            if config.audio_attention == "region_blocks" and has_attention:
                widths = [region_audio_widths(block_name, j, channels) for j in range(len(block.attentions))]
                block.audio_blocks = nn.ModuleList(
                    RegionAudioBlock(width, heads, inner // heads, config.cross_attention_dim,
                                     config.unet.get("norm_num_groups", 32)) for width, inner in widths)
                level = mask_level(block_name, len(channels))
                for transformer, audio_block in zip(block.attentions, block.audio_blocks):
                    transformer.register_forward_hook(functools.partial(self._region_audio, audio_block, level))

    # -- module bookkeeping -------------------------------------------------------------------
    def _motion_modules(self) -> list[nn.Module]:
        blocks = [*self.unet.down_blocks, self.unet.mid_block, *self.unet.up_blocks]
        return [m for block in blocks if hasattr(block, "motion_modules") for m in block.motion_modules]

    def freeze_base(self) -> None:
        for name, param in self.named_parameters():
            param.requires_grad_(is_added_parameter(name))

    def randomise_zero_outputs(self, std: float = 0.02) -> None:
        """Random values for the added modules' zero-initialised outputs (temporal and structure), so that
        a model with random weights exercises every path: for tests, benchmarks and smoke files only."""
        with torch.no_grad():
            for param in self.parameters():
                if param.requires_grad and param.abs().sum() == 0:
                    nn.init.normal_(param, std=std)

    def added_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if is_added_parameter(k)}

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not is_added_parameter(k)}

    def load_motion_adapter(self, adapter: MotionAdapter) -> None:
        """Initialise the temporal modules from diffusers MotionAdapter weights (AnimateDiff v2/v3)."""
        ours = {k: v.shape for k, v in self.unet.state_dict().items() if "motion_modules." in k}
        theirs = adapter.state_dict()  # MotionAdapter names its modules as UNetMotionModel does
        missing = [k for k in ours if k not in theirs]
        wrong = [f"{k}: ours {tuple(ours[k])}, adapter {tuple(theirs[k].shape)}"
                 for k in ours if k in theirs and theirs[k].shape != ours[k]]
        if missing or wrong:
            raise WeightsError(
                "the motion adapter does not fit this model's temporal modules: "
                + "; ".join((wrong + [f"missing {k}" for k in missing])[:3]),
                "use an AnimateDiff v2/v3 MotionAdapter made for SD1.5 (or the same config as the model)")
        self.unet.load_motion_modules(adapter)

    # -- hooks ---------------------------------------------------------------------------------
    def _region_audio(self, audio_block: RegionAudioBlock, level: int, module, inputs, output):
        # After the spatial transformer, before the motion module (hallo/models/unet_3d_blocks.py:724-733).
        ctx = self._context
        if ctx is None or ctx.audio_tokens is None or ctx.region_masks is None:
            raise ValueError("this model's audio blocks need audio tokens and region masks in the AttentionContext")
        hidden = output[0] if isinstance(output, tuple) else output.sample
        masks = {region: ctx.region_masks[region][level] for region in REGIONS}
        out = audio_block(hidden, ctx.audio_tokens.to(hidden.dtype), masks, ctx.region_weights)
        return (out,) + tuple(output[1:]) if isinstance(output, tuple) else type(output)(sample=out)

    def _join_prefix(self, name: str, module, args, kwargs):
        ctx = self._context
        if ctx is None or ctx.motion_prefix is None or name not in ctx.motion_prefix:
            raise ValueError(f"this model's motion modules need the reference pass's motion rows ({name})")
        hidden = args[0] if args else kwargs["hidden_states"]
        # UNetMotionModel's mid block passes num_frames positionally (its 5th argument), the others by name.
        num_frames = kwargs.get("num_frames", args[4] if len(args) > 4 else 1)
        videos = hidden.shape[0] // num_frames
        prefix = prefix_frames_from_bank(ctx.motion_prefix[name], videos, *hidden.shape[-2:])
        prefix_frames = prefix.shape[0] // videos
        self._motion_inputs[id(module)] = (hidden, videos, prefix_frames)
        return (join_motion_prefix(hidden, prefix, num_frames),), {"num_frames": num_frames + prefix_frames}

    def _drop_prefix(self, module, inputs, output):
        _, videos, prefix_frames = self._motion_inputs[id(module)]
        return drop_motion_prefix(output, videos, prefix_frames)

    def _add_structure(self, module, inputs, output):
        if self._structure_residual is None:
            return output
        if self.structure_strength == 1.0:
            return output + self._structure_residual
        return output + self.structure_strength * self._structure_residual

    def _scale_motion(self, module, inputs, output):
        # A prefixed module's inputs hold the prefix too; its own frames were kept by _join_prefix.
        stashed = self._motion_inputs.pop(id(module), None)
        if self.motion_scale == 1.0:
            return output
        hidden = inputs[0] if stashed is None else stashed[0]
        return hidden + self.motion_scale * (output - hidden)

    # -- forward -------------------------------------------------------------------------------
    def encode_structure(self, structure: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(videos, 4, H, W) or (videos, 4, F, H, W) in [0, 1] -> residual (videos * F, C0, h, w)."""
        if structure.ndim == 4:
            return repeat(self.structure_encoder(structure), "v c h w -> (v f) c h w", f=num_frames)
        return self.structure_encoder(rearrange(structure, "v c f h w -> (v f) c h w"))

    def forward(self, latents: torch.Tensor, timestep, text_embeds: torch.Tensor,
                context: AttentionContext | None = None, structure: torch.Tensor | None = None,
                structure_residual: torch.Tensor | None = None) -> torch.Tensor:
        """latents (videos, C, F, h, w); text_embeds (videos, T, D) -> noise (videos, C, F, h, w).

        ``structure_residual``: the encoder's output already made, (videos, C0, F, h, w), instead of ``structure``
        (Hallo's unconditional rows get zeros, not the encoding of anything: face_animate.py:339-343)."""
        frames = latents.shape[2]
        context = context or AttentionContext()
        context.num_frames = frames
        if structure_residual is not None:
            self._structure_residual = rearrange(structure_residual.to(latents.dtype), "v c f h w -> (v f) c h w")
        else:
            self._structure_residual = (None if structure is None
                                        else self.encode_structure(structure.to(latents.dtype), frames))
        self._context = context
        try:
            return self.unet(
                latents, timestep,
                encoder_hidden_states=repeat(text_embeds, "v t d -> (v f) t d", f=frames),
                cross_attention_kwargs={"portraittalk": context},
            ).sample
        finally:
            self._structure_residual = None
            self._context = None
            self._motion_inputs.clear()
