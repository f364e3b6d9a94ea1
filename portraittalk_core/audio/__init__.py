"""Audio in, per-video-frame speech features out.

The talking-face models only ever see audio as a tensor with one row per *video frame*, so the audio goes
through three steps, in order:

1. ``load_audio`` (io/audio.py) turns whatever the user has (a file, an array, a ComfyUI AUDIO dict) into
   one clean representation: a float32 mono ``Waveform`` at 16 kHz, or an ``AudioError`` that says what is
   wrong and how to fix it.
2. A *front end* turns the waveform into a feature track ``(T, L, C)``: T time steps at the front end's
   ``feature_rate``, L layers, C channels. ``LogMelFrontEnd`` (logmel.py) needs no weights (for small
   models); ``Wav2Vec2FrontEnd`` (wav2vec2.py) runs a local wav2vec2 checkpoint and keeps every hidden layer.
3. ``frame_windows`` (features.py) resamples that track to the video frame rate and gives each frame a few
   neighbours on either side, because lip shapes anticipate and trail the sound.

This package exports all three steps' public names, the loading ones included, so that one
``from . import audio`` serves a caller that loads audio and encodes it.
"""

from ..io.audio import SAMPLE_RATE, Waveform, check_long_enough, check_not_silent, load_audio
from .features import (AudioFeatures, encode_audio, encode_audio_in_whole_clips, features_from_comfy_encoder,
                       features_from_hidden_states, frame_count, frame_windows)
from .logmel import LogMelFrontEnd
from .wav2vec2 import Wav2Vec2FrontEnd

__all__ = ["SAMPLE_RATE", "Waveform", "load_audio", "check_not_silent", "check_long_enough", "LogMelFrontEnd",
           "Wav2Vec2FrontEnd", "AudioFeatures", "encode_audio", "encode_audio_in_whole_clips",
           "features_from_hidden_states",
           "features_from_comfy_encoder", "frame_count", "frame_windows"]
