"""Audio Encode: the native AUDIO (or ComfyUI's own wav2vec2 encoder output) -> per-frame audio features."""

import torch
from comfy_api.latest import io, ui

from portraittalk_core import audio as audio_io
from portraittalk_core.conditioning import check_audio_features, prepare_audio
from portraittalk_core.errors import InputError

from .types import AudioFeatures, PortraitTalk


class AudioEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PortraitTalkAudioEncode",
            display_name="PortraitTalk Audio Encode",
            category="PortraitTalk",
            description="Turns speech into the per-frame audio features PortraitTalk is driven by, at the video's "
                        "frame rate. The video gets ceil(duration x fps) frames.",
            inputs=[
                PortraitTalk.Input("portraittalk", tooltip="From PortraitTalk Loader: its audio front end."),
                io.Audio.Input("audio", tooltip="The speech (any rate, mono or stereo); resampled to 16 kHz mono."),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.01,
                               tooltip="Frame rate of the video to generate."),
                io.AudioEncoderOutput.Input("audio_encoder_output", optional=True,
                                            tooltip="Optional: ComfyUI's own wav2vec2 encoding of the same audio "
                                                    "(Audio Encoder Encode), used instead of the model's front end."),
            ],
            outputs=[
                AudioFeatures.Output(display_name="audio_features", tooltip="For PortraitTalk Sampler."),
                io.Int.Output(display_name="frame_count", tooltip="Number of video frames the audio covers."),
                io.Float.Output(display_name="fps", tooltip="The frame rate, passed on."),
            ],
        )

    @classmethod
    def execute(cls, portraittalk, audio, fps=25.0, audio_encoder_output=None) -> io.NodeOutput:
        config = portraittalk.config
        if audio_encoder_output is None:
            wave, features = prepare_audio(audio, portraittalk.audio_front_end, config, fps)
        else:
            wave = audio_io.load_audio(audio)
            audio_io.check_not_silent(wave)
            audio_io.check_long_enough(wave, fps)
            features = comfy_encoder_features(audio_encoder_output, wave.duration, fps, config.audio_window)
            check_audio_features(features, config)
        text = f"{wave.duration:.2f} s of audio -> {features.n_frames} frames at {fps:g} fps"
        return io.NodeOutput(features, features.n_frames, float(fps), ui=ui.PreviewText(text))


def comfy_encoder_features(output: dict, duration: float, fps: float, window: int) -> "audio_io.AudioFeatures":
    """ComfyUI's AUDIO_ENCODER_OUTPUT (a dict with every layer's hidden states) -> AudioFeatures."""
    layers = output.get("encoded_audio_all_layers")
    if not layers:
        raise InputError("the audio encoder output has no per-layer hidden states",
                         "connect Audio Encoder Encode with a wav2vec2 encoder, or leave this input empty")
    hidden = torch.stack([h[0] for h in layers], dim=1).float().cpu()   # (T, L, C), first batch item
    return audio_io.features_from_hidden_states(hidden, 50.0, duration, fps, window=window)
