"""PortraitTalk Backbone Loader and Text Encode: any-size SD-style backbone (diffusers folder) as native
ComfyUI MODEL and VAE, for the small models (tiny tests, the embedded demo) that no checkpoint loader knows.

Real SD1.5 checkpoints go through ComfyUI's own loaders instead. The UNet is ComfyUI's own
(``openaimodel.UNetModel``), built from the backbone's config and loaded with ComfyUI's diffusers key map,
so every ComfyUI sampler, patch and LoRA works on it as on any SD1.5 MODEL.
"""

from __future__ import annotations

import os
import re

import comfy.diffusers_convert
import comfy.latent_formats
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..portraittalk_core.backbone import load_backbone
from ..portraittalk_core.comfy_patches import comfy_unet_config
from ..portraittalk_core.errors import WeightsError

from . import folders as pack_folders

TextEncoder = io.Custom("PORTRAITTALK_TEXT_ENCODER")


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


class BackboneLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        folders = [d for root in folder_paths.get_folder_paths("diffusers") if os.path.isdir(root)
                   for d in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, d, "unet"))]
        folders += pack_folders.files_with_backbone()
        return io.Schema(
            node_id="PortraitTalkBackboneLoader",
            display_name="PortraitTalk Backbone Loader",
            category="PortraitTalk",
            description="Loads a Stable Diffusion backbone of any size as native MODEL and VAE, plus its text "
                        "encoder: a diffusers folder from models/diffusers, or the backbone inside a small "
                        "PortraitTalk file (the embedded demo model). Use ComfyUI's checkpoint loader for SD1.5.",
            inputs=[io.Combo.Input("backbone", options=folders,
                                   tooltip="A folder in models/diffusers with unet/, vae/, text_encoder/, tokenizer/, "
                                           "or a PortraitTalk .safetensors that carries its backbone "
                                           "(portraittalk_demo.safetensors).")],
            outputs=[io.Model.Output(display_name="model", tooltip="The UNet as a native MODEL."),
                     io.Vae.Output(display_name="vae", tooltip="The VAE as a native VAE."),
                     TextEncoder.Output(display_name="text_encoder", tooltip="For PortraitTalk Text Encode.")],
        )

    @classmethod
    def execute(cls, backbone) -> io.NodeOutput:
        if backbone and backbone.endswith(".safetensors"):  # a PortraitTalk file with its backbone inside
            path = pack_folders.full_path("portraittalk", backbone)
            if not os.path.isfile(path):
                raise WeightsError(f"'{backbone}' not found in '{pack_folders.folder('portraittalk')}'",
                                   "put the file there and refresh")
            sd = load_backbone(path)
            return io.NodeOutput(comfy_model(sd.unet, sd.vae.config.scaling_factor), comfy_vae(sd.vae), sd)
        path = folder_paths.get_full_path("diffusers", backbone) or next(
            (os.path.join(root, backbone) for root in folder_paths.get_folder_paths("diffusers")
             if os.path.isdir(os.path.join(root, backbone or ""))), None)
        if not path:
            raise WeightsError(f"backbone folder '{backbone}' not found in "
                               f"'{folder_paths.get_folder_paths('diffusers')[0]}'",
                               "put a diffusers backbone folder there and refresh")
        sd = load_backbone(path)
        return io.NodeOutput(comfy_model(sd.unet, sd.vae.config.scaling_factor), comfy_vae(sd.vae), sd)


class TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PortraitTalkTextEncode",
            display_name="PortraitTalk Text Encode",
            category="PortraitTalk",
            description="Encodes a prompt with the text encoder of a PortraitTalk Backbone into CONDITIONING.",
            inputs=[TextEncoder.Input("text_encoder", tooltip="From PortraitTalk Backbone Loader."),
                    io.String.Input("text", multiline=True, default="",
                                    tooltip="The prompt, e.g. 'a person talking, red hair'.")],
            outputs=[io.Conditioning.Output(tooltip="For PortraitTalk Sampler's positive or negative input.")],
        )

    @classmethod
    def execute(cls, text_encoder, text="") -> io.NodeOutput:
        with torch.inference_mode():
            embeds = text_encoder.encode_text([text]).float().cpu()
        return io.NodeOutput([[embeds, {}]])
