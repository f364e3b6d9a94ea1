"""Per-video-frame speech features: a front end's feature track cut into one window per video frame.

The talking-face models only ever see audio as a tensor with one row per *video frame*: ``frame_windows``
resamples a front end's track ``(T, L, C)`` to the video frame rate and gives each frame a few neighbours on
either side, because lip shapes anticipate and trail the sound. ``encode_audio`` runs a front end and does
that; ``features_from_hidden_states`` and ``features_from_comfy_encoder`` do it for hidden states computed
elsewhere (ComfyUI's audio encoder). ``clamped_neighbour_windows`` and ``interpolate_to_frames`` are Hallo's
windowing and its resampling of wav2vec2's CNN features (issue 26), kept apart from ``frame_windows``.

Time convention used throughout: video frame ``i`` covers ``[i / fps, (i + 1) / fps)``, and feature
step ``j`` describes the time ``(j + 0.5) / feature_rate`` (the middle of its hop).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from ..errors import AudioError, InputError
from ..io.audio import Waveform, _is_number, _samples_at


def frame_count(duration: float, fps: float) -> int:
    """How many video frames cover ``duration`` seconds: ``ceil(duration * fps)``.

    The product is snapped to the nearest integer when it is within floating-point error of it,
    so 2.0 s at 25 fps gives 50 frames and 0.28 s at 25 fps gives 7 (0.28 * 25 is
    7.000000000000001 in floating point, which a plain ceil turns into 8).
    """
    if not (_is_number(fps) and fps > 0):
        raise InputError(f"fps must be a positive number, got {fps!r}", "pass e.g. fps=25")
    if not (_is_number(duration) and duration >= 0):
        raise AudioError(
            f"audio duration must be a non-negative number of seconds, got {duration!r}",
            "pass the duration of the loaded Waveform",
        )
    exact = duration * fps
    nearest = round(exact)
    n = nearest if abs(exact - nearest) <= 1e-9 * max(1.0, exact) else math.ceil(exact)
    if n < 1:
        raise AudioError(
            f"audio is shorter than one frame at {fps:g} fps ({duration * 1000:.1f} ms)",
            f"use a recording of at least {1000 / fps:.0f} ms",
        )
    return n


def frame_windows(
    features: torch.Tensor, feature_rate: float, fps: float, n_frames: int, window: int
) -> torch.Tensor:
    """Features ``(T, L, C)`` at ``feature_rate`` -> ``(n_frames, 2*window+1, L, C)`` at ``fps``.

    Each video frame gets the mean, over the frame's time span, of the features linearly
    interpolated between their time stamps. When a frame spans less than one feature step this
    is linear interpolation at the frame centre; when it spans several (100 Hz log-mel to 25 fps),
    it is their average, so a short sound such as a plosive cannot fall between two frame centres
    and vanish. Frames past the end of the features repeat the last feature.

    Row ``k`` of frame ``i`` is resampled frame ``i + k - window``; frames off either end repeat
    the first or last frame. The result is a strided view of one (n_frames + 2*window, L, C)
    tensor, so it costs no more memory than the resampled features (copy a slice before writing
    to it in place).
    """
    if features.ndim != 3 or features.shape[0] < 1:
        raise AudioError(
            f"features must have shape (time, layers, channels), got {tuple(features.shape)}",
            "pass the output of a front end, or hidden states as (T, L, C)",
        )
    for name, value in (("feature_rate", feature_rate), ("fps", fps)):
        if not (_is_number(value) and value > 0):
            raise InputError(f"{name} must be a positive number, got {value!r}", f"pass a positive {name}")
    if (
        not (isinstance(n_frames, numbers.Integral) and isinstance(window, numbers.Integral))
        or n_frames < 1
        or window < 0
    ):
        raise InputError(
            f"n_frames must be >= 1 and window >= 0, got {n_frames!r} and {window!r}",
            "compute n_frames with frame_count() and pass window=2 (or another count >= 0)",
        )

    index, weight = _span_weights(n_frames, feature_rate / fps, len(features))
    weight = weight.to(device=features.device, dtype=features.dtype)
    index = index.to(features.device)
    # A handful of knots touch each frame; looping over that handful (not over frames) keeps
    # memory at one (n_frames, L, C) buffer even for hour-long wav2vec2 tracks.
    per_frame = torch.zeros((n_frames, *features.shape[1:]), dtype=features.dtype, device=features.device)
    for k in range(index.shape[1]):
        per_frame += weight[:, k, None, None] * features[index[:, k]]

    first, last = per_frame[:1].expand(window, -1, -1), per_frame[-1:].expand(window, -1, -1)
    padded = torch.cat([first, per_frame, last])
    return rearrange(padded.unfold(0, 2 * window + 1, 1), "n l c w -> n w l c")


def _span_weights(
    n_frames: int, steps_per_frame: float, n_features: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and weights (n_frames, K) averaging a piecewise-linear track over each frame.

    In feature-index units knot ``j`` sits at ``u = j`` and frame ``i`` spans
    ``[i * r - 0.5, (i + 1) * r - 0.5)`` with ``r = steps_per_frame``. The interpolated track is
    ``sum_j f_j * hat(u - j)``, so frame i's mean is ``sum_j f_j * (mean of hat(u - j) over the
    span)``: a closed form. Knots past either end take the edge value (clamped index), which is
    exactly replicate padding of the track. Computed in float64 so hour-long clips stay exact.
    """
    start = torch.arange(n_frames, dtype=torch.float64) * steps_per_frame - 0.5
    end = start + steps_per_frame
    offsets = torch.arange(math.ceil(steps_per_frame) + 3, dtype=torch.float64)
    knots = torch.floor(start)[:, None] - 1 + offsets  # every knot whose hat overlaps the span
    weight = (_hat_integral(end[:, None] - knots) - _hat_integral(start[:, None] - knots)) / steps_per_frame
    return knots.long().clamp(0, n_features - 1), weight


def _hat_integral(x: torch.Tensor) -> torch.Tensor:
    """Integral from -inf to x of the unit hat ``max(0, 1 - |x|)``."""
    x = x.clamp(-1.0, 1.0)
    return torch.where(x < 0, (x + 1) ** 2 / 2, 1 - (1 - x) ** 2 / 2)


def clamped_neighbour_windows(features: torch.Tensor, window: int = 2) -> torch.Tensor:
    """Features already at the video rate ``(n_frames, L, C)`` -> ``(n_frames, 2*window+1, L, C)``.

    Row ``k`` of frame ``i`` is frame ``clamp(i + k - window, 0, n_frames - 1)``: the windowing step of
    ``frame_windows`` alone, with none of its resampling (which, even at equal rates, spreads a frame over
    its neighbours). This is Hallo's per-frame window (scripts/inference.py:95-114), applied once to the
    whole padded track, so a clip's edge frames see the neighbouring clips' frames. A strided view, as in
    ``frame_windows``.
    """
    if features.ndim != 3 or features.shape[0] < 1:
        raise AudioError(
            f"features must have shape (frames, layers, channels), got {tuple(features.shape)}",
            "pass one row per video frame, e.g. wav2vec2 hidden states interpolated to the frame count",
        )
    if not isinstance(window, numbers.Integral) or window < 0:
        raise InputError(f"window must be an integer >= 0, got {window!r}", "pass window=2")
    first, last = features[:1].expand(window, -1, -1), features[-1:].expand(window, -1, -1)
    padded = torch.cat([first, features, last])
    return rearrange(padded.unfold(0, 2 * window + 1, 1), "n l c w -> n w l c")


def interpolate_to_frames(features: torch.Tensor, n_frames: int) -> torch.Tensor:
    """A feature track ``(batch, T, C)`` -> ``(batch, n_frames, C)`` by linear interpolation over time.

    The first and last steps land on the first and last frames (``align_corners=True``): output frame ``k``
    reads input position ``k * (T - 1) / (n_frames - 1)``. This is how Hallo brings wav2vec2's CNN features to
    the video rate *before* the feature projection and the encoder (hallo/models/wav2vec.py:75-77,196-210);
    it does not follow this module's time convention (steps at the middles of their hops), on purpose.
    """
    if features.ndim != 3 or features.shape[1] < 1:
        raise AudioError(
            f"features must have shape (batch, time, channels), got {tuple(features.shape)}",
            "pass the CNN feature encoder's output transposed to (batch, time, channels)",
        )
    if not isinstance(n_frames, numbers.Integral) or n_frames < 1:
        raise InputError(f"n_frames must be an integer >= 1, got {n_frames!r}",
                         "compute it with frame_count()")
    over_time = rearrange(features, "b t c -> b c t")
    resampled = F.interpolate(over_time, size=int(n_frames), mode="linear", align_corners=True)
    return rearrange(resampled, "b c t -> b t c")


@dataclass
class AudioFeatures:
    """What the models consume: a window of audio features for every video frame."""

    frames: torch.Tensor  # (n_frames, 2*window+1, L, C); more rows padded to whole clips for Hallo's audio
    fps: float
    n_frames: int
    duration: float  # seconds of audio
    front_end: str  # "logmel" | "wav2vec2" | "comfy_wav2vec2"


def encode_audio(wave: Waveform, front_end, fps: float, window: int = 2) -> AudioFeatures:
    """Run ``front_end`` on ``wave`` and cut the result into one window per video frame.

    The number of frames is ``frame_count(wave.duration, fps)``: the video lasts as long as the audio.
    """
    n_frames = frame_count(wave.duration, fps)
    features = front_end(wave)
    frames = frame_windows(features, front_end.feature_rate, fps, n_frames, window)
    return AudioFeatures(frames, float(fps), n_frames, wave.duration, front_end.name)


def encode_audio_in_whole_clips(wave: Waveform, front_end, fps: float, clip_frames: int, window: int = 2,
                                segment_seconds: float = 0.0) -> AudioFeatures:
    """Hallo's audio features (config ``audio_frames`` "encoder_input"): ``front_end.at_frames`` over the audio
    padded with silence to whole clips of ``clip_frames`` (sample_rate // fps samples a frame), then a clamped
    window over the whole padded track (hallo/datasets/audio_processor.py:108-115; scripts/inference.py:95-114).
    ``frames`` has a row for every padded frame; ``n_frames`` counts the audio's own.

    ``segment_seconds`` > 0 (config ``audio_segment_seconds``, Hallo2's long mode): the audio is read in pieces of
    that length, each normalised and encoded on its own, only the last one padded, the window running across the
    joins (hallo2 scripts/inference_long.py:141-161,228-253). Pieces here are cut on frame boundaries and the padding
    counts every piece's frames, so no frame is lost or added (theirs can, past the first piece: docs/hallo2.md)."""
    n_frames = frame_count(wave.duration, fps)
    padded = math.ceil(n_frames / clip_frames) * clip_frames
    frame_samples = int(front_end.sample_rate // fps)
    if segment_seconds <= 0 or wave.duration <= segment_seconds:
        hidden = front_end.at_frames(wave, padded, (padded - n_frames) * frame_samples)
    else:
        samples, rate = _samples_at(wave, front_end.sample_rate), front_end.sample_rate
        piece_frames = max(1, round(segment_seconds * fps))
        pieces = []
        for first in range(0, n_frames, piece_frames):
            frames = min(piece_frames, n_frames - first)
            last = first + frames == n_frames
            piece = Waveform(samples[first * frame_samples:(first + frames) * frame_samples], rate)
            pad = padded - n_frames if last else 0
            pieces.append(front_end.at_frames(piece, frames + pad, pad * frame_samples))
        hidden = torch.cat(pieces)
    return AudioFeatures(clamped_neighbour_windows(hidden, window), float(fps), n_frames, wave.duration,
                         front_end.name)


def features_from_hidden_states(
    hidden_states: torch.Tensor,
    feature_rate: float,
    duration: float,
    fps: float,
    window: int = 2,
    name: str = "comfy_wav2vec2",
) -> AudioFeatures:
    """``AudioFeatures`` from hidden states computed elsewhere (e.g. ComfyUI's audio encoder).

    ``hidden_states`` is ``(T, L, C)``: time, layers, channels (a ``(T, C)`` tensor is taken as
    one layer). ``duration`` is the audio's length in seconds; T must match it at
    ``feature_rate`` (about 50 per second for wav2vec2), which catches states passed as (L, T, C).
    """
    if not isinstance(hidden_states, torch.Tensor):
        raise AudioError(
            f"hidden states must be a torch tensor, got {type(hidden_states).__name__}",
            "pass the audio encoder's output as a tensor of shape (T, L, C)",
        )
    if hidden_states.ndim == 2:
        hidden_states = hidden_states[:, None]
    if hidden_states.ndim != 3 or hidden_states.numel() == 0:
        raise AudioError(
            f"hidden states have shape {tuple(hidden_states.shape)}, expected (T, L, C)",
            "stack the encoder's layers as (time, layers, channels)",
        )
    if not (_is_number(feature_rate) and feature_rate > 0):
        raise InputError(
            f"feature_rate must be a positive number, got {feature_rate!r}",
            "pass the encoder's steps per second (50 for wav2vec2)",
        )
    n_frames = frame_count(duration, fps)

    expected = duration * feature_rate
    tolerance = max(3.0, 0.1 * expected)
    steps = hidden_states.shape[0]
    if abs(steps - expected) > tolerance:
        hint = (
            " (they look like (L, T, C); transpose them with hidden_states.transpose(0, 1))"
            if abs(hidden_states.shape[1] - expected) <= tolerance
            else ""
        )
        raise AudioError(
            f"hidden states have {steps} time steps, but {duration:.2f} s at {feature_rate:g} per second "
            f"should give about {expected:.0f}{hint}",
            "pass states shaped (T, L, C) for this audio, with the encoder's feature_rate",
        )
    if not torch.isfinite(hidden_states).all():
        raise AudioError(
            "hidden states contain NaN or infinite values",
            "re-run the audio encoder, in float32 if it was in half precision",
        )

    frames = frame_windows(hidden_states, feature_rate, fps, n_frames, window)
    return AudioFeatures(frames, float(fps), n_frames, float(duration), name)


def features_from_comfy_encoder(output: dict, duration: float, fps: float, window: int = 2) -> AudioFeatures:
    """ComfyUI's AUDIO_ENCODER_OUTPUT (Audio Encoder Encode: a dict whose ``encoded_audio_all_layers`` holds
    every layer's hidden states, each (batch, T, C), at 50 per second for wav2vec2) -> AudioFeatures."""
    layers = output.get("encoded_audio_all_layers") if isinstance(output, dict) else None
    if not layers:
        raise AudioError("the audio encoder output has no per-layer hidden states",
                         "connect Audio Encoder Encode with a wav2vec2 encoder, or leave this input empty")
    hidden = torch.stack([h[0] for h in layers], dim=1).float().cpu()  # (T, L, C), first batch item
    return features_from_hidden_states(hidden, 50.0, duration, fps, window=window)
