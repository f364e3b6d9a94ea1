"""IdentityNet: a UNet of the backbone's shape that turns reference images into a reference bank.

It reads the reference latents once per generation (at timestep 0, the clean image) with the prompt
and the identity tokens through decoupled cross-attention, and records, for every transformer
block, the hidden states that enter self-attention. AnimateNet's identity attention reads that bank.
Its noise prediction is used only by stage-1 training (the mask reconstruction loss).
"""

from __future__ import annotations

import copy

import torch
from diffusers import UNet2DConditionModel
from einops import repeat
from torch import nn

from ..config import PortraitTalkConfig
from .attention import AttentionContext, DecoupledCrossAttention, ReferenceRecorder, transformer_attention_layers


class IdentityNet(nn.Module):
    def __init__(self, unet: UNet2DConditionModel, config: PortraitTalkConfig | None = None):
        """``config``: Hallo's options (docs/hallo.md) where it sets them; None keeps PortraitTalk's."""
        super().__init__()
        self.unet = unet
        bank_dtype = getattr(torch, config.reference_bank_dtype) if config and config.reference_bank_dtype else None
        with_identity = config is None or config.context == "text"
        # "tiled": the pair of contexts repeated over all rows (hallo/models/mutual_self_attention.py:341-346).
        self.tiled_context = config is not None and config.reference_context == "tiled"
        processors = dict(unet.attn_processors)  # motion modules keep theirs
        for name, layer in transformer_attention_layers(unet).items():
            processors[f"{name}.processor"] = (ReferenceRecorder(name, bank_dtype) if name.endswith("attn1")
                                               else DecoupledCrossAttention(name, layer, audio=False,
                                                                            identity=with_identity))
        unet.set_attn_processor(processors)
        if config is not None and not config.identity_net_output:
            # Only the bank is used: Hallo's reference UNet has no conv_norm_out and never runs conv_out
            # (hallo/models/unet_2d_condition.py:686,921), so their file holds neither. diffusers' forward skips a
            # None conv_norm_out; an Identity conv_out returns the last features, which nobody reads.
            unet.conv_norm_out = None
            unet.conv_out = nn.Identity()

    @classmethod
    def from_config(cls, config: PortraitTalkConfig) -> "IdentityNet":
        return cls(UNet2DConditionModel(**config.unet), config)

    @classmethod
    def from_backbone(cls, base_unet: UNet2DConditionModel, config: PortraitTalkConfig | None = None
                      ) -> "IdentityNet":
        """Start from the backbone's weights, as stage-1 training does."""
        return cls(copy.deepcopy(base_unet), config)

    def forward(self, ref_latents: torch.Tensor, text_embeds: torch.Tensor, identity_tokens: torch.Tensor,
                identity_scale: torch.Tensor, timestep: torch.Tensor | int = 0
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """ref_latents (videos, refs, C, h, w); text_embeds (videos, T, D); identity_tokens (videos, K', D).

        Returns the noise prediction (videos, refs, C, h, w) and the bank {layer: (videos, refs * N, C)}. With
        ``identity_net_output`` False the "noise" is the last features, unused.
        """
        videos, refs = ref_latents.shape[:2]
        ctx = AttentionContext(num_frames=refs, identity_tokens=identity_tokens,
                               identity_scale=identity_scale, record={})
        contexts = (text_embeds.repeat(refs, 1, 1) if self.tiled_context
                    else repeat(text_embeds, "v t d -> (v r) t d", r=refs))
        noise = self.unet(
            ref_latents.flatten(0, 1), timestep,
            encoder_hidden_states=contexts,
            cross_attention_kwargs={"portraittalk": ctx},
        ).sample
        return noise.unflatten(0, (videos, refs)), ctx.record
