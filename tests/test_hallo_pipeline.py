"""Hallo's converted weights end to end in the diffusers host (issue 26, items 1 and 3): their tiny Net
(tests/fixtures/hallo/tiny_net.pth) through ``portraittalk convert hallo``, then ``PortraitTalkPipeline.from_pretrained``
on the two converted files, a VAE and a wav2vec2 folder, then a video with the speech; and the same computation on
random weights through the ``generate`` command. The numbers of one clip's steps are held to their pipeline's in
tests/test_hallo_host.py (the host's ``hallo_step`` and ``hallo_clip_context``); this file checks the clip loop
around them: whole clips over the padded audio, motion frames from the photo then from the decoded frames, the
frames past the audio dropped."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from diffusers import AutoencoderKL
from transformers import Wav2Vec2Config, Wav2Vec2Model

from conftest import tone
from hallo_fixtures import RawEmbeddingDetector
from portraittalk_core.cli import main
from portraittalk_core.config import hallo_tiny
from portraittalk_core.errors import InputError, WeightsError
from portraittalk_core.generation.settings import GenerationSettings
from portraittalk_core.io.video import probe_video
from portraittalk_core.pipeline import PortraitTalkPipeline

NET = Path(__file__).parent / "fixtures" / "hallo" / "tiny_net.pth"
SECONDS = 0.26         # 7 frames at 25 fps: 2 clips of 4, the second one padded
FPS = 25


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The converted files, a random VAE of the tiny Net's shape (diffusers folder) and a random wav2vec2 whose
    layers 1..3 of width 16 are the tiny Net's audio input."""
    root = tmp_path_factory.mktemp("hallo")
    assert main(["convert", "hallo", "--net", str(NET), "--out", str(root), "--config", "hallo_tiny"]) == 0
    config = hallo_tiny()
    torch.manual_seed(0)
    AutoencoderKL(**config.vae).save_pretrained(root / "vae", safe_serialization=True)
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                                 conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
                  ).save_pretrained(root / "wav2vec2", safe_serialization=True)
    return root


def pipeline(root: Path) -> PortraitTalkPipeline:
    pipe = PortraitTalkPipeline.from_pretrained(root / "portraittalk_hallo.safetensors",
                                                backbone=root / "hallo_unet.safetensors", vae=root / "vae",
                                                wav2vec2_folder=root / "wav2vec2")
    pipe.detector = RawEmbeddingDetector(pipe.config.face_embed_dim)
    return pipe


def test_converted_tiny_net_makes_a_video(converted, reference_path, tmp_path):
    pipe = pipeline(converted)
    assert pipe.backbone.text_encoder is None                 # no text path: no CLIP loaded
    calls = []
    denoise, motion_pixels = pipe.denoise_hallo_clip, pipe.motion_pixels

    def recording_denoise(clip, noise, rows, *args, **kwargs):
        calls.append((clip, rows[1:].clone()))
        return denoise(clip, noise, rows, *args, **kwargs)

    pipe.denoise_hallo_clip = recording_denoise
    decoded = []
    pipe.motion_pixels = lambda latents: decoded.append(latents.clone()) or motion_pixels(latents)
    frames = []
    result = pipe([reference_path], (tone(SECONDS), 16_000), tmp_path / "out.mp4", GenerationSettings(steps=1, seed=42),
                  progress=False, on_frames=frames.append)

    n_frames = math.ceil(SECONDS * FPS)
    assert result.frames == n_frames and probe_video(result.path).frames == n_frames
    assert sum(len(f) for f in frames) == n_frames            # the padding's frames are dropped
    clip_frames, motion_frames = pipe.config.clip_frames, pipe.config.motion_frames
    assert [(c.start, c.end) for c, _ in calls] == [(s, s + clip_frames) for s in range(0, 8, clip_frames)]
    photo = calls[0][1]
    assert photo.shape[0] == motion_frames and torch.equal(photo[0], photo[1])  # the first clip: the photo twice
    assert torch.equal(photo[0], pipe.hallo_conditioning(pipe.prepare_hallo_inputs(reference_path, 64), 4)["pixels"][0])
    assert len(decoded) == len(calls) - 1 and all(len(d) == motion_frames for d in decoded)
    assert all(not torch.equal(motion, photo) for _, motion in calls[1:])


def test_same_seed_same_video_and_seed_matters(converted, reference_path):
    pipe = pipeline(converted)
    audio = (tone(0.1), 16_000)

    def video(seed):
        frames = []
        pipe([reference_path], audio, None, GenerationSettings(steps=1, seed=seed), progress=False,
             on_frames=frames.append)
        return np.concatenate(frames)

    first = video(3)
    assert np.array_equal(first, video(3))
    assert not np.array_equal(first, video(4))


def test_what_does_not_apply_is_refused_before_anything_runs(converted, reference_path, tmp_path):
    pipe = pipeline(converted)
    audio = (tone(0.2), 16_000)
    for settings, match in [(GenerationSettings(prompt="red hair"), "a prompt does not apply"),
                            (GenerationSettings(region="mouth"), "region 'mouth' does not apply"),
                            (GenerationSettings(denoise=0.5), "--denoise below 1"),
                            (GenerationSettings(restyle=True), "--restyle"),
                            (GenerationSettings(clip_frames=31, motion_frames=2), "more than the motion modules' 32")]:
        with pytest.raises(InputError, match=match):
            pipe([reference_path], audio, tmp_path / "x.mp4", settings, progress=False)
    assert not (tmp_path / "x.mp4").exists()


def test_the_converted_unet_needs_its_vae(converted):
    with pytest.raises(WeightsError, match="no VAE was given.*Fix: pass --vae"):
        PortraitTalkPipeline.from_pretrained(converted / "portraittalk_hallo.safetensors",
                                             backbone=converted / "hallo_unet.safetensors",
                                             wav2vec2_folder=converted / "wav2vec2")


def test_generate_command_on_random_hallo_weights(reference_path, tmp_path, capsys):
    speech, out = tmp_path / "speech.wav", tmp_path / "hallo.mp4"
    sf.write(speech, tone(0.2), 16_000)
    assert main(["generate", "--random-weights", "--config", "hallo_tiny", "--ref", str(reference_path), "--audio",
                 str(speech), "--out", str(out), "--steps", "1"]) == 0
    assert probe_video(out).frames == 5
    assert main(["generate", "--random-weights", "--config", "hallo_tiny", "--ref", str(reference_path), "--audio",
                 str(speech), "--out", str(tmp_path / "no.mp4"), "--prompt", "red hair"]) == 2
    assert "a prompt does not apply" in capsys.readouterr().err
    assert not (tmp_path / "no.mp4").exists()


# -- Hallo2's long mode (config hallo2: docs/hallo2.md) ------------------------------------------------------------
def test_hallo2_is_hallos_net_in_its_long_mode():
    from portraittalk_core.config import hallo, hallo2
    from portraittalk_core.convert.hallo import hallo_net_shapes

    assert hallo_net_shapes(hallo2()) == hallo_net_shapes(hallo())      # convert hallo takes their net.pth as is
    assert hallo2().replace(name="hallo", audio_segment_seconds=0.0, motion_frame_drop=0.0) == hallo()


def test_motion_frames_drop_a_share_of_pixels_outside_the_face_only():
    from portraittalk_core.generation.reference_rows import dropped_outside_face

    motion = torch.rand(2, 3, 64, 64) * 2 - 1
    face_box = torch.zeros(1, 3, 64, 64)
    face_box[..., 16:48, 20:40] = 1.0
    dropped = dropped_outside_face(motion, face_box, 0.25, torch.Generator().manual_seed(0))
    inside = face_box[0, 0].bool()
    assert torch.equal(dropped[..., inside], motion[..., inside])
    zeroed = (dropped[..., ~inside] == 0).all(dim=(0, 1))                 # the same pixels in every frame and channel
    assert (dropped[..., ~inside] == 0).float().mean() == zeroed.float().mean()
    assert 0.2 < zeroed.float().mean() < 0.3
    again = dropped_outside_face(motion, face_box, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(dropped, again)


def test_long_audio_in_pieces_each_encoded_on_its_own():
    """Config audio_segment_seconds: each piece normalised and encoded alone, only the last padded, the windows
    across the joins; the frame count is the audio's either way."""
    from portraittalk_core.audio import Wav2Vec2FrontEnd, encode_audio_in_whole_clips
    from portraittalk_core.audio.features import clamped_neighbour_windows
    from portraittalk_core.io.audio import Waveform

    front_end = Wav2Vec2FrontEnd(Path(__file__).parent / "fixtures" / "hallo" / "wav2vec2_tiny")
    samples = (tone(0.5) + 0.01 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)
    wave = Waveform(samples, 16_000)
    whole = encode_audio_in_whole_clips(wave, front_end, FPS, 4)
    pieces = encode_audio_in_whole_clips(wave, front_end, FPS, 4, segment_seconds=0.2)
    assert whole.n_frames == pieces.n_frames == 13 and len(whole.frames) == len(pieces.frames) == 16
    first = front_end.at_frames(Waveform(samples[:5 * 640], 16_000), 5)
    last = front_end.at_frames(Waveform(samples[10 * 640:], 16_000), 6, 3 * 640)
    assert torch.equal(pieces.frames[2:3, 2], first[2:3]) and torch.equal(pieces.frames[12:, 2], last[2:])
    assert torch.equal(pieces.frames[4, 4], pieces.frames[6, 2])        # a window runs across the join at frame 5
    assert not torch.allclose(whole.frames, pieces.frames)
    assert torch.equal(clamped_neighbour_windows(pieces.frames[:, 2], 2), pieces.frames)
    assert torch.equal(encode_audio_in_whole_clips(wave, front_end, FPS, 4, segment_seconds=1.0).frames, whole.frames)


def test_hallo2_long_mode_runs(converted, reference_path):
    from portraittalk_core.config import hallo2

    pipe = pipeline(converted)
    pipe.config = pipe.model.config = pipe.config.replace(audio_segment_seconds=0.16, motion_frame_drop=0.25)
    frames = []
    result = pipe([reference_path], (tone(SECONDS), 16_000), None, GenerationSettings(steps=1), progress=False,
                  on_frames=frames.append)
    assert result.frames == sum(len(f) for f in frames) == math.ceil(SECONDS * FPS)
    assert hallo2().motion_frame_drop == 0.25 and hallo2().audio_segment_seconds == 60.0


def test_reference_rows_as_their_pipeline_reads_them():
    from portraittalk_core.generation.reference_rows import decoded_as_motion, reference_rows

    photo = torch.rand(1, 3, 8, 8) * 2 - 1
    first = reference_rows(photo, None, 2)
    assert first.shape == (3, 3, 8, 8) and all(torch.equal(row, photo[0]) for row in first)
    decoded = torch.rand(2, 3, 8, 8) * 3 - 1.5
    motion = decoded_as_motion(decoded)
    assert motion.min() >= -1 and motion.max() <= 1
    assert torch.allclose(motion, decoded.clamp(-1, 1), atol=1e-6)
    assert torch.equal(reference_rows(photo, motion, 2)[1:], motion)
    bright = torch.rand(1, 3, 8, 8)                    # no negative value: diffusers reads the batch as [0, 1]
    assert torch.equal(reference_rows(bright, None, 2), bright.expand(3, -1, -1, -1) * 2.0 - 1.0)
