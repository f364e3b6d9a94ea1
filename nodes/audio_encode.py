"""Audio Encode: the native AUDIO (or ComfyUI's own wav2vec2 encoder output) -> per-frame audio features."""

from comfy_api.latest import io, ui

from ..portraittalk_core.checks import check_finite
from ..portraittalk_core.conditioning import prepare_audio, prepare_encoded_audio

from .types import AudioFeatures, PortraitTalk


class AudioEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PortraitTalkAudioEncode",
            display_name="PortraitTalk Audio Encode",
            category="PortraitTalk",
            description="Turns speech into the per-frame audio features PortraitTalk is driven by, at the video's "
                        "frame rate. The video gets ceil(duration x fps) frames. For a Hallo-layout model the "
                        "features are padded with silence to whole clips, as Hallo reads audio.",
            inputs=[
                PortraitTalk.Input("portraittalk", tooltip="From PortraitTalk Loader: its audio front end."),
                io.Audio.Input("audio", tooltip="The speech (any rate, mono or stereo); resampled to 16 kHz mono."),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.01,
                               tooltip="Frame rate of the video to generate."),
                io.AudioEncoderOutput.Input("audio_encoder_output", optional=True,
                                            tooltip="Optional: ComfyUI's own wav2vec2 encoding of the same audio "
                                                    "(Audio Encoder Encode), used instead of the model's front end. "
                                                    "Not for Hallo-layout models, which read wav2vec2 differently."),
            ],
            outputs=[
                AudioFeatures.Output(display_name="audio_features", tooltip="For PortraitTalk Sampler."),
                io.Int.Output(display_name="frame_count", tooltip="Number of video frames the audio covers."),
                io.Float.Output(display_name="fps", tooltip="The frame rate, passed on."),
            ],
        )

    @classmethod
    def execute(cls, portraittalk, audio, fps=25.0, audio_encoder_output=None) -> io.NodeOutput:
        check_finite(fps=fps)
        config = portraittalk.config
        if audio_encoder_output is None:
            wave, features = prepare_audio(audio, portraittalk.audio_front_end, config, fps)
        else:
            wave, features = prepare_encoded_audio(audio_encoder_output, audio, config, fps)
        text = f"{wave.duration:.2f} s of audio -> {features.n_frames} frames at {fps:g} fps"
        if len(features.frames) != features.n_frames:   # padded to whole clips (a Hallo-layout model)
            text += f" (padded to {len(features.frames)})"
        return io.NodeOutput(features, features.n_frames, float(fps), ui=ui.PreviewText(text))
