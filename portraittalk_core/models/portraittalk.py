"""PortraitTalkModel: every trainable part of PortraitTalk in one module.

- ``identity_projection``: face embeddings -> identity tokens;
- ``audio_projection``: per-frame audio feature windows -> audio tokens;
- ``face_encoder``: the builtin face encoder (only when the config does not use ArcFace);
- ``identity_net``: IdentityNet (full UNet, trained in stage 1);
- ``animate_net``: AnimateNet (frozen base UNet + added modules, trained in stage 2);
- ``head_motion``: the head's movement from the speech (only when the config has ``head_motion_channels``;
  trained in stage motion).

``trainable_state_dict()`` is what a PortraitTalk weights file holds: everything except AnimateNet's
base UNet, which comes from the user's backbone.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from einops import repeat
from torch import nn

from ..config import PortraitTalkConfig
from .animate_net import AnimateNet, is_added_parameter, split_reference_record
from .face_encoder import FaceEncoder
from .flat_audio_projection import FlatAudioProjection
from .head_pose import SpeechHeadMotion
from .identity_net import IdentityNet
from .projection import AudioProjection, IdentityProjection


class PortraitTalkModel(nn.Module):
    def __init__(self, config: PortraitTalkConfig, base_unet: UNet2DConditionModel | None = None,
                 identity_from_base: bool = True):
        """``base_unet``: the backbone's UNet, AnimateNet's frozen base. IdentityNet starts as a copy of
        it (as stage-1 training does) unless ``identity_from_base`` is False, e.g. when its weights are
        about to be loaded from a file anyway."""
        super().__init__()
        self.config = config
        dim = config.cross_attention_dim
        self.identity_projection = IdentityProjection(config.face_embed_dim, dim, config.identity_tokens)
        if config.audio_projection == "flat":
            self.audio_projection = FlatAudioProjection(config.audio_layers, config.audio_dim, config.audio_window,
                                                        dim, config.audio_tokens, config.audio_hidden_dim)
        else:
            self.audio_projection = AudioProjection(config.audio_layers, config.audio_dim, config.audio_window,
                                                    dim, config.audio_tokens, config.audio_hidden_dim or None)
        self.face_encoder = (FaceEncoder(config.face_embed_dim, config.face_encoder_size)
                             if config.face_encoder == "builtin" else None)
        self.identity_net = (IdentityNet.from_backbone(base_unet, config)
                             if base_unet is not None and identity_from_base else IdentityNet.from_config(config))
        self.animate_net = AnimateNet(config, base_unet)
        self.head_motion = (SpeechHeadMotion(config.audio_layers, config.audio_dim, config.head_motion_channels)
                            if config.head_motion_channels else None)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not self.is_base_parameter(k)}

    @staticmethod
    def is_base_parameter(name: str) -> bool:
        return name.startswith("animate_net.") and not is_added_parameter(name)

    # -- Hallo's conditioning (config uncond_inputs "zero", motion_context "reference_prefix"), for both hosts ------
    def zero_uncond_face_tokens(self, embedding: torch.Tensor) -> torch.Tensor:
        """(2, K, D): the tokens of a zero face embedding (their unconditional context is the projection of zeros,
        not zeros: hallo/animate/face_animate.py:291-298), then those of ``embedding`` (1, E)."""
        return self.identity_projection(torch.cat([torch.zeros_like(embedding), embedding])[:, None])

    def reference_pass(self, latents: torch.Tensor, face_tokens: torch.Tensor
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(bank, motion prefix) of one clip: IdentityNet at t=0 over ``latents`` (1 + n, C, h, w), the photo's and
        the motion frames', once for each of the two videos with ``face_tokens`` (``zero_uncond_face_tokens``) as
        their contexts (face_animate.py:332-336,384-395), read as ``animate_net.split_reference_record`` says."""
        _, record = self.identity_net(repeat(latents, "r c h w -> v r c h w", v=2), face_tokens, None, None, 0)
        return split_reference_record(record, latents.shape[0])
