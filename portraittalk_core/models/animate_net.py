"""AnimateNet: the denoising UNet. A frozen base UNet plus PortraitTalk's trainable modules.

Hosted on diffusers' ``UNetMotionModel`` (the base UNet with AnimateDiff motion modules between its
layers), so diffusers ``MotionAdapter`` weights (AnimateDiff v2/v3) load into the temporal modules
as they are. Added modules:

- identity attention over the reference bank (``attn1`` processors);
- decoupled identity and audio cross-attention (``attn2`` processors);
- a structure encoder whose output is added after ``conv_in``;
- the temporal (motion) modules, whose contribution can be scaled (``motion_scale``), as can the structure
  residual's (``structure_strength``).

The base weights never train, so a user's own SD1.5 checkpoint or LoRA can stand in for them:
``added_state_dict()`` is everything that is ours, and the weights file holds only that.
"""

from __future__ import annotations

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from einops import rearrange, repeat
from torch import nn

from ..config import PortraitTalkConfig
from ..errors import WeightsError
from .attention import AttentionContext, DecoupledCrossAttention, IdentityAttention, transformer_attention_layers
from .structure import structure_encoder

ADDED_MARKERS = ("motion_modules.", ".processor.", "structure_encoder.")


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


class AnimateNet(nn.Module):
    def __init__(self, config: PortraitTalkConfig, base_unet: UNet2DConditionModel | None = None):
        super().__init__()
        base_unet = base_unet if base_unet is not None else UNet2DConditionModel(**config.unet)
        adapter = MotionAdapter(**config.motion)
        _zero_motion_outputs(adapter)
        self.unet = UNetMotionModel.from_unet2d(base_unet, adapter)
        self.structure_encoder = structure_encoder(self.unet.config.block_out_channels[0],
                                                   config.structure_channels)
        processors = dict(self.unet.attn_processors)  # motion modules keep theirs
        for name, layer in transformer_attention_layers(self.unet).items():
            processors[f"{name}.processor"] = (IdentityAttention(name, layer) if name.endswith("attn1")
                                               else DecoupledCrossAttention(name, layer, audio=True))
        self.unet.set_attn_processor(processors)
        self.motion_scale = 1.0
        self.structure_strength = 1.0   # weight of the structure residual, as ComfyUI's structure patch has it
        self._structure_residual: torch.Tensor | None = None
        self.unet.conv_in.register_forward_hook(self._add_structure)
        for module in self._motion_modules():
            module.register_forward_hook(self._scale_motion)
        self.freeze_base()

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
    def _add_structure(self, module, inputs, output):
        if self._structure_residual is None:
            return output
        if self.structure_strength == 1.0:
            return output + self._structure_residual
        return output + self.structure_strength * self._structure_residual

    def _scale_motion(self, module, inputs, output):
        if self.motion_scale == 1.0:
            return output
        hidden = inputs[0]
        return hidden + self.motion_scale * (output - hidden)

    # -- forward -------------------------------------------------------------------------------
    def encode_structure(self, structure: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(videos, 4, H, W) or (videos, 4, F, H, W) in [0, 1] -> residual (videos * F, C0, h, w)."""
        if structure.ndim == 4:
            return repeat(self.structure_encoder(structure), "v c h w -> (v f) c h w", f=num_frames)
        return self.structure_encoder(rearrange(structure, "v c f h w -> (v f) c h w"))

    def forward(self, latents: torch.Tensor, timestep, text_embeds: torch.Tensor,
                context: AttentionContext | None = None, structure: torch.Tensor | None = None
                ) -> torch.Tensor:
        """latents (videos, C, F, h, w); text_embeds (videos, T, D) -> noise (videos, C, F, h, w)."""
        frames = latents.shape[2]
        context = context or AttentionContext()
        context.num_frames = frames
        self._structure_residual = (None if structure is None
                                    else self.encode_structure(structure.to(latents.dtype), frames))
        try:
            return self.unet(
                latents, timestep,
                encoder_hidden_states=repeat(text_embeds, "v t d -> (v f) t d", f=frames),
                cross_attention_kwargs={"portraittalk": context},
            ).sample
        finally:
            self._structure_residual = None
