"""Paste Photo: decoded region-"mouth" frames over the reference photo's own pixels, for graphs that sample with
Apply PortraitTalk and the stock KSampler (PortraitTalk Sampler does it itself: its paste_photo input)."""

from comfy_api.latest import io

from ..portraittalk_core.comfyui.region import pasted

from .inputs import setting_input
from .types import IdentityRefs, PortraitTalk


class PastePhoto(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PortraitTalkPastePhoto",
            display_name="PortraitTalk Paste Photo",
            category="PortraitTalk",
            description="For region mouth: puts the first reference photo's own pixels back outside the redrawn "
                        "mouth area, with a feathered seam, so only the mouth has been through the VAE (as "
                        "lip-sync tools paste the mouth back). With region face the frames pass through unchanged.",
            inputs=[
                io.Image.Input("images", tooltip="The decoded frames (VAE Decode after KSampler), at the "
                                                 "references' resolution: paste before any upscaler."),
                IdentityRefs.Input("refs", tooltip="The references the frames were made from."),
                PortraitTalk.Input("portraittalk", tooltip="From PortraitTalk Loader: its default region and VAE "
                                                           "scale."),
                setting_input("region"),
            ],
            outputs=[io.Image.Output(tooltip="The frames with the photo outside the mouth area.")],
        )

    @classmethod
    def execute(cls, images, refs, portraittalk, region="model default") -> io.NodeOutput:
        face = refs.faces[0]  # frames in the photo's own exposure and colour (face.PhotoLook)
        return io.NodeOutput(face.look.restore(pasted(images, refs.faces[:1], portraittalk.config, region)))
