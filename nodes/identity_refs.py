"""Load Identity Refs: photos (an IMAGE batch) -> detected, aligned references with embeddings and structure."""

import logging

import torch
from comfy_api.latest import io, ui

from ..portraittalk_core.checks import check_resolution
from ..portraittalk_core.comfyui.hallo import photo_inputs
from ..portraittalk_core.conditioning import prepare_references, warn_unknown_faces
from ..portraittalk_core.errors import warnings_logged

from .types import IdentityRefs, PortraitTalk


class LoadIdentityRefs(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PortraitTalkLoadIdentityRefs",
            display_name="PortraitTalk Load Identity Refs",
            category="PortraitTalk",
            description="Finds the face in each photo, aligns it to the portrait framing the model was trained on, "
                        "and computes identity embeddings, the head placement mask and the landmark map. Several "
                        "photos of the same person give the model more to go on. For a Hallo-layout model: the "
                        "first photo whole, resized, with its face box, region masks and raw ArcFace embedding.",
            inputs=[
                PortraitTalk.Input("portraittalk", tooltip="From PortraitTalk Loader: its face detector and encoder."),
                io.Image.Input("images", tooltip="One or more photos of the same person (an IMAGE batch). One face "
                                                 "each; where there are several, the largest is used. A Hallo-layout "
                                                 "model reads the first photo only."),
                io.Int.Input("resolution", default=512, min=64, max=2048, step=64,
                             tooltip="Side of the square output video in pixels (a multiple of 64)."),
            ],
            outputs=[
                IdentityRefs.Output(display_name="refs", tooltip="Aligned references for PortraitTalk Sampler (the "
                                                                 "photo's inputs for PortraitTalk Hallo Sampler)."),
                io.Image.Output(display_name="aligned", tooltip="The aligned face crops, as IMAGE (Hallo: the "
                                                                "resized photo)."),
            ],
        )

    @classmethod
    def execute(cls, portraittalk, images, resolution=512) -> io.NodeOutput:
        config = portraittalk.config
        check_resolution(resolution, config.vae_scale * 8, config.resolution)
        labels = [f"image {i + 1} of {images.shape[0]}" for i in range(images.shape[0])]
        with warnings_logged(logging.getLogger(__name__)):  # a second face, a photo the model does not know
            if config.reference_inputs == "hallo":
                refs = photo_inputs(portraittalk, list(images), resolution)
            else:
                refs = prepare_references(list(images), portraittalk.model, portraittalk.detector, resolution,
                                          labels)
                if portraittalk.probe is not None:
                    warn_unknown_faces(refs.faces, refs.pixels, *portraittalk.probe)
        aligned = (refs.pixels.permute(0, 2, 3, 1) + 1) / 2
        return io.NodeOutput(refs, aligned.clamp(0, 1).to(torch.float32), ui=ui.PreviewImage(aligned, cls=cls))
