"""Metrics and ADFD; ADFD must rank in sync > shifted by 0.5 s > still face > jittered face on one clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from portraittalk_core.evaluation import adfd, flicker, landmark_distance, lip_sync_correlation, psnr, ssim
from portraittalk_core.evaluation.adfd import STILL, envelope, mouth_opening

RATE, FPS, SECONDS = 16_000, 25.0, 6.0
N = int(SECONDS * FPS)
REGIONS = {"outline": np.arange(0, 6), "brows": np.arange(6, 8), "eyes": np.arange(8, 12),
           "nose": np.arange(12, 14), "mouth": np.arange(14, 18)}


def speech() -> np.ndarray:
    """Syllable-rate bursts with pauses, like speech: the envelope drives the mouth below."""
    t = np.arange(int(SECONDS * RATE)) / RATE
    rng = np.random.default_rng(0)
    bursts = np.zeros_like(t)
    start = 0.3
    while start < SECONDS - 0.5:
        length = rng.uniform(0.12, 0.3)
        bursts += np.exp(-0.5 * ((t - start - length / 2) / (length / 3)) ** 2)
        start += length + rng.uniform(0.05, 0.6)
    return (0.4 * bursts * np.sin(2 * np.pi * 160 * t)).astype(np.float32)


def face(opening: np.ndarray, seed: int = 1) -> np.ndarray:
    """(F, 18, 2) landmarks: a static face with a slow small sway, mouth opening as given (pixels ~ 64 px IOD)."""
    rng = np.random.default_rng(seed)
    base = np.concatenate([
        np.stack([np.linspace(40, 160, 6), [150, 175, 190, 190, 175, 150]], 1),      # outline
        [[70, 60], [130, 60]],                                                           # brows
        [[60, 80], [80, 80], [120, 80], [140, 80]],                                      # eyes (left pair, right pair)
        [[100, 100], [100, 115]],                                                        # nose
        [[85, 140], [115, 140], [100, 140], [100, 140]],                                 # mouth: corners, top, bottom
    ]).astype(np.float64)
    sway = 2 * np.sin(np.linspace(0, 2 * np.pi, len(opening)))[:, None, None] * np.array([1.0, 0.3])
    points = np.repeat(base[None], len(opening), 0) + sway + rng.normal(0, 0.02, (len(opening), 18, 2))
    points[:, 16, 1] -= 10 * opening
    points[:, 17, 1] += 10 * opening
    return points


@pytest.fixture(scope="module")
def clip():
    samples = speech()
    env = envelope(samples, RATE, FPS, N)
    return samples, env / env.max()


def test_adfd_ranks_sync_shift_still_jitter(clip):
    samples, opening = clip
    in_sync = adfd(face(opening), REGIONS, samples, RATE, FPS)
    shifted = adfd(face(np.roll(opening, int(0.5 * FPS))), REGIONS, samples, RATE, FPS)
    still = adfd(face(np.full(N, opening.mean())), REGIONS, samples, RATE, FPS)
    jittered_points = face(opening) + np.random.default_rng(5).normal(0, 1.5, (N, 18, 2))
    jittered = adfd(jittered_points, REGIONS, samples, RATE, FPS)
    scores = [in_sync.score, shifted.score, still.score, jittered.score]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 4, scores
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert in_sync.temporal > 0.8 and shifted.temporal < 0.5 and still.temporal < 0.2 and still.activity < 0.01
    assert jittered.stability < 0.3 < in_sync.stability


def test_adfd_with_ground_truth_opening(clip):
    samples, opening = clip
    good = adfd(face(opening), REGIONS, samples, RATE, FPS, ground_truth_opening=opening)
    bad = adfd(face(opening[::-1].copy()), REGIONS, samples, RATE, FPS, ground_truth_opening=opening)
    assert good.spatial > 0.95 > bad.spatial


def test_ssim_psnr_flicker_lmd_correlation():
    rng = np.random.default_rng(0)
    a = rng.random((3, 32, 32, 3))
    assert ssim(a, a) == pytest.approx(1.0) and psnr(a, a) == float("inf")
    noisy = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    assert ssim(a, noisy) < 0.99 and 15 < psnr(a, noisy) < 25
    from skimage.metrics import structural_similarity   # the reference implementation agrees
    reference = np.mean([structural_similarity(a[i], noisy[i], gaussian_weights=True, sigma=1.5, data_range=1.0,
                                               use_sample_covariance=False, channel_axis=-1) for i in range(3)])
    assert ssim(a, noisy) == pytest.approx(reference, abs=0.02)
    mask = np.zeros((32, 32))
    mask[:16] = 1
    half = a.copy()
    half[:, 16:] = 0                                   # only the unmasked half differs
    assert ssim(a, half, mask=mask) > ssim(a, half)
    assert flicker(np.repeat(a[:1], 4, 0)) == 0 and flicker(a) > 0.2
    points = rng.random((5, 10, 2))
    assert landmark_distance(points, points + [3, 4], scale=5.0) == pytest.approx(1.0)
    x = np.sin(np.linspace(0, 6, 50))
    assert lip_sync_correlation(x, 2 * x + 1) == pytest.approx(1.0) and lip_sync_correlation(x, -x) == pytest.approx(-1)


def test_ordering_test_on_one_clip(clip):
    from portraittalk_core.evaluation.adfd import ordering_test

    samples, env = clip
    scores, holds = ordering_test(face(env), REGIONS, samples, RATE, FPS)
    assert holds and list(scores) == ["in_sync", "shifted_0.5s", "still", "jittered"]
    assert scores["still"] == pytest.approx(0.5)                 # stable, silent: half the score


def test_a_still_float32_mouth_does_not_score_as_moving(clip):
    samples, env = clip
    still = np.repeat(face(env)[:1], N, 0).astype(np.float32)
    result = adfd(still, REGIONS, samples, RATE, FPS)
    assert result.spatial == 0 and result.temporal == 0 and result.score == pytest.approx(0.5)


def test_a_still_mouth_read_with_rounding_wobble_is_still(clip):
    """A regressor reading one frame many times may differ in the last bits from row to row; that wobble must
    not correlate with the speech (it once gave a still face lip sync 0.026 and ADFD 0.513)."""
    samples, env = clip
    still = np.repeat(face(env)[:1], N, 0)
    wobbling = still + np.random.default_rng(3).normal(0, 1e-6, still.shape)     # ~1e-8 inter-ocular units
    wobble = mouth_opening(wobbling, REGIONS)
    assert 0 < wobble.std() < STILL
    truth = mouth_opening(face(env), REGIONS)
    assert abs(np.corrcoef(wobble, truth)[0, 1]) > 0                            # plain correlation reads noise
    assert lip_sync_correlation(wobble, truth) == 0.0
    result = adfd(wobbling, REGIONS, samples, RATE, FPS, ground_truth_opening=truth)
    assert result.temporal == 0 and result.spatial == 0 and result.activity < 1e-12
    assert result.score == pytest.approx(0.5, abs=1e-3)
    moving = mouth_opening(face(env), REGIONS)
    assert lip_sync_correlation(moving, truth) == pytest.approx(1.0)             # a moving mouth still counts


def test_background_colour_and_recoloured_prompt():
    from portraittalk_core.evaluation.prompt_test import (background_colour, background_pixels, own_background,
                                                          recoloured_prompt)
    from portraittalk_core.synth.identity import BACKGROUND_COLOURS

    photo = np.zeros((64, 64, 3), np.uint8) + np.array(BACKGROUND_COLOURS["purple"], np.uint8)
    head = np.zeros((64, 64), np.uint8)
    head[10:, 16:48] = 1
    photo[10:, 16:48] = (240, 200, 180)                         # a face where the mask says: not counted
    photo[:, 4:16] = photo[:, 48:60] = BACKGROUND_COLOURS["grey"]  # long hair beside it, outside the mask
    region = background_pixels(own_background(photo, head, ["purple", "purple"]), head)
    assert region[:21].sum() == 21 * 8 + 10 * 32 and not region[21:].any()   # the edges, above the face; top third
    frames = np.repeat(photo[None], 3, 0)
    assert background_colour(frames, region) == "purple"
    assert background_colour(frames, (head == 0) & (np.arange(64)[:, None] < 21)) == "grey"  # the hair outweighs
    stripes = np.zeros((1, 64, 64, 3), np.uint8) + np.array(BACKGROUND_COLOURS["teal"], np.uint8)
    stripes[:, :, ::3] = BACKGROUND_COLOURS["beige"]            # their mean is nearest grey; the vote says teal
    assert background_colour(stripes, np.ones((64, 64), bool)) == "teal"
    frames[:, region] = BACKGROUND_COLOURS["teal"]               # a recoloured background is found
    assert background_colour(frames, region) == "teal"
    top, bottom = np.array(BACKGROUND_COLOURS["blue"], float), np.array(BACKGROUND_COLOURS["white"], float)
    gradient = np.linspace(top, bottom, 64)[:, None, :].repeat(64, 1).astype(np.uint8)
    no_head = np.zeros((64, 64))
    assert background_pixels(own_background(gradient, no_head, ["blue", "white"]), no_head)[:21].all()
    none = own_background(gradient, no_head, ["red", "red"])
    assert background_pixels(none, no_head).sum() == 21 * 64                  # none of those colours: the whole area
    caption = "a person with red hair, wearing a blue shirt, in front of a teal and beige striped background"
    prompt, colour = recoloured_prompt(caption, "abc_001", {"teal", "beige"})
    assert colour in BACKGROUND_COLOURS and colour not in {"teal", "beige"}
    assert prompt == f"a person with red hair, wearing a blue shirt, in front of " \
                     f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} background"
    assert recoloured_prompt(caption, "abc_001", {"teal", "beige"}) == (prompt, colour)


def test_landmark_regressor_learns_and_round_trips(tmp_path):
    from portraittalk_core.evaluation.landmarks import load_regressor, save_regressor, train_landmark_regressor
    from portraittalk_core.synth.identity import identity_from_seed
    from portraittalk_core.synth.render import render_frame

    rng = np.random.default_rng(0)
    renders = [render_frame(identity_from_seed(int(s)), 64, aperture=float(a))
               for s, a in zip(rng.integers(0, 10, 48), rng.random(48))]
    frames = np.stack([r[0] for r in renders])
    landmarks = np.stack([r[1] for r in renders])
    untrained = train_landmark_regressor(frames, landmarks, steps=0)
    trained = train_landmark_regressor(frames, landmarks, steps=150, batch_size=16)
    error = lambda model: np.abs(model.landmarks(frames) - landmarks).mean()  # noqa: E731
    assert error(trained) < 0.5 * error(untrained)
    save_regressor(trained, tmp_path / "r.safetensors", "data-a")
    loaded = load_regressor(tmp_path / "r.safetensors", "data-a")
    assert np.array_equal(loaded.landmarks(frames), trained.landmarks(frames))
    assert load_regressor(tmp_path / "r.safetensors", "data-b") is None   # other data: train again


def test_clip_seed_is_the_clips_own_and_the_same_every_run():
    from portraittalk_core.evaluation.prompt_test import clip_seed

    one, other = "5518118008_036_en-us-m3", "5518118008_037_en-gb-scotland-m2"   # one person's two clips
    assert clip_seed(0, one) == clip_seed(0, one) != clip_seed(0, other)
    assert clip_seed(1, one) != clip_seed(0, one) and 0 <= clip_seed(0, one) < 2**31


@pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None, reason="needs espeak-ng (setup.sh installs it)")
def test_evaluate_end_to_end_on_a_tiny_held_out_split(tmp_path, monkeypatch):
    """synth -> prepare -> regressor (train + val) -> generate (test) -> every figure, on random tiny weights."""
    import json

    from portraittalk_core.evaluation import baselines
    from portraittalk_core.evaluation import evaluate as evaluation
    from portraittalk_core.evaluation.evaluate import evaluate
    from portraittalk_core.evaluation.prompt_test import clip_seed
    from portraittalk_core.evaluation.report import format_report
    from portraittalk_core.evaluation.settings import EvalSettings
    from portraittalk_core.generation.settings import GenerationSettings
    from portraittalk_core.synth.identity import BACKGROUND_COLOURS

    measured_lengths = []   # every clip_metrics call: the output, the still face and the VAE round trip
    measure = evaluation.clip_metrics
    for module in (evaluation, baselines):
        monkeypatch.setattr(module, "clip_metrics",
                            lambda made, *a: measured_lengths.append(len(made)) or measure(made, *a))
    from portraittalk_core.pipeline import PortraitTalkPipeline
    from portraittalk_core.synth.dataset import synth_dataset

    synth_dataset(tmp_path / "synth", 3, 1, 64, seed=0)
    pipeline = PortraitTalkPipeline.random("demo")
    restyled = []   # the prompt test restyles the photo from the recoloured prompt; the lip-sync clips do not
    restyle = pipeline.restyle
    seeds = []
    monkeypatch.setattr(pipeline, "restyle", lambda refs, text, negative, settings, *rest: restyled.append(
        settings.prompt) or seeds.append(settings.seed) or restyle(refs, text, negative, settings, *rest))
    report = evaluate(EvalSettings(data=str(tmp_path / "synth"), out=str(tmp_path / "eval"), clips=1,
                                   prompt_clips=1, generation=GenerationSettings(steps=1), regressor_steps=20,
                                   seconds=0.6, prompt_seconds=0.6),
                      pipeline=pipeline, progress=lambda *_: None)
    assert report["clips"] == 1 and report["prompt_clips"] == 1
    assert report["head_motion"] == "speech"                          # the demo config predicts it
    assert report["ordering_holds"] == "1/1"
    for name in ("lip_sync", "identity_ssim", "flicker", "adfd", "lmd", "ceiling_lip_sync", "still_identity_ssim",
                 "posed_still_identity_ssim"):
        assert np.isfinite(report[name]), name
    assert -1 <= report["lip_sync"] <= 1 and 0 <= report["adfd"] <= 1
    assert report["still_identity_ssim"] > report["identity_ssim"]      # random weights: worse than a still face
    assert len(set(measured_lengths)) == 1    # the baselines cover the same 0.6 s as the output, not the whole clip
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert saved["clips"][0]["clip"] and saved["prompt_clips"][0]["prompted"] != saved["prompt_clips"][0]["own"]
    # the prompt test's one colour, then the photo alone with every colour of the palette but the clip's own
    own = {saved["prompt_clips"][0]["own"]}
    palette = saved["prompt_palette"]
    assert f"{saved['prompt_clips'][0]['prompted']} background" in restyled[0]
    assert all(f"{p['prompted']} background" in prompt for p, prompt in zip(palette, restyled[1:]))
    assert len(restyled) == 1 + len(palette) and len(palette) >= len(BACKGROUND_COLOURS) - 2
    # the palette's noise is the clip's own (a person's two clips share their photo); the animated clip keeps the seed
    assert seeds == [0] + [clip_seed(0, saved["prompt_clips"][0]["clip"])] * len(palette) and seeds[1] != 0
    assert not own & {p["prompted"] for p in palette} and {p["found"] for p in palette} <= set(BACKGROUND_COLOURS)
    assert report["prompt_palette_tries"] == len(palette) and 0 <= report["prompt_palette_accuracy"] <= 1
    assert sum(int(n.split("/")[1]) for n in report["prompt_palette_by_colour"].values()) == len(palette)
    assert "whole palette" in format_report(report)
    assert {p["vae_found"] for p in palette} <= set(BACKGROUND_COLOURS)
    assert 0 <= report["prompt_palette_vae_ceiling"] <= 1
    assert "lip sync" in format_report(report)
    trained_on = json.loads((tmp_path / "eval" / "eval.json").read_text())["regressor_clips"]
    assert {"train", "val"} <= {Path(c).parent.name for c in trained_on} and not any("test" in c for c in trained_on)

    # --head-motion: the clips are generated following the ground truth's head motion, one transform a frame
    given = []
    resolve = pipeline.head_motion
    monkeypatch.setattr(pipeline, "head_motion",
                        lambda source, *a: given.append(np.asarray(source)) or resolve(source, *a))
    moving = evaluate(EvalSettings(data=str(tmp_path / "synth"), out=str(tmp_path / "eval"), clips=1, prompt_clips=0,
                                   generation=GenerationSettings(steps=1), regressor_steps=20, seconds=0.6,
                                   head_motion=True),
                      pipeline=pipeline, progress=lambda *_: None)
    assert len(given) == 1 and given[0].shape == (15, 2, 3)        # 0.6 s at 25 fps
    assert not np.allclose(given[0], given[0][:1])                  # the synthetic head moves
    assert "following the ground truth's head motion" in format_report(moving)
    assert moving["head_motion"] == "ground truth"
    assert "prompt colour found               not run" in format_report(moving)


def test_posed_still_follows_the_head_and_not_the_mouth():
    """The first frame moved with the outline, brow and nose landmarks: a head that only shifts is rebuilt
    (up to the border), whatever the mouth landmarks do; a still face is not."""
    from portraittalk_core.evaluation.baselines import posed_still

    rng = np.random.default_rng(0)
    canvas = (rng.random((40, 40, 3)) * 255).astype(np.uint8).repeat(2, 0).repeat(2, 1)   # 80 x 80, blocky
    shifts = [(0, 0), (3, 0), (0, -2), (4, 4)]
    frames = np.stack([canvas[8 - dy:72 - dy, 8 - dx:72 - dx] for dx, dy in shifts])    # 64 x 64 windows
    regions = {"outline": [0, 1, 2], "brows": [3], "nose": [4], "mouth": [5, 6]}
    points = np.array([[10, 10], [50, 12], [30, 55], [30, 20], [32, 35], [25, 45], [35, 45]], np.float32)
    landmarks = np.stack([points + np.float32(shift) for shift in shifts])
    landmarks[:, 5:] += rng.normal(0, 3, (4, 2, 2)).astype(np.float32)      # the mouth moves on its own
    moved = posed_still(frames, landmarks, regions)
    inner = (slice(None), slice(8, 56), slice(8, 56))
    assert np.array_equal(moved[inner], frames[inner])
    assert ssim(moved / 255.0, frames / 255.0) > ssim(np.repeat(frames[:1], 4, 0) / 255.0, frames / 255.0) + 0.3


def test_baselines_are_read_over_the_generated_clips_and_ordering_over_all():
    from portraittalk_core.evaluation.report import summarise

    clip = dict(lip_sync=0.5, identity_ssim=0.7, psnr=20.0, flicker=0.01, flicker_ground_truth=0.01, lmd=0.1,
                lmd_mouth=0.1, adfd={"score": 0.5})
    baseline = lambda still, holds: dict(ceiling_lip_sync=1.0, ceiling_lmd=0.05, ceiling_adfd=0.7,  # noqa: E731
                                         still_lip_sync=0.0, still_identity_ssim=still, still_adfd=0.5,
                                         posed_still_identity_ssim=still + 0.1, ordering_holds=holds)
    summary = summarise([clip], [baseline(0.9, True), baseline(0.5, False)], [])
    assert summary["still_identity_ssim"] == 0.9 and summary["posed_still_identity_ssim"] == 1.0
    assert summary["ordering_holds"] == "1/2"


def test_chosen_clips_spread_over_identities():
    from pathlib import Path

    from portraittalk_core.evaluation.dataset import spread_over_identities

    clips = sorted(Path(f"{identity * 10}_{k:03d}.npz") for identity in "abc" for k in range(3 if identity == "a" else 1))
    assert [p.name[:1] for p in spread_over_identities(clips)] == ["a", "b", "c", "a", "a"]


def test_regressor_fingerprint_follows_the_shards_not_their_folder(tmp_path):
    from portraittalk_core.evaluation.regressor import shards_fingerprint

    def shards(root: Path, content: bytes) -> list[Path]:
        (root / "train").mkdir(parents=True)
        for name, data in (("a.npz", b"first"), ("b.npz", content)):
            (root / "train" / name).write_bytes(data)
        return sorted((root / "train").glob("*.npz"))

    here, moved, changed = shards(tmp_path / "here", b"second"), shards(tmp_path / "moved", b"second"), \
        shards(tmp_path / "changed", b"re-prepared")
    assert shards_fingerprint(here, 10, 0) == shards_fingerprint(moved, 10, 0)
    assert shards_fingerprint(here, 10, 0) != shards_fingerprint(changed, 10, 0)
    assert shards_fingerprint(here, 10, 0) != shards_fingerprint(here, 20, 0)


def test_palette_ceiling_paints_the_background_and_reads_it_through_the_vae(monkeypatch):
    """Each colour painted over the photo's own background only (not the head, not the hair), put through the VAE,
    and read where the prompt test reads: a VAE that changes nothing keeps every colour."""
    from types import SimpleNamespace

    from portraittalk_core.evaluation import prompt_test
    from portraittalk_core.evaluation.prompt_test import own_background, restyle_palette
    from portraittalk_core.evaluation.settings import EvalSettings
    from portraittalk_core.generation.settings import GenerationSettings
    from portraittalk_core.synth.identity import BACKGROUND_COLOURS

    photo = np.full((12, 12, 3), BACKGROUND_COLOURS["teal"], np.uint8)
    head = np.zeros((12, 12), np.uint8)
    head[3:, 3:9] = 1
    photo[3:, 3:9] = (200, 150, 120)                     # the head
    photo[0, 0] = (10, 10, 10)                           # a dark hair that the head mask misses
    background = own_background(photo, head, ["teal"])
    assert not background[3:, 3:9].any() and not background[0, 0] and background[0, 1]
    painted_inputs = []
    monkeypatch.setattr(prompt_test, "autoencoded", lambda frames, _: painted_inputs.append(frames.copy()) or frames)
    pipeline = SimpleNamespace(  # the restyle itself returns the photo as it came: only the ceiling is looked at
        config=SimpleNamespace(resolution=12), prepare_references=lambda refs, _: refs,
        encode_prompts=lambda prompt, negative: (prompt, negative),
        restyle=lambda refs, *_: SimpleNamespace(faces=[SimpleNamespace(image=photo)]))
    region = background.copy()
    region[4:] = False
    results = restyle_palette(pipeline, photo, "a man, in front of a teal background", {"teal"}, region,
                              EvalSettings(generation=GenerationSettings(steps=1)), 0, photo, background)
    assert [r["vae_found"] for r in results] == [r["prompted"] for r in results] and len(results) == 10
    painted = painted_inputs[0]
    assert (painted[:, 3:, 3:9] == photo[3:, 3:9]).all() and (painted[:, 0, 0] == (10, 10, 10)).all()
    assert not any(r["hit"] for r in results)            # the restyle drew teal every time: no colour asked was found


def test_report_of_a_prompt_only_run_says_what_was_not_run():
    from portraittalk_core.evaluation.report import format_report, summarise

    baseline = dict(ceiling_lip_sync=1.0, ceiling_lmd=0.05, ceiling_adfd=0.7, still_lip_sync=0.0,
                    still_identity_ssim=0.8, still_adfd=0.5, posed_still_identity_ssim=0.9, ordering_holds=True)
    palette = [{"prompted": "blue", "found": "blue", "hit": True, "vae_found": "blue"},
               {"prompted": "grey", "found": "white", "hit": False, "vae_found": "beige"}]
    report = summarise([], [baseline], [{"prompted": "blue", "found": "blue", "hit": True}], palette)
    report["split"], report["settings"] = "test", dict(text_scale=5.0, identity_scale=2.0, audio_scale=6.0)
    text = format_report(report)
    assert "lip sync, identity, flicker, ADFD, LMD, PSNR: not run (--clips 0)" in text and "nan" not in text
    assert "whole palette      0.500" in text and "grey 0/1 blue 1/1" in text   # in palette order
    assert "through the VAE alone: 0.500" in text
    assert "holds on 1/1 test clips" in text
