"""Head Motion: a driving video's frames (an IMAGE batch) -> how its head moves, for PortraitTalk Sampler."""

import numpy as np
from comfy_api.latest import io

from ..portraittalk_core.checks import check_finite
from ..portraittalk_core.head_motion import HeadMotion as Motion, motion_from_frames

from .types import HeadMotion, PortraitTalk

# The transforms are measured in a crop of this side and rescaled to the references' resolution by the sampler.
MEASURE_RESOLUTION = 512


class HeadMotionFromVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PortraitTalkHeadMotion",
            display_name="PortraitTalk Head Motion",
            category="PortraitTalk",
            description="Measures how the head moves in a driving video (anyone's talking head): a turn, scale "
                        "and shift a frame, fitted to the brows and nose. PortraitTalk Sampler moves the photo the "
                        "same way; the mouth still follows the audio.",
            inputs=[
                PortraitTalk.Input("portraittalk", tooltip="From PortraitTalk Loader: its face detector and framing."),
                io.Image.Input("driving_frames", tooltip="The driving video's frames (e.g. Load Video, then Get "
                                                         "Video Components). One face; the largest if several."),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.01,
                               tooltip="The driving frames' frame rate (Get Video Components' fps), so that the "
                                       "motion keeps its speed at the audio's frame rate."),
            ],
            outputs=[HeadMotion.Output(display_name="head_motion",
                                       tooltip="For PortraitTalk Sampler's head_motion input.")],
        )

    @classmethod
    def execute(cls, portraittalk, driving_frames, fps=25.0) -> io.NodeOutput:
        check_finite(fps=fps)
        frames = (np.clip(driving_frames.float().cpu().numpy(), 0, 1) * 255).round().astype(np.uint8)
        transforms = motion_from_frames(iter(frames), portraittalk.detector, MEASURE_RESOLUTION,
                                        portraittalk.config.face_fraction, "the driving frames")
        return io.NodeOutput(Motion(transforms, float(fps), MEASURE_RESOLUTION))
