"""The log-mel front end: a waveform -> log-mel features at 100 per second; needs no weights (small models)."""

from __future__ import annotations

import math

import librosa
import numpy as np
import torch
from einops import rearrange

from ..errors import InputError
from ..io.audio import SAMPLE_RATE, Waveform, _samples_at


class LogMelFrontEnd:
    """Log-mel spectrogram, 25 ms windows every 10 ms (100 features per second); needs no weights.

    Normalised with a fixed formula, ``(log10(mel + 1e-8) + 4) / 4`` (Whisper's scale with a
    fixed floor instead of its per-clip one), so a frame's features depend only on the audio
    around it, not on the clip's length or loudest moment. Silence maps to -1, speech at
    ordinary levels to about -1..1.5.
    """

    name = "logmel"
    num_layers = 1
    n_fft = 400  # 25 ms at 16 kHz
    hop = 160  # 10 ms
    block = 6000  # frames per STFT call (60 s), so memory stays bounded on long clips

    def __init__(self, n_mels: int = 80):
        if isinstance(n_mels, bool) or not isinstance(n_mels, int) or not 1 <= n_mels <= 128:
            raise InputError(f"n_mels must be an integer from 1 to 128, got {n_mels!r}", "use n_mels=80")
        self.feature_dim = n_mels
        self.feature_rate = SAMPLE_RATE / self.hop
        filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=self.n_fft, n_mels=n_mels)
        self._filters = filters.astype(np.float32)

    def __call__(self, wave: Waveform) -> torch.Tensor:
        """(T, 1, n_mels) float32 with T = ceil(samples / 160); step j is centred on (j + 0.5) * 10 ms."""
        samples = _samples_at(wave, SAMPLE_RATE)
        n = max(1, math.ceil(len(samples) / self.hop))
        # Pad so that window j covers [j*hop - 120, j*hop + 280): centred on (j + 0.5) * hop.
        left = (self.n_fft - self.hop) // 2
        right = (n - 1) * self.hop + self.n_fft - left - len(samples)
        padded = np.pad(samples, (left, right))
        blocks = [
            self._log_mel(padded[a * self.hop : (min(n, a + self.block) - 1) * self.hop + self.n_fft])
            for a in range(0, n, self.block)
        ]
        features = np.concatenate(blocks, axis=1)
        return torch.from_numpy(np.ascontiguousarray(rearrange(features, "c t -> t 1 c")))

    def _log_mel(self, samples: np.ndarray) -> np.ndarray:
        spectrum = librosa.stft(samples, n_fft=self.n_fft, hop_length=self.hop, center=False, window="hann")
        mel = self._filters @ (np.abs(spectrum) ** 2)
        return ((np.log10(mel + 1e-8) + 4.0) / 4.0).astype(np.float32)
