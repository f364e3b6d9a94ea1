"""A stand-in for wav2vec2 where none is at hand: the bench's and the random-weights runs' sd15 audio features."""

from __future__ import annotations

import math

from einops import repeat

from ..config import PortraitTalkConfig
from .features import interpolate_to_frames
from .logmel import LogMelFrontEnd


class RandomWav2Vec2FrontEnd:
    """Stands in for wav2vec2 when benchmarking sd15 with random weights and no wav2vec2 folder:
    log-mel frames tiled to wav2vec2-base's shape, so the rest of the model runs at full size."""

    name = "random_wav2vec2"
    feature_rate = 50.0
    sample_rate = 16_000

    def __init__(self, config: PortraitTalkConfig):
        self.num_layers, self.feature_dim = config.audio_layers, config.audio_dim
        self._mel = LogMelFrontEnd(n_mels=80)

    def __call__(self, wave):
        mel = self._mel(wave)[::2, 0]  # 100 Hz -> 50 Hz
        reps = math.ceil(self.feature_dim / mel.shape[-1])
        tiled = mel.repeat(1, reps)[:, :self.feature_dim]
        return repeat(tiled, "t c -> t l c", l=self.num_layers).contiguous()

    def at_frames(self, wave, frames: int, pad_samples: int = 0):
        """``Wav2Vec2FrontEnd.at_frames``'s shape, (frames, num_layers, C): the same track interpolated to the frame
        count (the padding's silence is left out: the stand-in is not wav2vec2 anyway)."""
        track = self(wave)
        flat = interpolate_to_frames(track.flatten(1)[None], frames)[0]
        return flat.unflatten(1, track.shape[1:])
