"""Tests for portraittalk_core.audio and io.audio: loading, frame counts, per-frame windows and front ends.

Every signal is synthesised here (a 220 Hz tone with a fade in and out; the second channel at half
amplitude) and every file is written with PyAV, so the tests need no data files and no downloads.
"""

from __future__ import annotations

import fractions
import math

import av
import numpy as np
import pytest
import torch

from portraittalk_core.audio import (
    SAMPLE_RATE,
    AudioFeatures,
    LogMelFrontEnd,
    Wav2Vec2FrontEnd,
    Waveform,
    check_not_silent,
    encode_audio,
    features_from_hidden_states,
    frame_count,
    frame_windows,
    load_audio,
)
from portraittalk_core.audio.wav2vec2 import _chunk_plan
from portraittalk_core.errors import AudioError, InputError, WeightsError

TONE_HZ = 220.0
AMPLITUDE = 0.5
# Channel 0 at AMPLITUDE, channel 1 at half of it: the mono mean is 0.75 * AMPLITUDE.
MONO_RMS = 0.75 * AMPLITUDE / math.sqrt(2)


# ----------------------------------------------------------------------------------------------
# Signals and files
# ----------------------------------------------------------------------------------------------


def tone(rate: int, seconds: float = 2.0) -> np.ndarray:
    """Stereo (2, S) float32: a 220 Hz tone with 50 ms fades, right channel at half level."""
    t = np.arange(round(rate * seconds)) / rate
    envelope = np.clip(np.minimum(t, seconds - t) / 0.05, 0.0, 1.0)
    left = AMPLITUDE * envelope * np.sin(2 * np.pi * TONE_HZ * t)
    return np.stack([left, 0.5 * left]).astype(np.float32)


def available_encoder(*names: str) -> str:
    for name in names:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:
            continue
    pytest.skip(f"PyAV's ffmpeg has none of the encoders {names}")


def write_audio(path, stereo: np.ndarray, rate: int, *codecs: str, options: dict | None = None):
    """Encode (2, S) float samples to ``path`` with the first available codec of ``codecs``."""
    codec = available_encoder(*codecs)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        if options:
            stream.codec_context.options = options
        if codec.startswith("pcm_") or codec == "flac":
            pcm = np.round(stereo.T * 32767).astype(np.int16).reshape(1, -1)  # packed s16
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        else:
            frame = av.AudioFrame.from_ndarray(stereo, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, fractions.Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def rms(samples: np.ndarray) -> float:
    middle = samples[len(samples) // 8 : -len(samples) // 8]  # away from the fades and codec edges
    return float(np.sqrt(np.mean(middle.astype(np.float64) ** 2)))


def dominant_hz(wave: Waveform) -> float:
    spectrum = np.abs(np.fft.rfft(wave.samples))
    return float(np.argmax(spectrum) * wave.sample_rate / len(wave.samples))


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

# (suffix, encoders to try, rate, options, how much longer the decoded audio may be, rms tolerance)
# Lossless formats decode to the exact length. MP3 (LAME writes its delay in the Info tag) and
# Opus trim their padding on decode. The experimental native Vorbis encoder leaves ~1 ms and AAC
# rounds up to its 1024-sample frames (23 ms at 44.1 kHz), which ffmpeg does not trim.
FILE_CASES = [
    ("wav", ("pcm_s16le",), 44_100, None, 0.001, 0.01),
    ("wav", ("pcm_s16le",), 8_000, None, 0.001, 0.01),
    ("wav", ("pcm_s16le",), 48_000, None, 0.001, 0.01),
    ("flac", ("flac",), 48_000, None, 0.001, 0.01),
    ("mp3", ("libmp3lame", "mp3"), 44_100, None, 0.005, 0.08),
    ("ogg", ("libvorbis", "vorbis"), 44_100, {"strict": "experimental"}, 0.010, 0.05),
    ("opus.ogg", ("libopus", "opus"), 48_000, None, 0.005, 0.05),
    ("m4a", ("aac",), 44_100, None, 0.030, 0.05),
]


@pytest.mark.parametrize(
    "suffix, codecs, rate, options, extra_s, rms_tol", FILE_CASES, ids=[f"{c[0]}-{c[2]}" for c in FILE_CASES]
)
def test_load_file(tmp_path, suffix, codecs, rate, options, extra_s, rms_tol):
    path = write_audio(tmp_path / f"tone.{suffix}", tone(rate), rate, *codecs, options=options)
    wave = load_audio(path)

    assert wave.sample_rate == SAMPLE_RATE
    assert wave.samples.dtype == np.float32 and wave.samples.ndim == 1
    assert -0.001 <= wave.duration - 2.0 <= extra_s
    assert rms(wave.samples) == pytest.approx(MONO_RMS, rel=rms_tol)
    assert dominant_hz(wave) == pytest.approx(TONE_HZ, abs=1.0)
    assert np.abs(wave.samples).max() <= 1.0


def test_load_file_accepts_str_and_other_rates(tmp_path):
    path = write_audio(tmp_path / "tone.wav", tone(44_100), 44_100, "pcm_s16le")
    wave = load_audio(str(path), sample_rate=22_050)
    assert wave.sample_rate == 22_050 and len(wave.samples) == 44_100


# ----------------------------------------------------------------------------------------------
# Arrays, tensors, Waveforms and ComfyUI dicts
# ----------------------------------------------------------------------------------------------


def test_int16_array_is_scaled():
    pcm = np.round(tone(8_000)[0] * 32767).astype(np.int16)
    wave = load_audio(pcm, source_rate=8_000)
    assert wave.sample_rate == SAMPLE_RATE and len(wave.samples) == 32_000
    assert rms(wave.samples) == pytest.approx(AMPLITUDE / math.sqrt(2), rel=0.01)


def test_int32_array_is_scaled():
    pcm = np.round(tone(16_000)[0] * 2**31).astype(np.int32)
    wave = load_audio(pcm, source_rate=16_000)
    assert rms(wave.samples) == pytest.approx(AMPLITUDE / math.sqrt(2), rel=0.01)


def test_channels_first_and_last_agree():
    stereo = tone(48_000).astype(np.float64)
    first = load_audio(stereo, source_rate=48_000)
    last = load_audio(stereo.T, source_rate=48_000)
    np.testing.assert_allclose(first.samples, last.samples, atol=1e-6)
    assert rms(first.samples) == pytest.approx(MONO_RMS, rel=0.01)


def test_torch_tensors():
    stereo = tone(16_000)
    from_float = load_audio(torch.from_numpy(stereo), source_rate=16_000)
    np.testing.assert_allclose(from_float.samples, stereo.mean(axis=0), atol=1e-6)  # no resampling at 16 kHz
    pcm = torch.from_numpy(np.round(stereo * 32767).astype(np.int16))
    from_int = load_audio(pcm, source_rate=16_000)
    np.testing.assert_allclose(from_int.samples, from_float.samples, atol=1e-4)


def test_comfy_audio_dict_uses_first_batch_item():
    stereo = torch.from_numpy(tone(44_100))
    batch = torch.stack([stereo, torch.zeros_like(stereo)])  # (B, C, S)
    wave = load_audio({"waveform": batch, "sample_rate": 44_100})
    assert wave.sample_rate == SAMPLE_RATE and wave.duration == pytest.approx(2.0, abs=1e-3)
    assert rms(wave.samples) == pytest.approx(MONO_RMS, rel=0.01)


def test_waveform_is_resampled_when_needed():
    mono = tone(8_000)[0]
    wave = load_audio(Waveform(mono, 8_000))
    assert wave.sample_rate == SAMPLE_RATE and len(wave.samples) == 32_000
    same = load_audio(wave)
    np.testing.assert_array_equal(same.samples, wave.samples)


def test_silence_loads_but_fails_the_check():
    wave = load_audio(np.zeros(16_000, np.float32), source_rate=16_000)
    with pytest.raises(AudioError, match=r"audio is silent \(peak 0.*Fix:"):
        check_not_silent(wave)
    check_not_silent(load_audio(tone(16_000)[0], source_rate=16_000))  # no error


# ----------------------------------------------------------------------------------------------
# Bad input: every failure is an AudioError with a fix
# ----------------------------------------------------------------------------------------------


def assert_audio_error(match: str, source, **kwargs) -> str:
    with pytest.raises(AudioError) as caught:
        load_audio(source, **kwargs)
    message = str(caught.value)
    assert "Fix: " in message and caught.value.fix
    assert match in message, message
    return message


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope" / "speech.wav"
    assert_audio_error(str(path), path)


def test_folder_is_not_a_file(tmp_path):
    assert_audio_error("is a folder", tmp_path)


def test_random_bytes_in_wav(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_audio_error(f"cannot read {path}", path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp3"
    path.write_bytes(b"")
    assert_audio_error(str(path), path)


def test_truncated_mp3(tmp_path):
    path = write_audio(tmp_path / "tone.mp3", tone(44_100), 44_100, "libmp3lame", "mp3")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_audio_error("truncated", path)


def test_truncated_flac(tmp_path):
    path = write_audio(tmp_path / "tone.flac", tone(44_100), 44_100, "flac")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_audio_error("truncated", path)


def test_image_has_no_audio_stream(tmp_path):
    path = tmp_path / "face.png"
    with av.open(str(path), "w", format="image2") as container:  # a one-frame PNG
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 8, 8, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    assert_audio_error("has no audio stream", path)


def test_empty_arrays():
    assert_audio_error("empty", np.zeros(0, np.float32), source_rate=16_000)
    assert_audio_error("empty", {"waveform": torch.zeros(0, 2, 100), "sample_rate": 16_000})


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(bad):
    samples = tone(16_000)[0]
    samples[100] = bad
    assert_audio_error("NaN or infinite", samples, source_rate=16_000)


@pytest.mark.parametrize("rate", [2_000, 0, -16_000, 1e9, float("nan"), "16k"])
def test_bad_source_rate(rate):
    assert_audio_error("Hz", tone(16_000)[0], source_rate=rate)


def test_array_without_source_rate():
    assert_audio_error("without its sample rate", tone(16_000)[0])


def test_longer_than_max_seconds():
    three_seconds = np.zeros(48_000, np.float32)
    message = assert_audio_error("3.0 s long", three_seconds, source_rate=16_000, max_seconds=2)
    assert "trim it" in message and "larger max_seconds" in message


def test_long_file_is_refused_while_decoding(tmp_path):
    path = write_audio(tmp_path / "tone.wav", tone(16_000, seconds=3.0), 16_000, "pcm_s16le")
    assert_audio_error("max_seconds=1", path, max_seconds=1)
    assert load_audio(path, max_seconds=None).duration == pytest.approx(3.0)


def test_unscaled_float_pcm():
    assert_audio_error("outside [-1, 1]", tone(16_000)[0] * 32767, source_rate=16_000)


@pytest.mark.parametrize(
    "source, match",
    [
        (np.zeros((100, 100), np.float32), "cannot tell channels"),
        (np.zeros((1, 2, 3, 4), np.float32), "1-D or 2-D"),
        (np.zeros(100, np.int64), "dtype int64"),
        (np.zeros(100, np.complex64), "dtype complex64"),
    ],
)
def test_unusable_arrays(source, match):
    assert_audio_error(match, source, source_rate=16_000)


def test_unusable_sources():
    assert_audio_error("cannot use a list", [0.0, 0.1])
    assert_audio_error("not a ComfyUI AUDIO", {"samples": torch.zeros(1, 1, 10)})


# ----------------------------------------------------------------------------------------------
# Frame counts and per-frame windows
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "duration, fps, expected",
    [
        (2.0, 25, 50),
        (2.001, 25, 51),
        (0.01, 25, 1),
        (0.28, 25, 7),  # 0.28 * 25 == 7.000000000000001: a plain ceil gives 8
        (3.003, 30000 / 1001, 90),
        (2.0, 29.97, 60),
    ],
)
def test_frame_count(duration, fps, expected):
    assert frame_count(duration, fps) == expected


def test_frame_count_float_error_case_is_real():
    assert math.ceil(0.28 * 25) == 8  # the trap frame_count avoids


@pytest.mark.parametrize("duration", [0.0, 1e-12])  # any real length gives >= 1 frame
def test_frame_count_too_short(duration):
    with pytest.raises(AudioError, match="shorter than one frame at 25 fps.*Fix:"):
        frame_count(duration, 25)


def test_frame_count_bad_fps():
    with pytest.raises(InputError, match="fps"):
        frame_count(1.0, 0)


def test_frame_windows_shape_and_edges():
    features = torch.arange(100, dtype=torch.float32).reshape(100, 1, 1).expand(100, 2, 3)
    frames = frame_windows(features, 100.0, 25.0, 25, 2)
    assert frames.shape == (25, 5, 2, 3)
    centres = frames[:, 2]
    # Row k of frame i is frame i + k - 2, replicated at both ends.
    torch.testing.assert_close(frames[5, 0], centres[3])
    torch.testing.assert_close(frames[5, 4], centres[7])
    for k in range(3):
        torch.testing.assert_close(frames[0, k], centres[0])
        torch.testing.assert_close(frames[-1, 4 - k], centres[-1])


def test_frame_windows_interpolates_linearly_at_frame_centres():
    # On a linear ramp the value at time t is 100 t - 0.5; each frame should read its centre.
    ramp = torch.arange(400, dtype=torch.float64).reshape(400, 1, 1)
    for fps in (12.0, 25.0, 29.97, 60.0, 200.0):
        n = frame_count(3.9, fps)
        frames = frame_windows(ramp, 100.0, fps, n, 0)[:, 0, 0, 0]
        index = torch.arange(n, dtype=torch.float64)
        centres = (index + 0.5) / fps * 100 - 0.5  # in feature steps; step j is at time (j + 0.5) / 100
        inside = (index / fps * 100 - 0.5 >= 0) & ((index + 1) / fps * 100 - 0.5 <= 399)  # not in the padding
        torch.testing.assert_close(frames[inside], centres[inside])


def test_frame_windows_constant_stays_constant():
    frames = frame_windows(torch.full((37, 1, 4), 3.0), 50.0, 29.97, 23, 1)
    torch.testing.assert_close(frames, torch.full((23, 3, 1, 4), 3.0))


@pytest.mark.parametrize("feature_rate", [100.0, 50.0])
@pytest.mark.parametrize("fps", [12.0, 24.0, 25.0, 29.97, 30.0, 60.0])
def test_feature_impulse_lands_in_its_frame(feature_rate, fps):
    n_features = int(3 * feature_rate)
    n_frames = frame_count(3.0, fps)
    for step in (3, 37, 101, n_features - 40):
        features = torch.zeros(n_features, 1, 1)
        features[step] = 1.0
        t = (step + 0.5) / feature_rate  # the time a feature step describes
        frames = frame_windows(features, feature_rate, fps, n_frames, 0)[:, 0, 0, 0]
        boundary = round(t * fps)
        if abs(t * fps - boundary) < 1e-9:  # exactly between two frames: split evenly between them
            assert float(frames[boundary]) > 0
            assert float(frames[boundary - 1]) == pytest.approx(float(frames[boundary]))
        else:
            assert int(frames.argmax()) == math.floor(t * fps)
        # Frames are span means, so the impulse's area is kept whatever the two rates.
        assert float(frames.sum()) * feature_rate / fps == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("fps, expected", [(12, 24), (24, 48), (25, 50), (29.97, 60), (30, 60)])
def test_encode_audio_frame_counts(fps, expected):
    wave = load_audio(tone(16_000)[0], source_rate=16_000)
    features = encode_audio(wave, LogMelFrontEnd(), fps, window=2)
    assert isinstance(features, AudioFeatures)
    assert features.n_frames == expected and features.frames.shape == (expected, 5, 1, 80)
    assert features.fps == fps and features.duration == pytest.approx(2.0) and features.front_end == "logmel"


def test_features_from_hidden_states():
    states = torch.randn(99, 3, 8)  # (T, L, C): 2 s at 50 per second
    features = features_from_hidden_states(states, 50.0, 2.0, 25.0)
    assert features.frames.shape == (50, 5, 3, 8) and features.front_end == "comfy_wav2vec2"
    with pytest.raises(AudioError, match="transpose"):
        features_from_hidden_states(states.transpose(0, 1), 50.0, 2.0, 25.0)  # (L, T, C) by mistake
    with pytest.raises(AudioError, match="time steps"):
        features_from_hidden_states(states, 50.0, 10.0, 25.0)


# ----------------------------------------------------------------------------------------------
# Log-mel front end
# ----------------------------------------------------------------------------------------------


def speechy(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Something voice-like: a gliding 120 Hz buzz with syllable-rate bursts and some noise."""
    t = np.arange(round(rate * seconds)) / rate
    phase = 2 * np.pi * np.cumsum(120 + 20 * np.sin(2 * np.pi * 0.5 * t)) / rate
    buzz = sum(np.sin(k * phase) / k for k in range(1, 20))
    syllables = np.abs(np.sin(2 * np.pi * 3 * t))
    noise = np.random.default_rng(0).standard_normal(len(t)) * 0.05
    return (0.1 * buzz * syllables + noise).astype(np.float32)


def test_logmel_shape_and_determinism():
    front_end = LogMelFrontEnd()
    assert (front_end.feature_rate, front_end.num_layers, front_end.feature_dim) == (100.0, 1, 80)
    wave = Waveform(speechy(1.5), SAMPLE_RATE)
    features = front_end(wave)
    assert features.shape == (150, 1, 80) and features.dtype == torch.float32
    torch.testing.assert_close(features, front_end(wave), rtol=0, atol=0)
    assert -1.5 < float(features.mean()) < 1.5 and 0.1 < float(features.std()) < 2.0
    assert LogMelFrontEnd(n_mels=40)(wave).shape == (150, 1, 40)


def test_logmel_does_not_depend_on_clip_length():
    front_end = LogMelFrontEnd()
    long = speechy(3.0)
    short_features = front_end(Waveform(long[:SAMPLE_RATE], SAMPLE_RATE))
    long_features = front_end(Waveform(long, SAMPLE_RATE))
    # Only the last couple of steps of the short clip see its end (zero padding).
    torch.testing.assert_close(short_features[:97], long_features[:97], rtol=1e-4, atol=1e-4)


def test_logmel_blocks_do_not_change_the_result():
    wave = Waveform(speechy(1.0), SAMPLE_RATE)
    small_blocks = LogMelFrontEnd()
    small_blocks.block = 7  # long clips are cut into blocks of this many steps
    torch.testing.assert_close(small_blocks(wave), LogMelFrontEnd()(wave), rtol=1e-5, atol=1e-5)


def test_logmel_silence_is_minus_one_and_other_rates_work():
    front_end = LogMelFrontEnd()
    silence = front_end(Waveform(np.zeros(8_000, np.float32), SAMPLE_RATE))
    torch.testing.assert_close(silence, torch.full_like(silence, -1.0), atol=1e-6, rtol=0)
    assert front_end(Waveform(tone(8_000)[0], 8_000)).shape == (200, 1, 80)


def test_logmel_bad_n_mels():
    with pytest.raises(InputError, match="n_mels"):
        LogMelFrontEnd(n_mels=0)


# ----------------------------------------------------------------------------------------------
# wav2vec2 front end (a tiny random model saved to a temporary folder)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,  # base model's strides and kernels: 320 samples per step, 50 Hz
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",  # per-step norm, so chunked and whole-clip embeddings agree
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("wav2vec2")
    Wav2Vec2Model(config).save_pretrained(folder, safe_serialization=True)
    return folder


def test_wav2vec2_shapes(tiny_wav2vec2):
    front_end = Wav2Vec2FrontEnd(tiny_wav2vec2)
    assert (front_end.feature_rate, front_end.num_layers, front_end.feature_dim) == (50.0, 3, 32)
    features = front_end(Waveform(speechy(2.0), SAMPLE_RATE))
    assert features.shape == (99, 3, 32) and features.dtype == torch.float32
    assert torch.isfinite(features).all() and not features.is_inference()
    # Shorter than one receptive field (25 ms) still gives one step; other rates are resampled.
    assert front_end(Waveform(np.full(100, 0.1, np.float32), SAMPLE_RATE)).shape == (1, 3, 32)
    assert front_end(Waveform(tone(44_100)[0], 44_100)).shape == (99, 3, 32)

    encoded = encode_audio(Waveform(speechy(2.0), SAMPLE_RATE), front_end, 25.0)
    assert encoded.frames.shape == (50, 5, 3, 32) and encoded.front_end == "wav2vec2"


def test_wav2vec2_chunks_tile_the_whole_clip(tiny_wav2vec2):
    wave = Waveform(speechy(2.3), SAMPLE_RATE)
    whole = Wav2Vec2FrontEnd(tiny_wav2vec2, chunk_seconds=60.0)(wave)
    chunked = Wav2Vec2FrontEnd(tiny_wav2vec2, chunk_seconds=0.5, context_seconds=0.3)(wave)
    assert chunked.shape == whole.shape == (114, 3, 32)
    # The embedding layer only sees +-8 steps, less than the context, so chunking is invisible there.
    torch.testing.assert_close(chunked[:, 0], whole[:, 0], rtol=1e-4, atol=1e-4)


def test_chunk_plan_tiles_without_gaps():
    # Base models' conv stack: 320 samples per step, 400 seen by each; 7 s + 123 samples give 350 steps.
    plan = _chunk_plan(16_000 * 7 + 123, 350, 320, 400, core_frames=100, context_frames=25)
    kept = [
        start // 320 + step for start, _, keep_from, keep_to in plan for step in range(keep_from, keep_to)
    ]
    assert kept == list(range(350))
    assert all(start % 320 == 0 and end <= 16_000 * 7 + 123 for start, end, _, _ in plan)


def test_wav2vec2_preprocessor_config_is_read(tiny_wav2vec2, tmp_path):
    import shutil

    folder = tmp_path / "plain"
    shutil.copytree(tiny_wav2vec2, folder)
    (folder / "preprocessor_config.json").write_text('{"sampling_rate": 16000, "do_normalize": false}')
    wave = Waveform(speechy(1.0), SAMPLE_RATE)
    plain = Wav2Vec2FrontEnd(folder)
    assert not plain.normalize
    assert not torch.allclose(plain(wave), Wav2Vec2FrontEnd(tiny_wav2vec2)(wave))


def weights_error(folder) -> str:
    with pytest.raises(WeightsError) as caught:
        Wav2Vec2FrontEnd(folder)
    assert "Fix: " in str(caught.value)
    return str(caught.value)


def test_wav2vec2_missing_folder(tmp_path):
    message = weights_error(tmp_path / "missing")
    assert str(tmp_path / "missing") in message and "model.safetensors" in message


def test_wav2vec2_missing_config(tiny_wav2vec2, tmp_path):
    (tmp_path / "model.safetensors").write_bytes((tiny_wav2vec2 / "model.safetensors").read_bytes())
    message = weights_error(tmp_path)
    assert str(tmp_path / "config.json") in message


def test_wav2vec2_missing_weights(tiny_wav2vec2, tmp_path):
    (tmp_path / "config.json").write_text((tiny_wav2vec2 / "config.json").read_text())
    message = weights_error(tmp_path)
    assert str(tmp_path / "model.safetensors") in message


def test_wav2vec2_refuses_pickles(tiny_wav2vec2, tmp_path):
    (tmp_path / "config.json").write_text((tiny_wav2vec2 / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded, ever")
    message = weights_error(tmp_path)
    assert "pytorch_model.bin" in message and "safetensors weights are required" in message


def test_wav2vec2_weights_that_do_not_match(tiny_wav2vec2, tmp_path):
    import json

    config = json.loads((tiny_wav2vec2 / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    (tmp_path / "model.safetensors").write_bytes((tiny_wav2vec2 / "model.safetensors").read_bytes())
    assert "cannot load wav2vec2" in weights_error(tmp_path)


def test_wav2vec2_wrong_model_type(tiny_wav2vec2, tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "hubert"}')
    assert "'hubert'" in weights_error(tmp_path)


def test_wav2vec2_weights_from_another_model(tiny_wav2vec2, tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text((tiny_wav2vec2 / "config.json").read_text())
    save_file({"decoder.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    assert "does not match config.json" in weights_error(tmp_path)
