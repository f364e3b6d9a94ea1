"""The procedural talking-face dataset: identities, rendering and landmarks, motion, splits, clips."""

from __future__ import annotations

import json
import math
import shutil

import av
import numpy as np
import pytest

from portraittalk_core import face
from portraittalk_core.audio import frame_count
from portraittalk_core.errors import PortraitTalkError
from portraittalk_core.data.landmarks68 import REGIONS_68, kps_from_68
from portraittalk_core.synth import (SENTENCES, VOICES, ClipSpec, blinks, caption, frame_rms, generate_clip,
                                     head_motion, identity_from_seed, main_synth, mouth_curves, palette,
                                     plan_dataset, render_frame, sample_identity, speak, synth_dataset)
from portraittalk_core.synth import identity as identity_module
from portraittalk_core.synth import speech as speech_module
from portraittalk_core.io.video import probe_video

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

SHORTEST = min(range(len(SENTENCES)), key=lambda i: len(SENTENCES[i]))


def _identity(**overrides):
    """A fixed identity with chosen attributes (bald and bare-faced unless asked otherwise)."""
    base = identity_from_seed(0)
    fields = dict(base.__dict__, hair_style="bald", glasses="none", beard="none")
    fields.update(overrides)
    return type(base)(**fields)


# ---- identity ---------------------------------------------------------------------------------------


def test_sample_identity_is_deterministic_and_varied():
    a = sample_identity(np.random.default_rng(7), seed=7)
    b = sample_identity(np.random.default_rng(7), seed=7)
    assert a == b and a.id == b.id
    people = [identity_from_seed(s) for s in range(50)]
    assert len({p.id for p in people}) == 50
    assert len({p.hair_colour for p in people}) >= 5
    assert len({p.hair_style for p in people}) >= 4
    assert len({p.background for p in people}) == 3
    assert any(p.glasses != "none" for p in people) and any(p.beard != "none" for p in people)


def test_caption_names_the_palette_words():
    for seed in range(30):
        person = identity_from_seed(seed)
        text = caption(person)
        assert f"{person.background_colour} " in text and "background" in text
        assert f"{person.shirt_colour} shirt" in text and f"{person.eye_colour} eyes" in text
        if person.hair_style == "bald":
            assert text.startswith("a bald person")
        else:
            assert person.hair_colour in text and person.hair_colour in identity_module.HAIR_COLOURS
        if person.glasses != "none":
            assert f"{person.glasses} glasses" in text
    text = caption(_identity(hair_style="curly", hair_colour="red", background="solid",
                             background_colour="blue", background_colour2=None, glasses="round"))
    assert "red curly hair" in text and "round glasses" in text and text.endswith("in front of a blue background")


# ---- rendering -------------------------------------------------------------------------------------


def _gap(landmarks, upper, lower):
    return float(np.linalg.norm(landmarks[lower] - landmarks[upper]))


def test_render_frame_shapes_and_landmarks_inside():
    for seed in range(6):
        image, landmarks = render_frame(identity_from_seed(seed), 96, aperture=0.7, width=0.3,
                                        eye_open=1.0, pose=(0.02, -0.02, 3.0))
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert landmarks.shape == (68, 2) and landmarks.dtype == np.float32
        assert np.all(landmarks > 0) and np.all(landmarks < 95)
        assert image.std() > 10  # a picture, not a flat colour


def test_inner_lip_gap_grows_with_aperture():
    person = identity_from_seed(3)
    ratios = []
    for aperture in (0.0, 0.25, 0.5, 0.75, 1.0):
        _, lm = render_frame(person, 128, aperture=aperture)
        ratios.append(_gap(lm, 62, 66) / _gap(lm, 27, 8))
    assert ratios[0] < 1e-6
    assert all(b > a + 0.01 for a, b in zip(ratios, ratios[1:]))


def test_mouth_landmarks_lie_on_drawn_lips():
    person = _identity(skin_tone="fair", lip_colour="crimson", lip_fullness=0.8)  # the thinnest lips
    lips = np.array(palette(person)["lips"], dtype=np.float64)
    for aperture in (0.0, 0.6):
        image, lm = render_frame(person, 256, aperture=aperture, pose=(0.01, 0.0, 4.0))
        centre = lm[48:60].mean(0)
        for index in [49, 50, 51, 52, 53, 55, 56, 57, 58, 59]:
            point = lm[index]
            inward = (centre - point) / np.linalg.norm(centre - point)
            x, y = np.round(point + 1.5 * inward).astype(int)
            assert np.abs(image[y, x] - lips).max() < 40, (aperture, index, image[y, x], lips)


def test_eye_open_zero_closes_the_lids():
    person = identity_from_seed(2)
    _, open_lm = render_frame(person, 128, eye_open=1.0)
    _, shut_lm = render_frame(person, 128, eye_open=0.0)
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        assert _gap(open_lm, upper, lower) > 2.0
        assert _gap(shut_lm, upper, lower) < 1e-3


def test_pose_tilt_rotates_the_eye_line():
    person = identity_from_seed(4)
    for tilt in (-6.0, 0.0, 5.0):
        _, lm = render_frame(person, 128, pose=(0.01, -0.01, tilt))
        kps = kps_from_68(lm)
        dx, dy = kps[1] - kps[0]
        assert math.degrees(math.atan2(dy, dx)) == pytest.approx(tilt, abs=0.05)


def test_face_module_aligns_and_rasterizes_synthetic_faces():
    person = identity_from_seed(5)
    image, lm = render_frame(person, 128, aperture=0.4, pose=(0.02, 0.01, 4.0))
    detection = face.FaceDetection(bbox=np.array([*lm.min(0), *lm.max(0)]), score=1.0,
                                   kps=kps_from_68(lm), landmarks=lm, regions=REGIONS_68, embedding=None)
    aligned = face.align_face(image, detection, size=128, face_fraction=0.35)
    assert aligned.image.shape == (128, 128, 3)
    # The renderer frames faces like the template: alignment barely moves an upright, centred face.
    _, upright = render_frame(person, 128, aperture=0.4)
    assert np.abs(kps_from_68(upright)[:2] - face.template_kps(128, 0.35)[:2]).max() < 3.0
    landmark_map = face.rasterize_landmarks(lm, REGIONS_68, 128)
    assert landmark_map.shape == (3, 128, 128)
    assert all(landmark_map[c].max() > 0.5 for c in range(3))


# ---- motion -------------------------------------------------------------------------------------------


def test_blinks_and_head_motion():
    fps, n = 25.0, 500
    eyes = blinks(np.random.default_rng(0), n, fps)
    assert eyes.shape == (n,) and eyes.max() == 1.0 and eyes.min() == 0.0
    shut = np.flatnonzero(eyes == 0.0)
    gaps = np.diff(shut) / fps
    assert len(shut) >= 3 and gaps.min() >= 1.9 and gaps.max() <= 5.1
    assert np.array_equal(eyes, blinks(np.random.default_rng(0), n, fps))

    wander = head_motion(np.random.default_rng(1), n, fps)          # no speech: the small random wander alone
    assert wander.shape == (n, 3)
    assert 0.001 < np.abs(wander[:, :2]).mean() < 0.01 and 0.15 < np.abs(wander[:, 2]).mean() < 1.2
    assert np.abs(np.diff(wander[:, 2])).max() < 0.5  # smooth: well under a degree per frame


def test_the_head_follows_the_speech_whatever_the_seed():
    """Most of the head's motion is the speech's (a model can learn it from the audio): two seeds give nearly the same
    motion for the same speech; loud stretches sink the head, bright ones turn and tilt it."""
    fps, n = 25.0, 200
    t = np.arange(n) / fps
    activity = np.clip(np.sin(2 * np.pi * t / 3.0), 0, None).astype(np.float32)        # speech, then a pause
    brightness = (0.3 * np.sin(2 * np.pi * t / 1.5) * (activity > 0.1)).astype(np.float32)   # as espeak's vary
    one, two = (head_motion(np.random.default_rng(seed), n, fps, activity, brightness) for seed in (1, 2))
    for axis in range(3):
        assert np.corrcoef(one[:, axis], two[:, axis])[0, 1] > 0.8
    loud, quiet = activity > 0.7, activity < 0.05
    assert one[loud, 1].mean() - one[quiet, 1].mean() > 0.02              # the head sinks (dy down) while loud
    bright, dark = brightness > 0.2, brightness < -0.2
    assert one[bright, 0].mean() - one[dark, 0].mean() > 0.01 and one[bright, 2].mean() - one[dark, 2].mean() > 1.5
    assert np.abs(np.diff(one[:, 2])).max() < 0.5                        # still smooth


def test_speak_without_espeak_names_the_fix(monkeypatch):
    monkeypatch.setattr(speech_module.shutil, "which", lambda name: None)
    with pytest.raises(PortraitTalkError, match="apt-get install espeak-ng"):
        speak("Hello there, my friend.")


@needs_espeak
def test_mouth_curves_follow_the_speech_envelope():
    wave = speak(SENTENCES[0], "en-us+m3", 160, 50)
    n = frame_count(wave.duration, 25.0)
    aperture, width = mouth_curves(wave, 25.0, n)
    assert aperture.shape == width.shape == (n,)
    assert aperture.min() >= 0 and aperture.max() <= 1 and width.min() >= 0 and width.max() <= 1
    assert aperture[:3].max() < 0.05 and aperture[-3:].max() < 0.05  # the padded silence
    assert aperture[5:-5].mean() > 0.25
    assert np.corrcoef(aperture, frame_rms(wave, 25.0, n))[0, 1] > 0.8
    assert width.std() > 0.05


# ---- planning -------------------------------------------------------------------------------------------


def test_plan_dataset_holds_out_identities_and_sentences():
    plan = plan_dataset(seed=3, n_identities=30, clips_per_identity=6)
    assert plan == plan_dataset(seed=3, n_identities=30, clips_per_identity=6)
    assert plan != plan_dataset(seed=4, n_identities=30, clips_per_identity=6)
    assert len(plan) == 180
    by_split = {s: [c for c in plan if c.split == s] for s in ("train", "val", "test")}
    assert all(by_split.values())
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not {c.identity_seed for c in by_split[a]} & {c.identity_seed for c in by_split[b]}
        assert not {c.sentence_index for c in by_split[a]} & {c.sentence_index for c in by_split[b]}
    assert {c.sentence_index for c in by_split["test"]} <= set(range(36, 40))
    assert len({c.voice for c in plan}) == len(VOICES) and len({c.rate for c in plan}) > 10
    pairs = [(c.identity_seed, c.sentence_index, c.voice) for c in plan]
    assert len(set(pairs)) == len(pairs)  # clip ids are unique


# ---- clips --------------------------------------------------------------------------------------------------


def _decode(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def clip_pair(tmp_path_factory):
    spec = ClipSpec(identity_seed=11, sentence_index=SHORTEST, voice="en-gb+f2", rate=170, pitch=45,
                    split="train")
    first = generate_clip(spec, tmp_path_factory.mktemp("a"), size=64, fps=25.0)
    second = generate_clip(spec, tmp_path_factory.mktemp("b"), size=64, fps=25.0)
    return spec, first, second


@needs_espeak
def test_generate_clip_writes_consistent_files(clip_pair):
    spec, video, _ = clip_pair
    meta = json.loads(video.with_suffix(".json").read_text())
    arrays = np.load(video.with_suffix(".npz"))
    n = meta["n_frames"]
    assert n == math.ceil(meta["duration"] * 25.0 - 1e-9)
    info = probe_video(video)
    assert info.frames == n and (info.width, info.height) == (64, 64)
    assert info.audio_codec == "aac" and info.audio_duration == pytest.approx(meta["duration"], abs=0.03)
    assert arrays["landmarks"].shape == (n, 68, 2) and arrays["kps"].shape == (n, 5, 2)
    assert arrays["pose"].shape == (n, 3)
    for key in ("aperture", "width", "eye_open"):
        assert arrays[key].shape == (n,)
    assert meta["sentence"] == SENTENCES[SHORTEST] and meta["voice"] == spec.voice
    assert meta["caption"] == caption(identity_from_seed(spec.identity_seed))
    assert meta["identity"]["id"] in video.name and meta["split"] == "train"


@needs_espeak
def test_generate_clip_is_deterministic(clip_pair):
    _, first, second = clip_pair
    a, b = np.load(first.with_suffix(".npz")), np.load(second.with_suffix(".npz"))
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key
    assert np.array_equal(_decode(first), _decode(second))


@needs_espeak
def test_generated_frames_move_the_mouth(clip_pair):
    _, video, _ = clip_pair
    arrays = np.load(video.with_suffix(".npz"))
    frames = _decode(video).astype(np.float64)
    wide, shut = int(np.argmax(arrays["aperture"])), int(np.argmin(arrays["aperture"]))
    mouth = arrays["landmarks"][wide, 48:68]
    (x0, y0), (x1, y1) = np.floor(mouth.min(0)).astype(int), np.ceil(mouth.max(0)).astype(int) + 1
    difference = np.abs(frames[wide, y0:y1, x0:x1] - frames[shut, y0:y1, x0:x1]).mean()
    assert arrays["aperture"][wide] > 0.8 and arrays["aperture"][shut] < 0.05
    assert difference > 25, difference


@needs_espeak
def test_synth_dataset_writes_manifest_and_resumes(tmp_path, capsys):
    out = tmp_path / "data"
    code = main_synth(["--out", str(out), "--identities", "3", "--clips-per-identity", "1",
                       "--size", "32", "--seed", "5"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [len(manifest["splits"][s]["identities"]) for s in ("train", "val", "test")] == [1, 1, 1]
    assert manifest["settings"]["size"] == 32 and len(manifest["clips"]) == 3
    for clip in manifest["clips"]:
        for key in ("video", "arrays", "meta"):
            assert (out / clip[key]).is_file() and clip[key].startswith(clip["split"] + "/")
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    again = synth_dataset(out, 3, 1, size=32, seed=5)
    assert again["clips"] == manifest["clips"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == stamps  # nothing was redone


@needs_espeak
def test_parallel_workers_make_the_same_dataset(tmp_path):
    one = synth_dataset(tmp_path / "one", 3, 1, size=32, seed=9, workers=1)
    two = synth_dataset(tmp_path / "two", 3, 1, size=32, seed=9, workers=2)
    assert one == two
    for clip in one["clips"]:
        a, b = np.load(tmp_path / "one" / clip["arrays"]), np.load(tmp_path / "two" / clip["arrays"])
        assert all(np.array_equal(a[key], b[key]) for key in a.files)
        assert np.array_equal(_decode(tmp_path / "one" / clip["video"]), _decode(tmp_path / "two" / clip["video"]))


def test_synth_command_reports_bad_arguments(tmp_path, capsys):
    assert main_synth(["--out", str(tmp_path), "--identities", "0"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main_synth(["--out", str(tmp_path), "--identities", "3", "--clips-per-identity", "99"]) == 2
    assert "at most" in capsys.readouterr().err


def test_stills_are_deterministic_aligned_and_of_people_the_clips_do_not_have(tmp_path):
    from portraittalk_core.synth.dataset import identity_seeds
    from portraittalk_core.synth.stills import make_stills, still_seeds

    first = make_stills(tmp_path / "a.npz", 6, size=96, train_size=64, seed=3)
    again = make_stills(tmp_path / "b.npz", 6, size=96, train_size=64, seed=3)
    with np.load(first) as a, np.load(again) as b:
        for key in ("frames", "landmarks", "captions"):
            assert np.array_equal(a[key], b[key])
        frames, landmarks, captions = a["frames"], a["landmarks"], a["captions"]
    assert frames.shape == (6, 64, 64, 3) and frames.dtype == np.uint8 and landmarks.shape == (6, 68, 2)
    assert len(set(captions.tolist())) == 6                               # six people, six captions
    # aligned as prepare aligns a clip: the face in the middle of the crop, at the config's framing
    assert ((landmarks > 0) & (landmarks < 64)).all()
    assert np.allclose(np.median(landmarks.reshape(-1, 2), axis=0), 32, atol=8)
    assert not set(still_seeds(3, 1000)) & set(identity_seeds(3, 1000))   # never a person of the video dataset

    stamp = first.stat().st_mtime_ns
    assert make_stills(first, 6, size=96, train_size=64, seed=3) == first and first.stat().st_mtime_ns == stamp
    make_stills(first, 4, size=96, train_size=64, seed=3)                 # other settings: made again
    with np.load(first) as a:
        assert len(a["frames"]) == 4
