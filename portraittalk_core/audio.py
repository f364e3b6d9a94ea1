"""Audio in, per-video-frame speech features out.

The talking-face models only ever see audio as a tensor with one row per *video frame*, so this
module does three things, in order:

1. ``load_audio`` turns whatever the user has (a file, an array, a ComfyUI AUDIO dict) into one
   clean representation: a float32 mono ``Waveform`` at 16 kHz. Every way that can fail raises an
   ``AudioError`` that says what is wrong and how to fix it.
2. A *front end* turns the waveform into a feature track ``(T, L, C)``: T time steps at the front
   end's ``feature_rate``, L layers, C channels. ``LogMelFrontEnd`` needs no weights (for small
   models); ``Wav2Vec2FrontEnd`` runs a local wav2vec2 checkpoint and keeps every hidden layer.
3. ``frame_windows`` resamples that track to the video frame rate and gives each frame a few
   neighbours on either side, because lip shapes anticipate and trail the sound.

Time convention used throughout: video frame ``i`` covers ``[i / fps, (i + 1) / fps)``, and feature
step ``j`` describes the time ``(j + 0.5) / feature_rate`` (the middle of its hop).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import wave as wav_file  # the stdlib WAV header reader; "wave" names waveforms here
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import torch
from einops import rearrange

from .errors import AudioError, InputError, WeightsError

SAMPLE_RATE = 16_000

# Rates outside this range are not audio we can use: below 4 kHz speech is unintelligible, and
# nothing records above 768 kHz, so such a number is almost certainly a wrong argument.
MIN_SOURCE_RATE = 4_000
MAX_SOURCE_RATE = 768_000

# A 2-D array whose smaller side is longer than this is not (channels, samples) but a mistake.
MAX_CHANNELS = 32

# Lossy decoders overshoot full scale a little; anything beyond this is unscaled PCM, not overshoot.
MAX_FLOAT_PEAK = 2.0

# A file whose header promises this much more audio than could be decoded is truncated.
TRUNCATION_MIN_SECONDS = 0.5
TRUNCATION_MIN_FRACTION = 0.1

REEXPORT_FIX = "re-export it as WAV, e.g. `ffmpeg -i <file> -ac 1 -ar 16000 out.wav`, and use out.wav"


# ----------------------------------------------------------------------------------------------
# Waveform and loading
# ----------------------------------------------------------------------------------------------


@dataclass
class Waveform:
    """Mono audio: float32 samples in [-1, 1], shape (S,), at ``sample_rate`` Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate


def load_audio(
    source,
    sample_rate: int = SAMPLE_RATE,
    source_rate: int | None = None,
    max_seconds: float | None = 3600.0,
) -> Waveform:
    """Load audio from anything a user may hand us, as mono float32 at ``sample_rate``.

    ``source`` is one of:

    - a path (str or Path) to an audio or video file (wav, flac, mp3, ogg, m4a, mp4, ...),
      decoded with PyAV;
    - a numpy array or torch tensor of samples: 1-D, or 2-D channels-first or channels-last
      (the shorter side is taken as channels). int8/int16/int32/uint8 are scaled to [-1, 1].
      ``source_rate`` is required;
    - a ``Waveform``;
    - a ComfyUI AUDIO dict ``{"waveform": tensor (B, C, S), "sample_rate": int}``; batch item 0
      is used.

    ``source_rate`` is only used for bare arrays; files, Waveforms and AUDIO dicts carry their
    own rate. Channels are mixed to mono by their mean and the result is resampled with soxr.
    Audio longer than ``max_seconds`` is refused (``None`` for no limit) so that a wrong file
    cannot fill memory. Silence is allowed here; see ``check_not_silent``.
    """
    sample_rate = _checked_rate(sample_rate, "sample_rate")
    if max_seconds is not None and not (_is_number(max_seconds) and max_seconds > 0):
        raise AudioError(
            f"max_seconds must be a positive number or None, got {max_seconds!r}",
            "pass e.g. max_seconds=600, or max_seconds=None for no limit",
        )

    if isinstance(source, (str, os.PathLike)):
        mono, rate = _decode_file(Path(source), max_seconds)
    elif isinstance(source, Waveform):
        mono, rate = _mono_from_array(source.samples, source.sample_rate, "the Waveform")
    elif isinstance(source, dict):
        mono, rate = _mono_from_comfy(source)
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        if source_rate is None:
            raise AudioError(
                "an audio array was given without its sample rate",
                "pass source_rate=<Hz> (e.g. source_rate=44100) together with the array",
            )
        mono, rate = _mono_from_array(source, source_rate, "the audio array")
    else:
        raise AudioError(
            f"cannot use a {type(source).__name__} as audio",
            "pass a file path, a numpy array or torch tensor with source_rate, a Waveform, "
            "or a ComfyUI AUDIO dict",
        )
    return _finish(mono, rate, sample_rate, max_seconds)


def check_not_silent(wave: Waveform, threshold: float = 1e-4) -> None:
    """Raise if ``wave`` has no sound at all.

    Not part of ``load_audio`` because pauses are legitimate; the pipeline calls this on the
    whole clip, where total silence means the user picked the wrong file or track.
    """
    peak = float(np.max(np.abs(wave.samples))) if len(wave.samples) else 0.0
    if peak < threshold:
        raise AudioError(
            f"audio is silent (peak {peak:.2g}, below {threshold:g})",
            "use a recording with speech in it; if it is just very quiet, normalise its volume first",
        )


def check_long_enough(wave: Waveform, fps: float) -> None:
    """Raise if ``wave`` is shorter than one video frame: there would be nothing to animate."""
    if wave.duration < 1.0 / fps:
        raise AudioError(
            f"audio is {wave.duration * 1000:.1f} ms long, shorter than one frame at {fps:g} fps "
            f"({1000 / fps:.1f} ms)",
            f"use a recording at least {1 / fps:.2f} s long (one frame at {fps:g} fps), or a higher fps",
        )


def _finish(mono: np.ndarray, rate: float, sample_rate: int, max_seconds: float | None) -> Waveform:
    """Validate decoded mono samples and bring them to ``sample_rate``."""
    rate = _checked_rate(rate, "the source sample rate")
    if len(mono) == 0:
        raise AudioError("audio is empty (it has no samples)", "use a recording that contains sound")
    if not np.all(np.isfinite(mono)):
        bad = int(np.count_nonzero(~np.isfinite(mono)))
        raise AudioError(
            f"audio contains NaN or infinite samples ({bad} of {len(mono)})",
            "fix whatever produced the samples, or replace them, e.g. np.nan_to_num(samples)",
        )
    peak = float(np.max(np.abs(mono)))
    if peak > MAX_FLOAT_PEAK:
        raise AudioError(
            f"float audio samples reach {peak:.4g}, far outside [-1, 1]",
            "scale them into [-1, 1]: divide 16-bit PCM values by 32768, or pass them as an int16 array",
        )
    seconds = len(mono) / rate
    if max_seconds is not None and seconds > max_seconds:
        raise _too_long(f"{seconds:.1f} s", max_seconds)

    if rate != sample_rate:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    # Lossy decoding and resampling overshoot full scale slightly; keep the [-1, 1] promise.
    return Waveform(np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False), sample_rate)


def _too_long(how_long: str, max_seconds: float) -> AudioError:
    return AudioError(
        f"audio is {how_long} long, more than max_seconds={max_seconds:g}",
        "trim it to the part you need (e.g. `ffmpeg -i in.wav -t 60 out.wav`) or pass a larger max_seconds",
    )


def _checked_rate(rate, what: str) -> int:
    """A sample rate as an int, or an AudioError saying why it cannot be one."""
    if not _is_number(rate):
        raise AudioError(f"{what} must be a number of Hz, got {rate!r}", "pass e.g. 16000 or 44100")
    if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
        raise AudioError(
            f"{what} is {rate!r} Hz, outside the usable range {MIN_SOURCE_RATE}-{MAX_SOURCE_RATE} Hz",
            "check the rate you passed; speech needs at least 4000 Hz (16000 or more is best)",
        )
    return int(round(rate))


def _is_number(value) -> bool:
    """A finite real number (bools excluded: True Hz is a bug, not a rate)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# ---- files -----------------------------------------------------------------------------------


def _decode_file(path: Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of a file to mono float32 with PyAV (ffmpeg).

    Decoding frame by frame and mixing to mono as we go keeps memory at one channel, and the
    ``max_seconds`` check runs while decoding, so an hour-long file is refused without reading it.
    """
    import av  # imported here so that array-only users do not pay for ffmpeg

    if not path.exists():
        shown = str(path) if path.is_absolute() else f"{path} (looked in {path.absolute()})"
        raise AudioError(f"audio file not found: {shown}", "check the file name and folder")
    if path.is_dir():
        raise AudioError(f"{path} is a folder, not an audio file", "pass the path of the audio file in it")

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise AudioError(
            f"cannot read {path} as audio, it is corrupt or not a media file ({_reason(exc)})", REEXPORT_FIX
        ) from exc

    with container:
        if not container.streams.audio:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams at all"
            raise AudioError(
                f"{path} has no audio stream (ffmpeg found only: {kinds})",
                "use an audio file, or a video that has a sound track",
            )
        stream = container.streams.audio[0]
        declared = _declared_seconds(stream)
        resampler = av.AudioResampler(format="fltp")  # planar float: one row per channel
        pieces: list[np.ndarray] = []
        rate, n_samples = None, 0
        try:
            for frame in container.decode(stream):
                rate = rate or frame.sample_rate
                if frame.sample_rate != rate:
                    raise AudioError(f"the sample rate of {path} changes mid-stream", REEXPORT_FIX)
                for planar in resampler.resample(frame):
                    pieces.append(planar.to_ndarray().mean(axis=0, dtype=np.float32))
                    n_samples += planar.samples
                if max_seconds is not None and n_samples > max_seconds * rate:
                    how_long = f"about {declared:.1f} s" if declared else f"over {max_seconds:g} s"
                    raise _too_long(how_long, max_seconds)
            for planar in resampler.resample(None):  # flush (a no-op unless ffmpeg buffered samples)
                pieces.append(planar.to_ndarray().mean(axis=0, dtype=np.float32))
                n_samples += planar.samples
        except (av.error.FFmpegError, ValueError) as exc:
            raise AudioError(
                f"{path} is corrupt or truncated, decoding failed ({_reason(exc)})", REEXPORT_FIX
            ) from exc

    if n_samples == 0 or rate is None:
        raise AudioError(
            f"{path} has an audio stream but no samples in it", "use a recording that contains sound"
        )
    decoded = n_samples / rate
    # ffmpeg reckons a WAV's duration from the file's size, so a cut-off WAV looks whole to it; the header's
    # data size still says how long the recording was.
    declared = _wav_header_seconds(path) or declared
    if declared and declared - decoded > max(TRUNCATION_MIN_SECONDS, TRUNCATION_MIN_FRACTION * declared):
        raise AudioError(
            f"{path} looks truncated: its header says {declared:.2f} s "
            f"but only {decoded:.2f} s could be decoded",
            "download or copy the file again; if it plays fine elsewhere, " + REEXPORT_FIX,
        )
    return np.concatenate(pieces), rate


def _wav_header_seconds(path: Path) -> float | None:
    """The length a WAV file's header declares, or None for other files and WAV layouts ``wave`` cannot read."""
    try:
        with wav_file.open(str(path)) as header:
            size = header.getnframes() * header.getsampwidth() * header.getnchannels()
            if size >= 0xFFFFFF00:  # a streamed WAV's placeholder size: it declares nothing
                return None
            return header.getnframes() / header.getframerate()
    except (wav_file.Error, EOFError, OSError, ZeroDivisionError):
        return None


def _declared_seconds(stream) -> float | None:
    """The stream's duration according to its header, if it has one."""
    if stream.duration is None or stream.time_base is None:
        return None
    return float(stream.duration * stream.time_base)


def _reason(exc: Exception) -> str:
    """The useful part of an ffmpeg error, without errno noise."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# ---- arrays ----------------------------------------------------------------------------------


def _mono_from_comfy(audio: dict) -> tuple[np.ndarray, float]:
    """ComfyUI's AUDIO type: ``{"waveform": (B, C, S) tensor, "sample_rate": int}``."""
    if "waveform" not in audio or "sample_rate" not in audio:
        raise AudioError(
            f"this dict is not a ComfyUI AUDIO value (keys: {sorted(map(str, audio))})",
            'connect an AUDIO output, or pass {"waveform": tensor (B, C, S), "sample_rate": Hz}',
        )
    waveform = _as_numpy(audio["waveform"], "the AUDIO waveform")
    if waveform.ndim == 3:
        if waveform.shape[0] == 0:
            raise AudioError("the AUDIO batch is empty", "connect an AUDIO output that holds a clip")
        waveform = waveform[0]  # the pipeline animates one clip; extra batch items are ignored
    if waveform.ndim != 2:
        raise AudioError(
            f"the AUDIO waveform has shape {tuple(waveform.shape)}, expected (batch, channels, samples)",
            "connect a standard AUDIO output",
        )
    return _mono(_to_float(waveform, "the AUDIO waveform")), audio["sample_rate"]


def _mono_from_array(data, rate, what: str) -> tuple[np.ndarray, float]:
    """A bare 1-D or 2-D array (either channel order) as float mono."""
    samples = _as_numpy(data, what)
    if samples.ndim == 2:
        samples = _channels_first(samples, what)
    elif samples.ndim != 1:
        raise AudioError(
            f"{what} has shape {tuple(samples.shape)}; audio arrays must be 1-D or 2-D",
            "pass shape (samples,), (channels, samples) or (samples, channels)",
        )
    return _mono(_to_float(samples, what)), rate


def _as_numpy(data, what: str) -> np.ndarray:
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu()
        # numpy has no bfloat16, and half precision gains nothing here
        return (data.float() if data.is_floating_point() else data).numpy()
    if isinstance(data, np.ndarray):
        return data
    raise AudioError(
        f"{what} is a {type(data).__name__}, not an array", "pass a numpy array or a torch tensor"
    )


def _channels_first(samples: np.ndarray, what: str) -> np.ndarray:
    """(C, S) from (C, S) or (S, C): channels are the short side, as audio is long."""
    rows, cols = samples.shape
    if rows < cols and rows <= MAX_CHANNELS:
        return samples
    if cols < rows and cols <= MAX_CHANNELS:
        return samples.T
    raise AudioError(
        f"cannot tell channels from samples in {what} of shape {(rows, cols)}",
        f"pass a 1-D array, or (channels, samples) or (samples, channels) with <= {MAX_CHANNELS} channels",
    )


def _to_float(samples: np.ndarray, what: str) -> np.ndarray:
    """Float samples in [-1, 1]; integer PCM is scaled by its full-scale value."""
    kind, bits = samples.dtype.kind, samples.dtype.itemsize * 8
    if kind == "f":
        return samples.astype(np.float32, copy=False)
    if kind == "i" and bits <= 32:
        return (samples / float(2 ** (bits - 1))).astype(np.float32)
    if kind == "u" and bits == 8:  # 8-bit WAV is unsigned with silence at 128
        return ((samples.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    raise AudioError(
        f"{what} has dtype {samples.dtype}, which is not an audio sample format",
        "pass float32/float64 samples in [-1, 1], or int16/int32 PCM",
    )


def _mono(channels_first: np.ndarray) -> np.ndarray:
    return channels_first.mean(axis=0, dtype=np.float32) if channels_first.ndim == 2 else channels_first


def _samples_at(wave: Waveform, rate: int) -> np.ndarray:
    """A front end's input: ``wave``'s samples at ``rate``, resampled only if needed."""
    if not isinstance(wave, Waveform):
        raise AudioError(
            f"expected a Waveform, got a {type(wave).__name__}", "load the audio with load_audio first"
        )
    if wave.sample_rate != rate or np.asarray(wave.samples).ndim != 1:
        wave = load_audio(wave, sample_rate=rate, max_seconds=None)
    return np.asarray(wave.samples, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# Video frames
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Front ends
# ----------------------------------------------------------------------------------------------


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


class Wav2Vec2FrontEnd:
    """Every hidden state of a wav2vec2 model read from a local folder (50 features per second).

    The folder needs ``config.json`` and ``model.safetensors`` (for instance from
    facebook/wav2vec2-base-960h); ``preprocessor_config.json`` is optional. Weights are only ever
    read from safetensors: a ``pytorch_model.bin`` is a pickle that can run code, so it is refused.

    Long audio is processed in chunks of ``chunk_seconds`` with ``context_seconds`` of extra audio
    on each side that is run but dropped, so memory stays bounded and chunk seams see context.
    Chunks start on the model's frame grid, so the output has exactly as many steps as a single
    pass over the whole clip would (49 for one second of base models).
    """

    name = "wav2vec2"

    def __init__(
        self,
        folder,
        device="cpu",
        dtype=torch.float32,
        chunk_seconds: float = 20.0,
        context_seconds: float = 1.0,
    ):
        folder = Path(folder).expanduser()
        self.folder = folder
        _check_wav2vec2_folder(folder)
        self.sample_rate, self.normalize = _read_preprocessor(folder)
        self.device, self.dtype = torch.device(device), dtype
        self.model = _load_wav2vec2(folder, dtype).to(self.device).eval()

        config = self.model.config
        self._hop = math.prod(config.conv_stride)
        self._field = _receptive_field(tuple(config.conv_kernel), tuple(config.conv_stride))
        self.feature_rate = self.sample_rate / self._hop
        self.num_layers = config.num_hidden_layers + 1  # the embeddings plus every layer
        self.feature_dim = config.hidden_size
        self._core_frames = max(1, round(chunk_seconds * self.feature_rate))
        self._context_frames = max(0, round(context_seconds * self.feature_rate))

    def __call__(self, wave: Waveform) -> torch.Tensor:
        """(T, num_layers, hidden_size) float32 on the CPU."""
        samples = _samples_at(wave, self.sample_rate)
        if self.normalize:
            samples = _zero_mean_unit_var(samples)
        # The conv stack needs one receptive field of input to produce a single step.
        samples = np.pad(samples, (0, max(0, self._field - len(samples))))
        # The hidden states are read before any adapter layers, so those do not shorten them.
        steps = int(self.model._get_feat_extract_output_lengths(len(samples), add_adapter=False))

        pieces = []
        for start, end, keep_from, keep_to in _chunk_plan(
            len(samples), steps, self._hop, self._field, self._core_frames, self._context_frames
        ):
            chunk = torch.from_numpy(samples[start:end]).to(self.device, self.dtype)[None]
            with torch.inference_mode():
                states = self.model(chunk, output_hidden_states=True).hidden_states
                kept = torch.stack(states)[:, 0, keep_from:keep_to]  # (L, t, C)
                pieces.append(rearrange(kept, "l t c -> t l c").float().cpu())
        # Concatenating outside inference mode gives an ordinary tensor that later training code may use.
        return torch.cat(pieces)


def _check_wav2vec2_folder(folder: Path) -> None:
    """Refuse a folder that cannot hold a loadable safetensors wav2vec2, naming what is missing."""
    put_there = f"put facebook/wav2vec2-base-960h's config.json and model.safetensors in {folder}"
    if not folder.is_dir():
        raise WeightsError(f"wav2vec2 folder not found: {folder}", f"create it and {put_there}")
    config = folder / "config.json"
    if not config.is_file():
        raise WeightsError(
            f"config.json is missing from the wav2vec2 folder {folder} (looked for {config})", put_there
        )
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise WeightsError(f"cannot read {config} as JSON ({exc})", put_there) from exc
    if model_type != "wav2vec2":
        raise WeightsError(f"{config} describes a {model_type!r} model, not wav2vec2", put_there)

    weights = folder / "model.safetensors"
    if weights.is_file() or (folder / "model.safetensors.index.json").is_file():
        return
    pickles = sorted(p.name for p in folder.glob("*.bin"))
    if pickles:
        raise WeightsError(
            f"{folder} has {', '.join(pickles)} but no model.safetensors; safetensors weights are required "
            "because .bin files are pickles that can run code when loaded",
            f"download model.safetensors from the same Hugging Face repository into {folder}",
        )
    raise WeightsError(
        f"model.safetensors is missing from the wav2vec2 folder {folder} (looked for {weights})", put_there
    )


def _read_preprocessor(folder: Path) -> tuple[int, bool]:
    """(sampling_rate, do_normalize) from preprocessor_config.json, else wav2vec2's defaults."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return SAMPLE_RATE, True
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
        rate = int(settings.get("sampling_rate", SAMPLE_RATE))
        return rate, bool(settings.get("do_normalize", True))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise WeightsError(
            f"cannot read {path} ({exc})",
            "delete it (defaults are used) or copy the model's original preprocessor_config.json",
        ) from exc


def _load_wav2vec2(folder: Path, dtype: torch.dtype):
    """The bare Wav2Vec2Model (a CTC checkpoint's head is dropped), refusing mismatched weights."""
    from transformers import Wav2Vec2Model  # slow import, only needed here

    fix = (
        "put config.json and model.safetensors from the same wav2vec2 model "
        f"(e.g. facebook/wav2vec2-base-960h) in {folder}"
    )
    try:
        model, info = Wav2Vec2Model.from_pretrained(
            folder, local_files_only=True, use_safetensors=True, dtype=dtype, output_loading_info=True
        )
    except Exception as exc:  # transformers raises many types; all mean the same thing here
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsError(f"cannot load wav2vec2 from {folder}: {first_line}", fix) from exc
    # masked_spec_embed is only used for training-time masking; some checkpoints omit it.
    missing = sorted(k for k in info.get("missing_keys", ()) if k != "masked_spec_embed")
    if missing:
        raise WeightsError(
            f"model.safetensors in {folder} does not match config.json "
            f"({len(missing)} weights missing, e.g. {missing[0]})",
            fix,
        )
    return model


def _zero_mean_unit_var(samples: np.ndarray) -> np.ndarray:
    """Whole-clip normalisation, Wav2Vec2FeatureExtractor's own, on float64 samples: its ``__call__`` would cast
    them to float32 first, and float32 sums over a long clip make the mean and variance less exact."""
    from transformers import Wav2Vec2FeatureExtractor  # slow import, only needed here

    normalised = Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm([samples.astype(np.float64)], None)[0]
    return normalised.astype(np.float32)


def _receptive_field(kernels: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """Samples seen by one output step (400 for base models)."""
    field, jump = 1, 1
    for kernel, stride in zip(kernels, strides, strict=True):
        field += (kernel - 1) * jump
        jump *= stride
    return field


def _chunk_plan(
    n_samples: int, total: int, hop: int, field: int, core_frames: int, context_frames: int
) -> list[tuple[int, int, int, int]]:
    """(start, end, keep_from, keep_to) per chunk: run samples[start:end], keep steps [keep_from, keep_to).

    ``total``: the steps a whole-clip pass over ``n_samples`` gives. Output step k reads samples
    [k*hop, k*hop + field). A chunk starting at step s's first sample produces steps s, s+1, ...
    exactly as a whole-clip pass would (up to attention context), so the kept slices tile the
    whole-clip output with no gaps or repeats.
    """
    plan = []
    for first in range(0, total, core_frames):
        last = min(total, first + core_frames)
        run_from = max(0, first - context_frames)
        end = min(n_samples, (last - 1 + context_frames) * hop + field)
        plan.append((run_from * hop, end, first - run_from, last - run_from))
    return plan


# ----------------------------------------------------------------------------------------------
# Features per video frame
# ----------------------------------------------------------------------------------------------


@dataclass
class AudioFeatures:
    """What the models consume: a window of audio features for every video frame."""

    frames: torch.Tensor  # (n_frames, 2*window+1, L, C)
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
