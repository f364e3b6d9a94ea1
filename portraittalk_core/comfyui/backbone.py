"""A Stable Diffusion backbone of any size (a diffusers folder, or the one inside a small PortraitTalk file) as
ComfyUI's native MODEL and VAE, for the small models (tiny tests, the embedded demo) that no checkpoint loader
knows. Imports ComfyUI.

The UNet is ComfyUI's own (``openaimodel.UNetModel``), built from the backbone's config and loaded with ComfyUI's
diffusers key map, so every ComfyUI sampler, patch and LoRA works on it as on any SD1.5 MODEL.
"""

from __future__ import annotations

import re

import comfy.diffusers_convert
import comfy.latent_formats
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils

from ..backbone import load_backbone
from .blocks import comfy_unet_config


def comfy_backbone(path):
    """(MODEL, VAE, the backbone itself for its text encoder) of the backbone at ``path``."""
    sd = load_backbone(path)
    return comfy_model(sd.unet, sd.vae.config.scaling_factor), comfy_vae(sd.vae), sd


def comfy_model(unet, scaling_factor: float = 0.18215) -> comfy.model_patcher.ModelPatcher:
    config = comfy_unet_config(dict(unet.config))

    class Latent(comfy.latent_formats.SD15):  # a backbone trained here has its own VAE, so its own scale
        def __init__(self):
            super().__init__(scale_factor=scaling_factor)

    class Backbone(comfy.supported_models.SD15):  # SD1.5's sampling, this UNet's shape
        unet_config = dict(config)
        unet_extra_config = {}
        latent_format = Latent

    model_config = Backbone(config)
    model = model_config.get_model({})
    key_map = comfy.utils.unet_to_diffusers(config)
    state = unet.state_dict()
    model.diffusion_model.load_state_dict({ldm: state[diff] for diff, ldm in key_map.items() if diff in state})
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def comfy_vae(vae) -> comfy.sd.VAE:
    c = vae.config
    channels = list(c.block_out_channels)
    ddconfig = {"double_z": True, "z_channels": c.latent_channels, "resolution": 256, "in_channels": c.in_channels,
                "out_ch": c.out_channels, "ch": channels[0], "ch_mult": [x // channels[0] for x in channels],
                "num_res_blocks": c.layers_per_block, "attn_resolutions": [], "dropout": 0.0}
    state = vae.state_dict()
    if len(channels) != 4:
        # ComfyUI's diffusers->LDM VAE key map numbers decoder levels as 3 - i (SD's four levels); shift
        # ours so that level i lands on len(channels) - 1 - i.
        shift = 4 - len(channels)
        state = {re.sub(r"^decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.up_blocks.{int(m[1]) + shift}.", k): v
                 for k, v in state.items()}
        state = comfy.diffusers_convert.convert_vae_state_dict(state)  # VAE() would not see these keys as diffusers
    comfy_vae = comfy.sd.VAE(sd=state, config={"params": {"ddconfig": ddconfig, "embed_dim": c.latent_channels}})
    # ComfyUI assumes SD's 8x; small backbones may downsample less (the demo model: 4x).
    comfy_vae.downscale_ratio = comfy_vae.upscale_ratio = 2 ** (len(channels) - 1)
    return comfy_vae
