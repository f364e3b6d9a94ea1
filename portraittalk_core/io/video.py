"""Video files: the generated frames and the driving audio written into an mp4, a video's frames read
back, and an mp4's facts probed.

``VideoWriter`` streams frames into an H.264 (yuv420p) + AAC mp4 with PyAV: each frame is converted
and handed to the encoder as it arrives and the encoder's packets go straight to the file, so
memory does not grow with the video's length. The audio is encoded alongside, about a second
ahead of the video, so the two streams are interleaved in time order as ordinary players expect.

Encoders (checked against the PyAV 18.1 wheel installed here, FFmpeg libavcodec 62): its bundled
FFmpeg has ``libx264`` (the name ``h264`` resolves to it too), FFmpeg's native ``aac`` (mono
``fltp``, frame size 1024), and ``h264_nvenc``, but neither ``libopenh264`` nor ``libfdk_aac``.
``libx264`` is used with ``crf`` and ``preset``. An FFmpeg without it falls back to whatever
FFmpeg calls ``h264``, then to ``libopenh264``; those run with their default rate control, since
``crf`` and ``preset`` are libx264 options, and the fallback is logged as a warning.

No half-written video is ever left at the target path: the file is written under a hidden
temporary name beside the target (``.<name>.<random>.part``) and renamed into place only when
``close()`` succeeds. An exception inside the ``with`` block (``KeyboardInterrupt`` and
``errors.Cancelled`` included) or ``abort()`` deletes the partial file.

``video_frames`` is the one place a video's frames are decoded (a driving video's head motion, the
training shards): RGB uint8 frames of the first video stream, decoded as they are taken, optionally
only the first seconds and at most so many frames a second.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..errors import InputError, PortraitTalkError

__all__ = ["VideoWriter", "write_video", "VideoInfo", "probe_video", "video_frames", "NoVideoStream"]

log = logging.getLogger(__name__)

#: Sample rates kept as they are; anything else is resampled to 48 kHz. AAC supports more (8 kHz to
#: 96 kHz), but 44.1/48 kHz play everywhere, and at 48 kHz the silence that pads AAC's last 1024-
#: sample frame is under 21.4 ms, less than one video frame at up to 46 fps, even in players that
#: ignore the mp4 edit list which trims it.
_KEPT_AUDIO_RATES = (44100, 48000)
# The container each extension names: the file is what its name says.
VIDEO_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}
_DEFAULT_AUDIO_RATE = 48000
#: How far (seconds) the audio is encoded ahead of the video written so far.
_AUDIO_LEAD = 1.0
#: Source samples per AudioFrame given to the encoder (PyAV re-chunks them into 1024-sample frames).
_AUDIO_CHUNK = 16384
_X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                 "slower", "veryslow", "placebo")
#: BT.709 (matrix, primaries, transfer) and limited ("MPEG", 16-235) range: the frames are converted
#: with this matrix and the stream is tagged with it, so players do not have to guess.
_BT709 = 1
_RANGE_LIMITED = 1


@functools.lru_cache(maxsize=None)
def _h264_encoder() -> str:
    """The first H.264 encoder found: libx264, else FFmpeg's default 'h264', else libopenh264."""
    for name in ("libx264", "h264", "libopenh264"):
        try:
            codec = av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - PyAV raises UnknownCodecError or ValueError
            continue
        if codec.name != "libx264":
            log.warning("libx264 is missing from PyAV's FFmpeg; encoding H.264 with %s, without "
                        "the crf/preset settings", codec.name)
        return codec.name
    raise PortraitTalkError(
        "PyAV's FFmpeg has no H.264 encoder (libx264, h264 or libopenh264)",
        fix="Install the PyAV wheel from PyPI (pip install --force-reinstall av), which bundles "
            "libx264")


def _frame_rate(fps: Any) -> Fraction:
    """fps as an exact Fraction. NTSC rates written as decimals (23.976, 29.97, 59.94) become
    n*1000/1001; other rates are Fraction(fps).limit_denominator(1001); a Fraction is kept."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        try:
            value = float(fps)
        except (TypeError, ValueError):
            raise InputError(f"Frame rate {fps!r} is not a number",
                             fix="Pass fps as a positive number such as 25 or 29.97") from None
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"Frame rate {fps!r} is not a positive number",
                             fix="Pass fps as a positive number such as 25 or 29.97")
        ntsc = round(value * 1.001)
        if abs(value - round(value)) > 1e-3 and abs(value - ntsc * 1000 / 1001) < 5e-3:
            rate = Fraction(ntsc * 1000, 1001)
        else:
            rate = Fraction(value).limit_denominator(1001)
    if rate <= 0:
        raise InputError(f"Frame rate {fps!r} is not a positive number",
                         fix="Pass fps as a positive number such as 25 or 29.97")
    return rate


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy view/copy of a numpy array or a torch tensor (without importing torch)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor
        x = x.detach()
        if x.is_floating_point():
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _coerce_audio(audio: Any) -> tuple[np.ndarray, int] | None:
    """(float32 mono samples in [-1, 1], sample rate) from a Waveform-like object or a tuple."""
    if audio is None:
        return None
    if hasattr(audio, "samples") and hasattr(audio, "sample_rate"):
        samples, rate = audio.samples, audio.sample_rate
    elif isinstance(audio, (tuple, list)) and len(audio) == 2:
        samples, rate = audio
    else:
        raise InputError(f"Audio of type {type(audio).__name__} is not understood",
                         fix="Pass a Waveform (with .samples and .sample_rate) or a "
                             "(samples, sample_rate) tuple")
    try:
        rate = int(rate)
    except (TypeError, ValueError):
        rate = 0
    if rate <= 0:
        raise InputError(f"Audio sample rate {rate!r} is not a positive integer",
                         fix="Give the audio's real sample rate, e.g. 16000")
    x = _to_numpy(samples)
    if x.ndim == 2:  # downmix (channels, samples) or (samples, channels)
        if x.shape[0] <= 8 and x.shape[0] < x.shape[1]:
            x = x.mean(axis=0)
        elif x.shape[1] <= 8:
            x = x.mean(axis=1)
    if x.ndim != 1:
        raise InputError(f"Audio samples have shape {tuple(x.shape)}, not (samples,)",
                         fix="Pass mono audio as a 1-D array")
    if x.size == 0:
        raise InputError("The audio is empty", fix="Pass audio with at least one sample")
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        mid = (int(info.max) + int(info.min) + 1) / 2
        x = (x.astype(np.float64) - mid) / (int(info.max) + 1 - mid)
    elif x.dtype.kind != "f":
        raise InputError(f"Audio samples of dtype {x.dtype} are not understood",
                         fix="Pass float samples in [-1, 1] or int16 PCM")
    x = np.nan_to_num(x.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.ascontiguousarray(np.clip(x, -1.0, 1.0)), rate


def _frames_to_uint8(frames: Any) -> np.ndarray:
    """(N, H, W, 3) uint8 from uint8 or float-in-[0, 1] numpy arrays / torch tensors, (H, W, 3)
    or (N, H, W, 3). Float values are clipped to [0, 1] and rounded to the nearest level."""
    if hasattr(frames, "detach") and hasattr(frames, "is_floating_point"):  # torch.Tensor
        t = frames.detach()
        if t.is_floating_point():
            _check_float_range(float(t.min()), float(t.max()), bool(t.isnan().any()), t.shape)
            t = (t.float().clamp(0, 1) * 255).round().to(dtype=_torch_uint8(t))
        arr = t.cpu().numpy()
    else:
        arr = np.asarray(frames)
        if arr.dtype.kind == "f":
            if arr.size:
                _check_float_range(float(np.min(arr)), float(np.max(arr)),
                                   bool(np.isnan(arr).any()), arr.shape)
            arr = np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"Frames have shape {tuple(arr.shape)}, not (N, H, W, 3) or (H, W, 3)",
                         fix="Pass RGB frames channels-last, e.g. tensor.permute(0, 2, 3, 1)")
    if arr.dtype != np.uint8:
        raise InputError(f"Frames of dtype {arr.dtype} are not understood",
                         fix="Pass uint8 frames (0-255) or float frames in [0, 1]")
    return arr


def _torch_uint8(t: Any) -> Any:
    import torch  # only reached when torch tensors are passed, so torch is installed

    return torch.uint8


def _check_float_range(lo: float, hi: float, has_nan: bool, shape: Any) -> None:
    if has_nan:
        raise InputError(f"Float frames of shape {tuple(shape)} contain NaN",
                         fix="Check the generation for numerical overflow (e.g. run in float32)")
    if lo < -0.5 or hi > 1.5:
        raise InputError(f"Float frames range over [{lo:.3g}, {hi:.3g}], not [0, 1]",
                         fix="Map frames to [0, 1] first (x / 255 for 0-255 values, "
                             "(x + 1) / 2 for [-1, 1] values), or pass uint8")


class VideoWriter:
    """Streams frames into an mp4 (H.264 yuv420p video, AAC audio) with PyAV.

    Frames are encoded as they arrive, so memory does not grow with the video's length. The file
    is written under a temporary name beside the target and renamed into place only when close()
    succeeds; on an exception inside the ``with`` block (including KeyboardInterrupt and
    errors.Cancelled) or abort(), the partial file is deleted, so no half-written video is ever
    left at the target path. An existing file at the target is replaced only by a complete video.
    The container is the one the extension names (``VIDEO_FORMATS``: MP4, or QuickTime for .mov);
    another extension is refused. The target's folder is created if it is missing.

    Video: frame i has pts i in a time base of 1/fps (fps may be fractional: 29.97 is stored as
    30000/1001). ``crf`` and ``preset`` are libx264's (18 is visually near-lossless; a lower-case
    preset name from ultrafast to placebo). Frames are converted to yuv420p with the BT.709 matrix
    in limited range and the stream is tagged so. yuv420p needs even sizes: an odd width or height
    is **padded** by one pixel, repeating the last column/row (63x65 is written as 64x66); nothing
    is cropped. The size is fixed by the first frame.

    Audio (optional): a Waveform-like object (``.samples``, ``.sample_rate``) or a
    ``(samples, sample_rate)`` tuple; mono float in [-1, 1] (int PCM is scaled, a 2-D array is
    downmixed). It is encoded whole, whatever the number of frames, with FFmpeg's native AAC
    encoder, mono, at ``audio_bitrate``; 44.1/48 kHz are kept, other rates are resampled to
    48 kHz. The encoder's 1024-sample priming and last-frame padding are trimmed by the mp4 edit
    list, so the audio stream's duration equals the input's to the sample (see probe_video).
    In normal use the caller writes ceil(audio_duration * fps) frames.

    The MP4 is written with ``+faststart`` (index at the front, for progressive playback in
    browsers).
    """

    def __init__(self, path: str | os.PathLike, fps: float, audio: Any = None, crf: int = 18,
                 preset: str = "medium", audio_bitrate: int = 128_000):
        self.path = Path(os.fspath(path)).expanduser()
        self.fps = _frame_rate(fps)
        self.frames_written = 0
        self._container: Any = None
        self._tmp: Path | None = None
        self._state = "open"  # open -> closed | aborted
        self._size: tuple[int, int] | None = None  # (H, W) of the frames as given

        if not isinstance(crf, (int, float)) or not 0 <= crf <= 51:
            raise InputError(f"crf {crf!r} is outside 0-51",
                             fix="Use a crf from 0 (lossless) to 51; 18 is visually lossless")
        if preset not in _X264_PRESETS:
            raise InputError(f"Unknown x264 preset {preset!r}",
                             fix=f"Use one of {', '.join(_X264_PRESETS)}")
        if not isinstance(audio_bitrate, int) or audio_bitrate <= 0:
            raise InputError(f"Audio bitrate {audio_bitrate!r} is not a positive integer",
                             fix="Use e.g. audio_bitrate=128_000")
        audio_in = _coerce_audio(audio)
        self._format = VIDEO_FORMATS.get(self.path.suffix.lower())
        if self._format is None:
            raise InputError(f"Cannot write a video named '{self.path.name}': the extension must be one of "
                             f"{', '.join(VIDEO_FORMATS)}", fix=f"Name it e.g. '{self.path.stem or 'out'}.mp4'")
        self._encoder = _h264_encoder()

        self._tmp = self._make_temp_file()
        try:
            self._container = av.open(str(self._tmp), mode="w", format=self._format,
                                      options={"movflags": "+faststart"})
            vs = self._container.add_stream(self._encoder, rate=self.fps)
            vs.pix_fmt = "yuv420p"
            vs.codec_context.time_base = 1 / self.fps
            cc = vs.codec_context
            cc.colorspace, cc.color_primaries, cc.color_trc = _BT709, _BT709, _BT709
            cc.color_range = _RANGE_LIMITED
            if self._encoder == "libx264":
                # mbtree=0: x264's macroblock tree reads uninitialised memory on small frames (seen below 128 px), so
                # the same frames encoded twice could differ; the same seed must give the same file.
                vs.options = {"crf": str(crf), "preset": preset, "x264-params": "mbtree=0"}
            self._vstream = vs

            self._audio: np.ndarray | None = None
            self._audio_rate = 0
            self._audio_pos = 0  # source samples handed to the encoder so far
            self._astream = None
            if audio_in is not None:
                self._audio, self._audio_rate = audio_in
                out_rate = (self._audio_rate if self._audio_rate in _KEPT_AUDIO_RATES
                            else _DEFAULT_AUDIO_RATE)
                ast = self._container.add_stream("aac", rate=out_rate)
                ast.layout = "mono"
                ast.format = "fltp"
                ast.bit_rate = audio_bitrate
                ast.codec_context.time_base = Fraction(1, out_rate)
                self._astream = ast
        except BaseException:
            self._discard()
            raise

    # -- set-up ------------------------------------------------------------------------------

    def _make_temp_file(self) -> Path:
        """Create the target's folder and reserve a temporary file beside the target."""
        folder = self.path.parent
        if self.path.is_dir():
            raise PortraitTalkError(f"The video path {self.path} is a folder",
                                    fix="Give a file name such as out.mp4")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{self.path.name}.{uuid.uuid4().hex[:12]}.part"
            with open(tmp, "xb"):
                pass
        except OSError as e:
            raise PortraitTalkError(
                f"Cannot write the video {self.path} ({e.strerror or e})",
                fix="Choose an output folder you can write to, or fix its permissions") from None
        return tmp

    # -- writing -----------------------------------------------------------------------------

    def write(self, frames: Any) -> None:
        """Encode frames: uint8 numpy (N, H, W, 3) or (H, W, 3), float numpy/torch in [0, 1]
        (N, H, W, 3) or (H, W, 3), or an iterable (list, generator) of such chunks. Frames of a
        size other than the first frame's raise InputError."""
        self._check_open()
        if isinstance(frames, (np.ndarray, np.generic)) or hasattr(frames, "detach"):
            self._write_array(_frames_to_uint8(frames))
        elif isinstance(frames, Iterable) and not isinstance(frames, (str, bytes)):
            for chunk in frames:
                self.write(chunk)
        else:
            raise InputError(f"Frames of type {type(frames).__name__} are not understood",
                             fix="Pass numpy arrays or torch tensors of shape (N, H, W, 3)")

    def _write_array(self, arr: np.ndarray) -> None:
        if arr.shape[0] == 0:
            return
        h, w = arr.shape[1:3]
        if self._size is None:
            if h < 2 or w < 2:
                raise InputError(f"Frames of {w}x{h} are too small to encode",
                                 fix="Pass frames of at least 2x2 pixels")
            self._size = (h, w)
            self._vstream.width = w + (w % 2)
            self._vstream.height = h + (h % 2)
        elif (h, w) != self._size:
            raise InputError(
                f"Frame {self.frames_written} is {w}x{h} but the video's first frame was "
                f"{self._size[1]}x{self._size[0]}",
                fix="Resize all frames of a video to the same size")
        pad = ((0, h % 2), (0, w % 2), (0, 0))
        for img in arr:
            if h % 2 or w % 2:
                img = np.pad(img, pad, mode="edge")
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf = vf.reformat(format="yuv420p", dst_colorspace=_BT709,
                             dst_color_range=_RANGE_LIMITED)
            vf.pts = self.frames_written
            vf.time_base = self._vstream.codec_context.time_base
            vf.duration = 1
            self._mux(self._vstream.encode(vf))
            self.frames_written += 1
        self._pump_audio(float(self.frames_written / self.fps) + _AUDIO_LEAD)

    def _pump_audio(self, until: float | None) -> None:
        """Encode and mux the audio up to `until` seconds (None: all of it, and flush)."""
        if self._astream is None:
            return
        total = len(self._audio)
        end = total if until is None else min(total, math.ceil(until * self._audio_rate))
        while self._audio_pos < end:
            n = min(_AUDIO_CHUNK, end - self._audio_pos)
            chunk = self._audio[self._audio_pos:self._audio_pos + n]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            af.sample_rate = self._audio_rate
            af.pts = self._audio_pos
            af.time_base = Fraction(1, self._audio_rate)
            self._mux(self._astream.encode(af))
            self._audio_pos += n
        if until is None:
            self._mux(self._astream.encode(None))

    def _mux(self, packets: list) -> None:
        try:
            self._container.mux(packets)
        except OSError as e:
            raise PortraitTalkError(
                f"Writing the video {self.path} failed ({e})",
                fix="Check that the disk has free space and the folder is writable") from e

    # -- finishing ---------------------------------------------------------------------------

    def close(self) -> Path:
        """Finish encoding, write the rest of the audio, and move the file into place.

        Returns the final path. With no frames written, raises PortraitTalkError and leaves no
        file. On any failure the temporary file is deleted."""
        if self._state == "closed":
            return self.path
        self._check_open()
        try:
            if self.frames_written == 0:
                raise PortraitTalkError(
                    f"No frames were written, so no video was saved to {self.path}",
                    fix="Check that the generation produced frames before saving")
            self._mux(self._vstream.encode(None))
            self._pump_audio(None)
            try:
                self._container.close()
            except OSError as e:
                raise PortraitTalkError(
                    f"Finishing the video {self.path} failed ({e})",
                    fix="Check that the disk has free space and the folder is writable") from e
            self._container = None
            try:
                os.replace(self._tmp, self.path)
            except OSError as e:
                raise PortraitTalkError(
                    f"Cannot move the finished video into place at {self.path} "
                    f"({e.strerror or e})",
                    fix="Check that the target is not open in another program and that the "
                        "folder is writable") from None
        except BaseException:
            self._discard()
            raise
        self._tmp = None
        self._state = "closed"
        self._audio = None
        return self.path

    def abort(self) -> None:
        """Stop and delete the partial file; nothing is left at the target or beside it."""
        if self._state == "open":
            self._discard()

    def _discard(self) -> None:
        self._state = "aborted"
        self._audio = None
        tmp, container = self._tmp, self._container
        self._tmp = self._container = None
        # Unlink first (POSIX allows it with the file open), so that closing the container does
        # not spend time on the faststart rewrite of a file that is being thrown away.
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - a failed trailer of a discarded file is expected
                pass
        if tmp is not None:  # where unlinking an open file is refused (Windows)
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                log.warning("Could not delete the partial video %s", tmp)

    def _check_open(self) -> None:
        if self._state != "open":
            raise PortraitTalkError(f"The VideoWriter for {self.path} is already {self._state}",
                                    fix="Create a new VideoWriter for each video")

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            if self._state != "aborted":  # abort() inside the block: nothing left to do
                self.close()
        else:
            self.abort()
        return False

    def __del__(self):
        try:
            if getattr(self, "_state", None) == "open":
                self._discard()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def __repr__(self) -> str:
        return (f"VideoWriter({str(self.path)!r}, fps={self.fps}, frames_written="
                f"{self.frames_written}, {self._state})")


def write_video(path: str | os.PathLike, frames: Any, fps: float, audio: Any = None,
                **kw: Any) -> Path:
    """Write frames (an array, tensor, or iterable of chunks) and optional audio to an mp4 in one
    call; ``kw`` goes to VideoWriter (crf, preset, audio_bitrate). Returns the final path."""
    with VideoWriter(path, fps, audio=audio, **kw) as writer:
        writer.write(frames)
    return writer.path


@dataclass
class VideoInfo:
    """Facts of a video file, as read back by probe_video."""

    frames: int  # decoded video frames (exact)
    fps: float
    width: int
    height: int
    duration: float  # of the video stream, seconds
    video_codec: str
    audio_codec: str | None
    audio_duration: float | None  # of the audio stream per the container (edit list applied)
    audio_rate: int | None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's stream facts; the frame count comes from decoding every frame (exact).

    ``audio_duration`` is the audio stream's duration as the container states it, which for mp4
    files written here is the input audio's length (the AAC priming and padding are cut by the
    edit list, as ffprobe reports it). A decoder that plays the whole last AAC frame plays up to
    1023 samples (21 ms at 48 kHz) of padding silence beyond it."""
    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        raise InputError(f"Video file {p} does not exist", fix="Check the path")
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError) as e:
        raise InputError(f"Cannot read the video {p} ({e})",
                         fix="Check that the file is a complete video") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{p} has no video stream", fix="Pass a video file")
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        width, height = vs.codec_context.width, vs.codec_context.height
        video_codec = vs.codec_context.name
        duration = (float(vs.duration * vs.time_base)
                    if vs.duration is not None and vs.time_base else None)
        audio_codec = audio_duration = audio_rate = None
        if container.streams.audio:
            ast = container.streams.audio[0]
            audio_codec = ast.codec_context.name
            audio_rate = ast.rate
            if ast.duration is not None and ast.time_base:
                audio_duration = float(ast.duration * ast.time_base)
        try:
            frames = sum(1 for _ in container.decode(vs))
        except (av.FFmpegError, OSError) as e:
            raise InputError(f"Cannot decode the video {p} ({e})",
                             fix="Check that the file is a complete video") from None
    fps = float(rate) if rate else 0.0
    if duration is None:
        duration = frames / fps if fps else 0.0
    return VideoInfo(frames=frames, fps=fps, width=width, height=height, duration=duration,
                     video_codec=video_codec, audio_codec=audio_codec,
                     audio_duration=audio_duration, audio_rate=audio_rate)


class NoVideoStream(InputError):
    """A file opened as a video holds no video stream (an audio file, say)."""


@contextmanager
def video_frames(path: str | os.PathLike, seconds: float | None = None,
                 max_fps: float | None = None) -> Iterator[tuple[Iterator[np.ndarray], float]]:
    """``(frames, fps)`` of the first video stream of the file at ``path``, open while the ``with`` block runs.

    ``frames`` yields each frame as an RGB uint8 (H, W, 3) array, decoded as it is taken, so a long video
    need not fit in memory; ``fps`` is their rate. The stream's rate is its average rate, else the rate
    FFmpeg guesses, else 25. ``seconds``: only the frames up to ``seconds`` (and one frame past it) are
    read (None: all). ``max_fps``: every n-th frame is kept, n the whole number of source frames per
    ``max_fps`` frames (at least 1), and ``fps`` is the source rate / n. Raises NoVideoStream for a file
    without a video stream; PyAV's ``av.error.FFmpegError`` for a file FFmpeg cannot open or decode, while
    opening or while the frames are taken, which callers name in their own words."""
    path = Path(path)
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise NoVideoStream(f"{path.name} has no video stream", "give a video file")
        stream = container.streams.video[0]
        source_fps = float(stream.average_rate or stream.guessed_rate or 25.0)
        step = max(1, int(source_fps // max_fps)) if max_fps else 1
        last = None if seconds is None else seconds + 1.0 / source_fps

        def sampled():
            for index, frame in enumerate(container.decode(stream)):
                if last is not None and index / source_fps > last:
                    return
                if index % step == 0:
                    yield frame.to_ndarray(format="rgb24")

        yield sampled(), source_fps / step
