"""Head Motion From Speech: the head's movement that the PortraitTalk model predicts from the audio, for
PortraitTalk Sampler."""

from comfy_api.latest import io

from ..portraittalk_core.checks import check_finite
from ..portraittalk_core.head_motion import SPEECH_SMOOTHING_S, motion_from_speech

from .head_motion import MEASURE_RESOLUTION
from .types import AudioFeatures, HeadMotion, PortraitTalk


class HeadMotionFromSpeech(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PortraitTalkHeadMotionFromSpeech",
            display_name="PortraitTalk Head Motion From Speech",
            category="PortraitTalk",
            description="Predicts how the head moves with the speech (it sinks on loud stretches, turns and tilts "
                        "with the voice), for models trained with it (the demo model is). PortraitTalk Sampler "
                        "moves the photo that way; no driving video needed.",
            inputs=[
                PortraitTalk.Input("portraittalk", tooltip="From PortraitTalk Loader: a model with a head-motion "
                                                           "module (otherwise the node says so)."),
                AudioFeatures.Input("audio_features", tooltip="From PortraitTalk Audio Encode: the speech to "
                                                              "follow, at the video's frame rate."),
                # Optional, so that graphs saved before it existed still run (with the default).
                io.Float.Input("smoothing", default=SPEECH_SMOOTHING_S, min=0.0, max=0.5, step=0.01, optional=True,
                               tooltip="Seconds (Gaussian sigma) over which the predicted movement is smoothed: it "
                                       "takes out a frame-to-frame tremble. 0 keeps the prediction as it is; "
                                       "larger values make the head sway more slowly."),
            ],
            outputs=[HeadMotion.Output(display_name="head_motion",
                                       tooltip="For PortraitTalk Sampler's head_motion input.")],
        )

    @classmethod
    def execute(cls, portraittalk, audio_features, smoothing=SPEECH_SMOOTHING_S) -> io.NodeOutput:
        check_finite(smoothing=smoothing)
        return io.NodeOutput(motion_from_speech(portraittalk.model, audio_features.frames, audio_features.fps,
                                                MEASURE_RESOLUTION, smoothing))
