"""PortraitTalk Backbone Loader and Text Encode: any-size SD-style backbone as native ComfyUI MODEL and VAE
(comfyui/backbone.py), for the small models (tiny tests, the embedded demo) that no checkpoint loader knows. Real
SD1.5 checkpoints go through ComfyUI's own loaders instead."""

from __future__ import annotations

import os

import folder_paths
import torch
from comfy_api.latest import io

from ..portraittalk_core.comfyui.backbone import comfy_backbone
from ..portraittalk_core.errors import WeightsError

from . import folders as pack_folders

TextEncoder = io.Custom("PORTRAITTALK_TEXT_ENCODER")


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
            return io.NodeOutput(*comfy_backbone(path))
        path = folder_paths.get_full_path("diffusers", backbone) or next(
            (os.path.join(root, backbone) for root in folder_paths.get_folder_paths("diffusers")
             if os.path.isdir(os.path.join(root, backbone or ""))), None)
        if not path:
            raise WeightsError(f"backbone folder '{backbone}' not found in "
                               f"'{folder_paths.get_folder_paths('diffusers')[0]}'",
                               "put a diffusers backbone folder there and refresh")
        return io.NodeOutput(*comfy_backbone(path))


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
