"""Audio in: whatever the user has (a file, an array, a ComfyUI AUDIO dict) as one clean, checked ``Waveform``.

``load_audio`` turns it into float32 mono samples at 16 kHz (``SAMPLE_RATE``): files (audio or video) are
decoded with PyAV, channels are mixed to mono and the result is resampled with soxr. Every way that can fail
(a missing or corrupt file, a truncated one, a wrong sample rate, unscaled PCM, NaN) raises an ``AudioError``
that says what is wrong and how to fix it. ``check_not_silent`` and ``check_long_enough`` refuse audio that
loads but cannot drive a video.
"""

from __future__ import annotations

import math
import numbers
import os
import wave as wav_file  # the stdlib WAV header reader; "wave" names waveforms here
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import torch

from ..errors import AudioError

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
