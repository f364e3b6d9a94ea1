"""The generation pipeline on the tiny random model: guidance, samplers, clips, seeds, memory, cancel."""

from __future__ import annotations

import gc
import math
import threading

import cv2
import numpy as np
import pytest
import torch

from conftest import tone
from portraittalk_core.errors import Cancelled, InputError
from portraittalk_core.generation.settings import GenerationSettings
from portraittalk_core.generation.guidance import guidance_weights
from portraittalk_core.io.video import probe_video

RATE = 16_000


def settings(**kw) -> GenerationSettings:
    return GenerationSettings(**{"steps": 2, "prompt": "a person talking", **kw})


def capture_frames(pipe, monkeypatch):
    """Record every decoded frame chunk (the pipeline streams them to the writer)."""
    frames = []
    decode = pipe.decode

    def recording(latents, chunk):
        for part in decode(latents, chunk):
            frames.append(part.clone())
            yield part

    monkeypatch.setattr(pipe, "decode", recording)
    return frames


def test_guidance_weights_sum_to_one_and_skip_unused_branches():
    w = guidance_weights(5.0, 2.0, 3.5)
    assert set(w) == {"uncond", "identity", "identity_audio", "full"}
    assert math.isclose(sum(w.values()), 1.0)
    assert guidance_weights(1.0, 1.0, 1.0) == {"full": 1.0}
    w = guidance_weights(text_scale=1.0, identity_scale=2.0, audio_scale=1.0)
    assert w == {"uncond": -1.0, "identity": 1.0, "full": 1.0}


def test_audio_guidance_defaults_to_the_models(tiny_pipe, reference_path, monkeypatch):
    import portraittalk_core.pipeline as pipeline

    used = []
    monkeypatch.setattr(pipeline, "guidance_weights", lambda *scales: used.append(scales) or guidance_weights(*scales))
    monkeypatch.setattr(tiny_pipe, "config", tiny_pipe.config.replace(audio_scale=4.25))
    for audio_scale in (None, 1.5):
        tiny_pipe([reference_path], (tone(0.2), RATE), None, settings(steps=1, audio_scale=audio_scale),
                  progress=False)
    assert used == [(5.0, 2.0, 4.25), (5.0, 2.0, 1.5)]
    from portraittalk_core.config import demo, tiny
    assert tiny().audio_scale == 3.5 and demo().audio_scale == 9.0


def test_generates_a_video_with_sound(tiny_pipe, reference_path, tmp_path):
    seconds = 0.9
    result = tiny_pipe([reference_path], (tone(seconds), RATE), tmp_path / "out.mp4", settings(), progress=False)
    info = probe_video(result.path)
    assert info.frames == math.ceil(seconds * 25) == result.frames
    assert info.width == info.height == tiny_pipe.config.resolution
    assert abs(info.audio_duration - seconds) <= 1 / 25
    assert set(result.timings) == {"audio", "face", "reference", "denoise", "decode", "write"}


def test_same_seed_same_frames_other_seed_other_frames(tiny_pipe, reference_path, monkeypatch):
    audio = (tone(0.5), RATE)
    runs = []
    for seed in (7, 7, 8):
        frames = capture_frames(tiny_pipe, monkeypatch)
        tiny_pipe([reference_path], audio, None, settings(seed=seed), progress=False)
        runs.append(torch.cat(frames))
        monkeypatch.undo()
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("sampler", ["ddim", "euler", "euler_a", "dpmpp_2m", "unipc"])
def test_every_sampler_runs(tiny_pipe, reference_path, sampler):
    result = tiny_pipe([reference_path], (tone(0.4), RATE), None, settings(sampler=sampler), progress=False)
    assert result.frames == 10


def test_unknown_sampler_is_a_clear_error(tiny_pipe, reference_path):
    with pytest.raises(InputError, match="unknown sampler"):
        tiny_pipe([reference_path], (tone(0.2), RATE), None, settings(sampler="nope"), progress=False)


def test_reference_bank_is_computed_once_per_generation(tiny_pipe, reference_path, monkeypatch):
    calls = []
    forward = tiny_pipe.model.identity_net.forward
    monkeypatch.setattr(tiny_pipe.model.identity_net, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    clips = []
    tiny_pipe([reference_path, reference_path], (tone(1.2), RATE), None, settings(), progress=False,
              on_clip=clips.append)
    assert len(clips) > 2 and len(calls) == 1


def test_the_reference_changes_the_video(tiny_pipe, reference_path, monkeypatch):
    audio = (tone(0.3), RATE)
    outs = []
    for strength in (1.0, 0.0):
        frames = capture_frames(tiny_pipe, monkeypatch)
        tiny_pipe([reference_path], audio, None, settings(reference_strength=strength, identity_strength=strength),
                  progress=False)
        outs.append(torch.cat(frames).float())
        monkeypatch.undo()
    assert (outs[0] - outs[1]).abs().max() > 0


def test_progress_counts_every_step_of_every_clip(tiny_pipe, reference_path):
    seen = []
    clips = []
    tiny_pipe([reference_path], (tone(1.0), RATE), None, settings(steps=3), progress=False,
              on_progress=lambda done, total: seen.append((done, total)), on_clip=clips.append)
    assert seen[-1][0] == seen[-1][1] == 3 * len(clips)


def test_cancel_leaves_no_file(tiny_pipe, reference_path, tmp_path):
    stop = threading.Event()
    count = [0]

    def on_progress(done, total):
        count[0] = done
        if done == 3:
            stop.set()

    with pytest.raises(Cancelled):
        tiny_pipe([reference_path], (tone(1.0), RATE), tmp_path / "out.mp4", settings(), progress=False,
                  cancel=stop, on_progress=on_progress)
    assert count[0] == 3
    assert list(tmp_path.iterdir()) == []


def _live_tensor_bytes() -> int:
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        kind = type(obj)  # type(), not isinstance(): weak proxies in gc's list raise on attribute access
        if issubclass(kind, torch.Tensor) and not issubclass(kind, torch.nn.Parameter) and obj.device.type == "cpu":
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def test_long_audio_keeps_memory_flat(tiny_pipe, reference_path, tmp_path):
    """Nothing accumulates across clips: live tensor memory after the 2nd clip equals that after the last."""
    live = []
    result = tiny_pipe([reference_path], (tone(6.0), RATE), tmp_path / "long.mp4", settings(steps=1),
                       progress=False, on_clip=lambda clip: live.append(_live_tensor_bytes()))
    assert result.frames == 150 and len(live) >= 20
    # The first clip has no motion frames yet; from the second on, every clip holds the same state.
    growth = max(live[1:]) - live[1]
    one_clip_of_frames = 8 * 64 * 64 * 3
    assert growth < one_clip_of_frames, f"live tensors grew by {growth} bytes over {len(live)} clips"
    assert probe_video(result.path).frames == 150


def test_motion_frames_condition_the_next_clip(tiny_pipe, reference_path, monkeypatch):
    """Each clip after the first is given the last generated latents of the one before, and they matter."""
    calls = []
    denoise = tiny_pipe.denoise_clip

    def recording(clip, noise, motion_latents, cond, *args, **kwargs):
        new = denoise(clip, noise, motion_latents, cond, *args, **kwargs)
        calls.append((clip, motion_latents, new, noise, cond, args))
        return new

    monkeypatch.setattr(tiny_pipe, "denoise_clip", recording)
    tiny_pipe([reference_path], (tone(0.9), RATE), None, settings(motion_frames=2), progress=False)
    assert len(calls) == 4 and calls[0][1] is None   # 23 frames: 8 + 6 + 6 + 3 new
    generated = calls[0][2]
    for clip, motion, latents, *_ in calls[1:]:
        assert clip.context == 2 and torch.equal(motion, generated[:, :, -2:])
        assert torch.equal(latents[:, :, :2], motion)   # the clip's latents begin with the motion frames, exactly
        generated = torch.cat([generated, latents[:, :, 2:]], dim=2)

    clip, motion, new, noise, cond, args = calls[1]
    other = denoise(clip, noise, torch.randn_like(motion), cond, *args)
    assert (other[:, :, 2:] - new[:, :, 2:]).abs().max() > 1e-4   # the new frames follow the motion frames


def test_bad_resolution_steps_and_denoise(tiny_pipe, reference_path):
    with pytest.raises(InputError, match="multiple of"):
        tiny_pipe([reference_path], (tone(0.2), RATE), None, settings(resolution=70), progress=False)
    with pytest.raises(InputError, match="steps"):
        tiny_pipe([reference_path], (tone(0.2), RATE), None, settings(steps=0), progress=False)
    for denoise in (0.0, 1.5):
        with pytest.raises(InputError, match="--denoise must be a number from 0.01 to 1"):
            tiny_pipe([reference_path], (tone(0.2), RATE), None, settings(denoise=denoise), progress=False)


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpmpp_2m"])
def test_denoise_runs_the_last_part_of_the_schedule(sampler):
    from portraittalk_core.backbone import SD15_SCHEDULE
    from portraittalk_core.generation.guidance import start_timesteps
    from portraittalk_core.schedulers import make_scheduler

    scheduler = make_scheduler(sampler, SD15_SCHEDULE)
    full = start_timesteps(scheduler, 10, 1.0, "cpu")
    assert len(full) == 10
    part = start_timesteps(make_scheduler(sampler, SD15_SCHEDULE), 10, 0.3, "cpu")
    assert torch.equal(part, full[-3:])
    assert len(start_timesteps(make_scheduler(sampler, SD15_SCHEDULE), 10, 0.01, "cpu")) == 1


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpmpp_2m"])
def test_a_start_from_the_photo_carries_its_share_of_the_signal(sampler):
    """At the first (noisiest) step, a start from the photo differs from pure noise by the photo's share of the
    signal, whatever the sampler's way of scaling its noise."""
    from portraittalk_core.backbone import SD15_SCHEDULE
    from portraittalk_core.generation.guidance import start_latents, start_timesteps
    from portraittalk_core.schedulers import make_scheduler

    scheduler = make_scheduler(sampler, SD15_SCHEDULE)
    first = start_timesteps(scheduler, 10, 1.0, "cpu")[0]
    photo, noise = torch.randn(2, 1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    difference = (start_latents(scheduler, photo, noise, first, from_photo=True)
                  - start_latents(scheduler, photo, noise, first, from_photo=False))
    assert torch.corrcoef(torch.stack([difference.flatten(), photo.flatten()]))[0, 1] > 0.9


@pytest.mark.parametrize("region, from_photo", [("mouth", True), ("face", False)])
def test_region_mouth_starts_from_the_photo_at_full_denoise(tiny_pipe, reference_path, monkeypatch, region, from_photo):
    """Inpainting starts from the noised photo, as ComfyUI's KSampler does with a latent image: from pure noise the
    redrawn mouth took a colour of its own (a pale blot on dark skin in the demo). Whole frames start from noise."""
    from portraittalk_core import pipeline

    seen = []
    start = pipeline.start_latents
    monkeypatch.setattr(pipeline, "start_latents", lambda *a, from_photo: seen.append(from_photo) or start(
        *a, from_photo=from_photo))
    tiny_pipe([reference_path], (tone(0.3), RATE), None, settings(region=region), progress=False)
    assert seen and set(seen) == {from_photo}


def test_mouth_region_keeps_the_photo_everywhere_else(tiny_pipe, reference_path, monkeypatch):
    """region="mouth": outside the photo's mouth region the final latents are the photo's, inside they are made."""
    from portraittalk_core.generation.compositing import kept_outside_mouth

    latents = []
    decode = tiny_pipe.decode
    monkeypatch.setattr(tiny_pipe, "decode", lambda new, chunk: latents.append(new.clone()) or decode(new, chunk))
    tiny_pipe([reference_path], (tone(0.3), RATE), None, settings(region="mouth"), progress=False)
    refs = tiny_pipe.prepare_references([reference_path], tiny_pipe.config.resolution)
    with torch.inference_mode():
        photo = tiny_pipe.backbone.encode_images(refs.pixels)[:1]                # (1, C, h, w)
    made = torch.cat(latents)                                                    # (frames, C, h, w)
    keep = kept_outside_mouth(refs.faces[0], tiny_pipe.config.vae_scale)[:, :, 0].bool().expand_as(made)
    assert 0 < (~keep).float().mean() < 0.5                       # the mouth region is a small part of the frame
    photo = photo.expand_as(made)
    assert torch.equal(made[keep], photo[keep])
    assert (made[~keep] - photo[~keep]).abs().mean() > 1e-3
    with pytest.raises(InputError, match="unknown region"):
        tiny_pipe([reference_path], (tone(0.3), RATE), None, settings(region="eyes"), progress=False)


def test_mouth_region_frames_are_the_photos_pixels_outside_the_redrawn_cells(tiny_pipe, reference_path):
    """paste_photo (the default): outside the redrawn cells every frame is the aligned photo, pixel for pixel, and
    the generated frame shows inside them; without it the frames are the decoded latents everywhere."""
    from portraittalk_core.generation.compositing import kept_outside_mouth, paste_weights

    refs = tiny_pipe.prepare_references([reference_path], tiny_pipe.config.resolution)
    photo = refs.faces[0].image
    weights = paste_weights(kept_outside_mouth(refs.faces[0], tiny_pipe.config.vae_scale), tiny_pipe.config.vae_scale)
    assert weights.shape == (*photo.shape[:2], 1) and weights.min() == 0 and 0.5 < weights.max() <= 1
    outside = weights[..., 0] == 0
    assert 0.5 < outside.mean() < 1
    frames = {}
    for paste in (True, False):
        made = []
        tiny_pipe([reference_path], (tone(0.3), RATE), None, settings(region="mouth", paste_photo=paste),
                  progress=False, on_frames=made.append)
        frames[paste] = np.concatenate(made)
    assert np.array_equal(frames[True][:, outside], np.broadcast_to(photo[outside], frames[True][:, outside].shape))
    assert not np.array_equal(frames[False][:, outside], np.broadcast_to(photo[outside], frames[False][:, outside].shape))
    # Inside, the generated frame's share is the weight: the pasted frame is within (1 - w) * 255 of it.
    gap = np.abs(frames[True].astype(float) - frames[False])
    assert (gap <= (1 - weights) * 255 + 0.5).all()
    assert (gap[:, weights[..., 0] > 0.5] < gap[:, outside].mean()).mean() > 0.5


def test_low_denoise_stays_near_the_photo(tiny_pipe, reference_path, monkeypatch):
    """Started from the photo's latent at a low noise level, even random weights end near it; started from pure
    noise they do not."""
    refs = tiny_pipe.prepare_references([reference_path], tiny_pipe.config.resolution)
    with torch.inference_mode():
        photo = tiny_pipe.backbone.encode_images(refs.pixels)[:1]                # (1, C, h, w)
    decode = tiny_pipe.decode
    errors = {}
    for denoise in (1.0, 0.1):
        latents = []
        monkeypatch.setattr(tiny_pipe, "decode", lambda new, chunk: latents.append(new.clone()) or decode(new, chunk))
        tiny_pipe([reference_path], (tone(0.3), RATE), None, settings(steps=10, denoise=denoise), progress=False)
        errors[denoise] = float((torch.cat(latents) - photo).abs().mean())   # frame-first latents
        monkeypatch.undo()
    assert errors[0.1] < 0.5 * errors[1.0]


def test_silent_and_too_short_audio(tiny_pipe, reference_path):
    from portraittalk_core.errors import AudioError

    with pytest.raises(AudioError, match="silent"):
        tiny_pipe([reference_path], (np.zeros(RATE, np.float32), RATE), None, settings(), progress=False)
    with pytest.raises(AudioError, match="shorter than one frame"):
        tiny_pipe([reference_path], (tone(0.01), RATE), None, settings(), progress=False)


def test_the_demo_config_runs(reference_path):
    """The demo model's shapes (a VAE that downsamples 4x) run through the same pipeline."""
    from portraittalk_core.pipeline import PortraitTalkPipeline

    pipe = PortraitTalkPipeline.random("demo")
    assert pipe.config.vae_scale == 4
    result = pipe([reference_path], (tone(0.3), RATE), None, settings(steps=1), progress=False)
    assert result.frames == 8


def test_restyle_redraws_around_the_face_and_keeps_the_face(tiny_pipe, reference_path):
    """restyle: the photo's face (the landmarks' hull grown a little) is its own pixels, the rest is redrawn from the
    prompt; the same seed redraws the same, another prompt redraws otherwise; the structure maps stay."""
    from portraittalk_core.generation.compositing import face_mask

    refs = tiny_pipe.prepare_references([reference_path], tiny_pipe.config.resolution)
    text, negative = tiny_pipe.encode_prompts("a person talking", "")
    styled = tiny_pipe.restyle(refs, text, negative, settings())
    photo, image = refs.faces[0].image, styled.faces[0].image
    inside = face_mask(refs.faces[0]).astype(bool)
    depth = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    core = depth >= tiny_pipe.config.vae_scale                                        # past the feathered seam
    assert 0.1 < inside.mean() < 0.6 and core.any()
    assert np.array_equal(image[core], photo[core])                                   # the face, pixel for pixel
    assert np.abs(image[~inside].astype(float) - photo[~inside]).mean() > 5           # the rest is redrawn
    assert torch.equal(styled.pixels[0], torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1)
    assert torch.equal(styled.structure, refs.structure)
    assert np.array_equal(tiny_pipe.restyle(refs, text, negative, settings()).faces[0].image, image)
    other, _ = tiny_pipe.encode_prompts("a person with green hair in front of a red background", "")
    assert not np.array_equal(tiny_pipe.restyle(refs, other, negative, settings()).faces[0].image, image)


def test_restyle_runs_the_base_unet_alone(tiny_pipe, reference_path, monkeypatch):
    """The restyle's noise comes from AnimateNet with every added path and the temporal modules off (the base
    exactly), and the animation that follows animates the restyled photo: its frames paste that photo back."""
    net = tiny_pipe.model.animate_net
    calls = []
    forward = net.forward

    def spy(latents, t, text, context=None, structure=None):
        calls.append((context, structure, net.motion_scale))
        return forward(latents, t, text, context, structure)

    monkeypatch.setattr(net, "forward", spy)
    made = []
    restyle = tiny_pipe.restyle
    styled = []
    monkeypatch.setattr(tiny_pipe, "restyle", lambda *a: styled.append(restyle(*a)) or styled[-1])
    with pytest.raises(Cancelled):   # a cancel during the restyle stops it, before any frame is made
        tiny_pipe([reference_path], (tone(0.3), RATE), None, settings(restyle=True), progress=False,
                  cancel=lambda: bool(calls))
    assert not styled
    calls.clear()
    tiny_pipe([reference_path], (tone(0.3), RATE), None, settings(region="mouth", restyle=True), progress=False,
              on_frames=made.append)
    restyle_calls = [c for c in calls if c[0] is None]
    assert len(restyle_calls) == 2 and all(s is None and m == 0.0 for _, s, m in restyle_calls)
    assert net.motion_scale == 1.0                                                   # put back afterwards
    photo = styled[0].faces[0].image
    assert np.array_equal(made[0][0][0, 0], photo[0, 0])                            # a corner: the restyled photo


def test_settings_left_to_the_model_take_its_config_values():
    from portraittalk_core.config import demo
    from portraittalk_core.generation.settings import resolved

    config = demo()
    got = resolved(GenerationSettings(region="face", fps=12.5), config)
    assert got.region == "face" and got.fps == 12.5                          # given: kept
    assert (got.audio_scale, got.restyle_scale, got.resolution, got.clip_frames, got.motion_frames) == (
        config.audio_scale, config.restyle_scale, config.resolution, config.clip_frames, config.motion_frames)
