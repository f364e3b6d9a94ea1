"""How the face moves, per video frame: mouth and most of the head's motion from the audio, blinks and a small
random wander of the head from a seed.

Frame ``i`` covers the audio ``[i / fps, (i + 1) / fps)``, as everywhere in the project
(``audio/features.py``), so the mouth of frame ``i`` is driven by exactly the sound played during it.

The mouth formula (``mouth_curves``), per frame i with hop = sample_rate / fps samples:

    rms[i]      = sqrt(mean(x[i*hop:(i+1)*hop] ** 2))
    ref         = 95th percentile of rms (the clip's loud speech; robust to a single peak)
    level[i]    = log1p(K * rms[i] / ref) / log1p(K)                      K = 20
    open[i]     = clip((level[i] - g) / (1 - g), 0, 1)   g = level at rms = ref / 20 (a noise gate)
    aperture    = open smoothed by a 3-tap [1, 2, 1] / 4 filter

    z[i]        = (log centroid[i] - median over speech frames) / (std over speech frames)
    width[i]    = clip(0.5 - 0.2 * aperture[i] + 0.3 * s[i] * tanh(z[i]), 0, 1)
                  s[i] = min(1, aperture[i] / 0.2) (the centroid only matters while speaking)

The log makes quiet consonants visible without letting loud vowels saturate; the percentile makes
the curve independent of the voice's loudness. A bright spectrum (ee, s) spreads the lips, a dark
one (oo, o) rounds them; opening wide pulls the corners in a little. Silence gives aperture 0 and
width 0.5 (a relaxed, closed mouth).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter1d, uniform_filter1d

from ..audio import Waveform

_LOG_GAIN = 20.0  # K above: how strongly quiet sounds are lifted
_GATE = 1.0 / 20.0  # rms below this fraction of the clip's loud speech counts as silence
_REF_PERCENTILE = 95.0
_SPEECH_APERTURE = 0.2  # aperture above which a frame counts as speech for the width term


def frame_rms(wave: Waveform, fps: float, n_frames: int) -> np.ndarray:
    """(n_frames,) RMS of the samples each frame covers (zero past the end of the audio)."""
    return np.sqrt(np.mean(_frame_slices(wave, fps, n_frames) ** 2, axis=1))


def mouth_curves(wave: Waveform, fps: float, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(aperture, width), each (n_frames,) float32 in [0, 1]; see the module docstring."""
    aperture, brightness = speech_curves(wave, fps, n_frames)
    return aperture, mouth_width(aperture, brightness)


def speech_curves(wave: Waveform, fps: float, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(aperture, brightness), each (n_frames,) float32: the mouth's opening (module docstring) and
    ``s * tanh(z)``, how bright the spectrum is while speaking (-1 dark, 0 silent or neutral, 1 bright)."""
    frames = _frame_slices(wave, fps, n_frames)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    ref = float(np.percentile(rms, _REF_PERCENTILE))
    if ref <= 1e-6:  # a silent clip: the mouth stays shut
        return np.zeros(n_frames, np.float32), np.zeros(n_frames, np.float32)

    level = np.log1p(_LOG_GAIN * rms / ref) / math.log1p(_LOG_GAIN)
    gate = math.log1p(_LOG_GAIN * _GATE) / math.log1p(_LOG_GAIN)
    aperture = _smooth3(np.clip((level - gate) / (1.0 - gate), 0.0, 1.0))

    z = _centroid_score(frames, wave.sample_rate, aperture > _SPEECH_APERTURE)
    speaking = np.minimum(1.0, aperture / _SPEECH_APERTURE)
    return aperture.astype(np.float32), (speaking * np.tanh(z)).astype(np.float32)


def mouth_width(aperture: np.ndarray, brightness: np.ndarray) -> np.ndarray:
    return np.clip(0.5 - 0.2 * aperture + 0.3 * brightness, 0.0, 1.0).astype(np.float32)


def _frame_slices(wave: Waveform, fps: float, n_frames: int) -> np.ndarray:
    """(n_frames, hop) samples per frame; a fractional hop is rounded per frame boundary."""
    samples = np.asarray(wave.samples, dtype=np.float64)
    bounds = np.round(np.arange(n_frames + 1) * wave.sample_rate / fps).astype(np.int64)
    hop = int(np.max(np.diff(bounds)))
    padded = np.pad(samples, (0, max(0, bounds[-1] + hop - len(samples))))
    return np.stack([padded[start:start + hop] for start in bounds[:-1]])


def _smooth3(x: np.ndarray) -> np.ndarray:
    """[1, 2, 1] / 4 smoothing with the ends held: takes the edge off frame-to-frame jitter
    without moving the onsets by more than half a frame."""
    padded = np.pad(x, 1, mode="edge")
    return 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]


def _centroid_score(frames: np.ndarray, sample_rate: int, speech: np.ndarray) -> np.ndarray:
    """Per frame: how bright the spectrum is, as a z-score of the log spectral centroid over the
    clip's speech frames (so each voice is measured against itself). 0 where undefined."""
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(frames.shape[1]), axis=1))
    freqs = np.fft.rfftfreq(frames.shape[1], 1.0 / sample_rate)
    energy = spectrum.sum(axis=1)
    centroid = (spectrum @ freqs) / np.maximum(energy, 1e-12)
    log_c = np.log(np.maximum(centroid, 1.0))
    if speech.sum() < 2:
        return np.zeros(len(frames))
    centre, spread = np.median(log_c[speech]), np.std(log_c[speech]) + 1e-6
    return np.where(energy > 1e-9, (log_c - centre) / spread, 0.0)


# ---- blinks and head motion --------------------------------------------------------------------

BLINK_SECONDS = 0.15


def blinks(rng: np.random.Generator, n_frames: int, fps: float) -> np.ndarray:
    """(n_frames,) eye openness: 1 open, 0 shut, with a blink every 2-5 s lasting ~0.15 s.

    Each blink is a raised-cosine dip centred on a frame, so the middle frame is fully shut
    whatever the frame rate (at 25 fps a blink is shut for 1 frame, half-shut on either side).
    """
    openness = np.ones(n_frames, dtype=np.float32)
    t = float(rng.uniform(0.4, 3.0))  # the first blink comes at a random moment
    while t * fps < n_frames:
        centre = int(t * fps)
        duration = float(rng.uniform(0.8, 1.2)) * BLINK_SECONDS
        half = max(duration * fps / 2.0, 1.0)  # in frames
        for k in range(int(-half), int(half) + 1):
            if 0 <= centre + k < n_frames and abs(k) < half:
                dip = 0.5 + 0.5 * math.cos(math.pi * k / half)
                openness[centre + k] = min(openness[centre + k], 1.0 - dip)
        t += float(rng.uniform(2.0, 5.0))
    return openness


HEAD_SHIFT = 0.02  # typical |dx|, |dy| as a fraction of the frame
HEAD_TILT = 3.0  # typical |tilt| in degrees
HEAD_SMOOTH_SECONDS = 0.6  # the time scale of the random wandering
# The head follows the voice (as people's heads move with their prosody): it sinks while the speech is loud and
# turns and tilts with how bright it sounds, each over this time scale (Gaussian sigma). This part is a function
# of the audio alone, so a model can learn to predict it (models/head_pose.py); the random wander is kept small.
SPEECH_SMOOTH_SECONDS = 0.25
WANDER = 0.3  # the random wander's share of the typical amplitude


def head_motion(rng: np.random.Generator, n_frames: int, fps: float, activity: np.ndarray | None = None,
                brightness: np.ndarray | None = None) -> np.ndarray:
    """(n_frames, 3) head pose per frame: (dx, dy) in fractions of the frame, tilt in degrees.

    pose = speech part + random wander, where, with e = slow(activity) and b = slow(brightness), slow = Gaussian
    smoothing over SPEECH_SMOOTH_SECONDS (``activity`` the mouth aperture, ``brightness`` from speech_curves):

        dx   = 4.0 * HEAD_SHIFT * b
        dy   = 3.0 * HEAD_SHIFT * e + 0.4 * HEAD_SHIFT * activity5     (activity5: 5-frame mean; a small nod
                                                                          with the stressed syllables)
        tilt = 4.0 * HEAD_TILT * b

    The gains make the speech part about as large as the wander was alone before it (standard deviation about
    half the typical amplitude over espeak's sentences: b's is about 0.19, e's 0.2).

    The wander is Gaussian-smoothed white noise, scaled so that its standard deviation is ``WANDER`` / 2 of the
    typical amplitude whatever the clip's length (the filter's gain is divided out, not the sample's std, which
    would blow short clips up). The noise is drawn whether or not there is speech, so the rng that follows is the
    same either way.
    """
    sigma = HEAD_SMOOTH_SECONDS * fps
    radius = int(3 * sigma) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= np.sqrt(np.sum(kernel**2))  # unit-variance output for unit-variance input
    noise = rng.standard_normal((n_frames + 2 * radius, 3))
    smooth = np.stack([np.convolve(noise[:, j], kernel, mode="valid") for j in range(3)], axis=1)
    typical = np.array([HEAD_SHIFT, HEAD_SHIFT, HEAD_TILT])
    pose = smooth * (0.5 * WANDER * typical)
    if activity is not None:
        activity = np.asarray(activity, np.float64)
        bright = np.zeros(n_frames) if brightness is None else np.asarray(brightness, np.float64)
        e, b = _slow(activity, SPEECH_SMOOTH_SECONDS * fps), _slow(bright, SPEECH_SMOOTH_SECONDS * fps)
        syllables = uniform_filter1d(activity, 5, mode="nearest")
        pose[:, 0] += 4.0 * HEAD_SHIFT * b
        pose[:, 1] += 3.0 * HEAD_SHIFT * e + 0.4 * HEAD_SHIFT * syllables
        pose[:, 2] += 4.0 * HEAD_TILT * b
    limits = 1.5 * typical
    return np.clip(pose, -limits, limits).astype(np.float32)


def _slow(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over ``sigma`` frames, the ends held; the kernel is cut at 3 sigma (scipy's default 4
    would change every dataset made before)."""
    return gaussian_filter1d(x, sigma, mode="nearest", radius=int(3 * sigma) + 1)
