"""VideoWriter / write_video / probe_video: streams, durations, atomic output, errors, memory."""

from __future__ import annotations

import math
import tracemalloc
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import pytest

from portraittalk_core.errors import Cancelled, InputError, PortraitTalkError
from portraittalk_core.io.video import VideoInfo, VideoWriter, probe_video, write_video


@dataclass
class FakeWaveform:
    """Stands in for audio.Waveform (duck typing: .samples and .sample_rate)."""

    samples: np.ndarray
    sample_rate: int


def tone(seconds: float, rate: int = 16000) -> FakeWaveform:
    t = np.arange(int(round(seconds * rate))) / rate
    return FakeWaveform((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


def frames(n: int, h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def decoded_audio_seconds(path) -> float:
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].rate
        return sum(f.samples for f in c.decode(audio=0)) / rate


def files_in(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_frames_fps_codecs_and_audio_duration(tmp_path):
    path = write_video(tmp_path / "a.mp4", frames(50), 25, audio=tone(2.0))
    assert path == tmp_path / "a.mp4"
    info = probe_video(path)
    assert isinstance(info, VideoInfo)
    assert (info.frames, info.fps, info.width, info.height) == (50, 25.0, 64, 64)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.duration == pytest.approx(2.0)
    assert info.audio_rate == 48000  # 16 kHz is resampled to 48 kHz
    err = abs(info.audio_duration - 2.0)
    decoded_err = abs(decoded_audio_seconds(path) - 2.0)
    print(f"audio duration error: stream {err * 1e3:.3f} ms, decoded {decoded_err * 1e3:.3f} ms")
    assert err < 1 / 25
    assert err < 1e-3  # priming and padding are trimmed by the edit list
    assert decoded_err < 1 / 25  # even a player ignoring the edit list's end stays in one frame
    assert files_in(tmp_path) == ["a.mp4"]


def test_fractional_fps_and_exact_pts(tmp_path):
    fps = 29.97
    n = math.ceil(1.5 * fps)  # 45
    samples = tone(1.5, 44100).samples
    path = write_video(tmp_path / "ntsc.mp4", frames(n), fps, audio=(samples, 44100))
    info = probe_video(path)
    assert info.frames == n
    assert info.fps == pytest.approx(30000 / 1001, abs=1e-9)
    assert info.duration == pytest.approx(n * 1001 / 30000, abs=1e-6)
    assert info.audio_rate == 44100
    err = abs(info.audio_duration - 1.5)
    print(f"29.97 fps audio duration error: {err * 1e3:.3f} ms")
    assert err < 1 / fps
    with av.open(str(path)) as c:
        times = [f.pts * f.time_base for f in c.decode(video=0)]
    assert times == [Fraction(i * 1001, 30000) for i in range(n)]


def test_odd_size_is_padded_to_even(tmp_path):
    img = np.zeros((65, 63, 3), np.uint8)  # H=65, W=63
    img[:, -1] = 200  # last column bright: the padding repeats it
    img[-1, :] = 200
    path = write_video(tmp_path / "odd.mp4", np.repeat(img[None], 5, axis=0), 25, crf=0)
    info = probe_video(path)
    assert (info.width, info.height, info.frames) == (64, 66, 5)
    with av.open(str(path)) as c:
        out = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert out.shape == (66, 64, 3)
    assert np.abs(out[:, 63] - out[:, 62]).max() <= 6  # padded column repeats column 62
    assert np.abs(out[65] - out[64]).max() <= 6
    assert out[10:50, 10:50].max() <= 8


def test_chunked_streaming_equals_one_shot(tmp_path):
    clip = frames(50)
    one = write_video(tmp_path / "one.mp4", clip, 25)
    with VideoWriter(tmp_path / "chunks.mp4", 25) as w:
        for i in range(0, len(clip), 7):
            w.write(clip[i:i + 7])
        assert w.frames_written == 50
    assert probe_video(tmp_path / "chunks.mp4").frames == probe_video(one).frames == 50
    # single (H, W, 3) frames and iterables of chunks are accepted too
    with VideoWriter(tmp_path / "single.mp4", 25) as w:
        for f in clip[:10]:
            w.write(f)
        w.write(c for c in [clip[10:13], clip[13:20]])
    assert probe_video(tmp_path / "single.mp4").frames == 20


@pytest.mark.parametrize("exc", [RuntimeError("model failed"), Cancelled("Stopped by the user"),
                                 KeyboardInterrupt()])
def test_exception_inside_with_leaves_no_file(tmp_path, exc):
    out = tmp_path / "out"
    out.mkdir()

    def generate():
        for i in range(30):
            if i == 20:
                raise exc
            yield frames(1, seed=i)

    with pytest.raises(type(exc)):
        with VideoWriter(out / "v.mp4", 25, audio=tone(2.0)) as w:
            for chunk in generate():
                w.write(chunk)
    assert w.frames_written == 20
    assert files_in(out) == []  # neither the target nor a temporary file


def test_abort_keeps_existing_target_untouched(tmp_path):
    target = tmp_path / "v.mp4"
    target.write_bytes(b"previous video")
    w = VideoWriter(target, 25)
    w.write(frames(5))
    assert len(files_in(tmp_path)) == 2  # the target and the hidden temporary file
    w.abort()
    assert target.read_bytes() == b"previous video"
    assert files_in(tmp_path) == ["v.mp4"]
    with pytest.raises(PortraitTalkError):
        w.write(frames(1))
    with VideoWriter(tmp_path / "other.mp4", 25) as w2:  # abort() inside `with` is final
        w2.write(frames(5))
        w2.abort()
    assert files_in(tmp_path) == ["v.mp4"]
    write_video(target, frames(5), 25)  # a finished video replaces it
    assert probe_video(target).frames == 5


def test_libx264_is_the_encoder_here():
    from portraittalk_core.io.video import _h264_encoder

    assert _h264_encoder() == "libx264"  # PyAV's wheel bundles libx264


def test_close_with_zero_frames_is_an_error_and_leaves_no_file(tmp_path):
    with pytest.raises(PortraitTalkError, match="No frames"):
        VideoWriter(tmp_path / "empty.mp4", 25, audio=tone(1.0)).close()
    with pytest.raises(PortraitTalkError, match="No frames"):
        with VideoWriter(tmp_path / "empty2.mp4", 25):
            pass
    assert files_in(tmp_path) == []


def test_no_audio_gives_video_only(tmp_path):
    info = probe_video(write_video(tmp_path / "silent.mp4", frames(10), 25))
    assert info.frames == 10
    assert info.audio_codec is None and info.audio_duration is None and info.audio_rate is None


def test_mid_grey_round_trips_within_3_levels(tmp_path):
    torch = pytest.importorskip("torch")
    grey = np.full((8, 64, 64, 3), 128, np.uint8)
    inputs = {"uint8": grey, "float_numpy": np.full((8, 64, 64, 3), 128 / 255, np.float32),
              "float_torch": torch.full((8, 64, 64, 3), 128 / 255)}
    for name, clip in inputs.items():
        path = write_video(tmp_path / f"{name}.mp4", clip, 25)
        with av.open(str(path)) as c:
            decoded = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
        assert len(decoded) == 8
        assert max(np.abs(d - 128).max() for d in decoded) <= 3, name


def test_missing_folder_is_created_and_unwritable_target_is_explained(tmp_path):
    path = write_video(tmp_path / "new" / "deeper" / "v.mp4", frames(3), 25)
    assert path.is_file()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PortraitTalkError) as info:
        VideoWriter(blocker / "v.mp4", 25)
    assert str(blocker / "v.mp4") in str(info.value) and "Fix:" in str(info.value)


def test_bad_frames_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="first frame"):
        with VideoWriter(tmp_path / "v.mp4", 25) as w:
            w.write(frames(3, 64, 64))
            w.write(frames(1, 64, 32))
    assert files_in(tmp_path) == []
    with pytest.raises(InputError, match="channels-last"):
        write_video(tmp_path / "v.mp4", np.zeros((2, 3, 64, 64), np.uint8), 25)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        write_video(tmp_path / "v.mp4", np.full((2, 64, 64, 3), 200.0, np.float32), 25)
    with pytest.raises(InputError):
        VideoWriter(tmp_path / "v.mp4", 0)
    assert files_in(tmp_path) == []


def test_memory_does_not_grow_with_length(tmp_path):
    def attr_sizes(w):
        sizes = {}
        for k, v in vars(w).items():
            if isinstance(v, np.ndarray):
                sizes[k] = v.nbytes
            elif isinstance(v, (list, tuple, dict, set, bytes, bytearray)):
                sizes[k] = len(v)
        return sizes

    base = np.random.default_rng(0).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        with VideoWriter(tmp_path / "long.mp4", 25, audio=tone(80.0), preset="ultrafast") as w:
            for i in range(0, 2000, 50):
                w.write(np.roll(base, i, axis=2).repeat(50, axis=0))  # a fresh 2.4 MB chunk
                if i == 150:
                    early_sizes = attr_sizes(w)
                    early_mem = tracemalloc.get_traced_memory()[0]
            late_sizes = attr_sizes(w)
            late_mem = tracemalloc.get_traced_memory()[0]
            assert w.frames_written == 2000
    finally:
        tracemalloc.stop()
    assert late_sizes == early_sizes  # no list/array attribute grows with the frames
    # 1,800 more frames of 48 KiB each would be 88 MB if any were kept
    assert late_mem - early_mem < 4 * 2**20
    assert probe_video(tmp_path / "long.mp4").frames == 2000
