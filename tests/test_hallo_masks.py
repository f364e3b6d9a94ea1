"""Hallo's reference-photo preparation (portraittalk_core/face/hallo_regions.py) against their own code's output.

tests/fixtures/hallo/masks.* come from `tools/hallo_reference.py masks`: Hallo's ImageProcessor.preprocess and mask
functions on a synthetic 96x80 photo with synthetic landmarks, in four cases (both boxes inside, the same at
resolution 128, a face box shifted back inside, a face box larger than the photo). Everything here is integer
arithmetic, OpenCV's and PIL's uint8 arithmetic, then one float32 division: the same steps give the same bits, so
masks, pixels and face box are held to equality.
"""

from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from portraittalk_core.errors import InputError, PortraitTalkWarning
from portraittalk_core.face import HALLO_REGIONS, HalloReference, hallo_reference
from portraittalk_core.face import hallo_regions
from portraittalk_core.models.audio_block import REGIONS

from hallo_fixtures import FIXTURES

TENSORS = load_file(FIXTURES / "masks.safetensors")
META = json.loads((FIXTURES / "masks.json").read_text())
IMAGE = TENSORS["in.image"].numpy()
CASES = list(META["cases"])


def landmarks(case: str) -> np.ndarray:
    return TENSORS[META["cases"][case]["landmarks"]].numpy()


def run(case: str, **kwargs) -> HalloReference:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PortraitTalkWarning)
        return hallo_reference(IMAGE, landmarks(case), META["cases"][case]["resolution"], **kwargs)


def expected(case: str) -> dict[str, torch.Tensor]:
    prefix = f"out.{case}."
    return {k.removeprefix(prefix): v for k, v in TENSORS.items() if k.startswith(prefix)}


def ours(ref: HalloReference, name: str) -> torch.Tensor:
    if name in ("pixels", "face_box"):
        return getattr(ref, name)
    region, level = name.rsplit(".", 1)
    return ref.masks[region.removesuffix("_mask")][int(level)]


def masks_equal(ref: HalloReference, case: str) -> bool:
    return all(torch.equal(ours(ref, name), value) for name, value in expected(case).items() if "_mask." in name)


@pytest.mark.parametrize("case", CASES)
def test_matches_hallo(case):
    info = META["cases"][case]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PortraitTalkWarning)
        ref = hallo_reference(IMAGE, landmarks(case), info["resolution"])
    assert list(ref.face_region) == info["face_box"]["returned"]
    assert list(ref.lip_region) == info["lip_box"]["returned"]
    found = expected(case)
    assert len(found) == 12 + sum(k in found for k in ("pixels", "face_box"))
    for name, value in found.items():
        mine = ours(ref, name)
        assert mine.dtype == torch.float32 and mine.shape == value.shape, name
        # exact: see the module docstring (the pixels and face box too, though 1e-6 was asked)
        assert torch.equal(mine, value), f"{case} {name}: max |diff| {(mine - value).abs().max().item():.3g}"
    sides = [int(ref.masks["full"][level].numel() ** 0.5) for level in range(4)]
    assert sides == info["levels"]
    # only the oversized face box (taller than the photo: their fill marks a strip) warns
    assert bool(caught) == (case == "oversized")
    if case == "oversized":
        assert "larger than the photo" in str(caught[0].message)
        rows = np.flatnonzero(hallo_regions.fill_box(ref.face_region, *IMAGE.shape[:2]).any(axis=1))
        assert list(rows) == list(range(IMAGE.shape[0] + ref.face_region[2], IMAGE.shape[0]))


def test_masks_are_what_the_model_reads():
    """Keys and order of AttentionContext.region_masks: models.audio_block.REGIONS; one (1, h*w) tensor per level."""
    ref = run("inside")
    assert HALLO_REGIONS == REGIONS
    assert tuple(ref.masks) == REGIONS
    assert all(len(levels) == 4 for levels in ref.masks.values())
    assert all(m.shape == (1, side * side) for levels in ref.masks.values()
               for m, side in zip(levels, (8, 4, 2, 1)))
    assert ref.pixels.min() >= -1 and ref.pixels.max() <= 1 and ref.face_box.min() >= 0 and ref.face_box.max() <= 1


def test_mediapipe_detector_landmarks_pass_as_they_are():
    """MediaPipeDetector gives 468 float32 points in the photo's pixels: every id Hallo reads is below 468."""
    points = landmarks("shifted")[:468].astype(np.float32)
    assert masks_equal(hallo_reference(IMAGE, points, 64), "shifted")


# --- each quirk matters: dropping it changes the result on the fixture's own inputs --------------------------------


def test_aspect_ratio_is_not_kept():
    """Their Resize gets a (w, h) pair, so the photo is squeezed to R x R; keeping the aspect (shorter side to R, then
    a centre crop, as Resize(int) would) gives other pixels."""
    side = META["cases"]["inside"]["resolution"]
    height, width = IMAGE.shape[:2]
    scaled = Image.fromarray(IMAGE).resize((round(width * side / height), side), Image.Resampling.BILINEAR)
    left = (scaled.width - side) // 2
    kept = np.asarray(scaled.crop((left, 0, left + side, side)))
    kept = torch.from_numpy(kept.copy()).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)
    assert (kept - TENSORS["out.inside.pixels"]).abs().max() > 0.1
    assert torch.equal(run("inside").pixels, TENSORS["out.inside.pixels"])


def _half_up_box(points, ids):
    chosen = np.asarray(points, dtype=np.float64)[list(ids)]
    low, high = np.floor(chosen.min(axis=0) + 0.5), np.floor(chosen.max(axis=0) + 0.5)
    return float(low[0]), float(high[0]), float(low[1]), float(high[1])


def _clipped_fill(box, height, width):
    min_x, max_x, min_y, max_y = (max(v, 0) for v in box)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[min_y:max_y, min_x:max_x] = 255
    return mask


def _opencv_resize(image, side, mode=None):
    if mode is not None:
        image = np.asarray(Image.fromarray(image).convert(mode))
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)


QUIRKS = {
    # the full mask without the float64 truncation: 255 - face, exact
    "truncation": ("inverted_truncated", lambda mask: (255 - mask.astype(np.int16)).astype(np.uint8)),
    # the face mask with a wrapping uint8 subtraction instead of cv2.subtract's saturation
    "saturation": ("saturating_subtract", lambda a, b: (a.astype(np.int16) - b).astype(np.uint8)),
    # box corners rounded half up instead of np.round's half to even (20.5 -> 21, not 20)
    "half_to_even": ("landmark_box", _half_up_box),
    # a box with a negative start clipped to the photo instead of numpy's slice from the end
    "negative_start": ("fill_box", _clipped_fill),
    # the level resize by OpenCV (bilinear without antialiasing) instead of PIL's
    "pil_resize": ("pil_bilinear", _opencv_resize),
}


@pytest.mark.parametrize("quirk", list(QUIRKS))
def test_each_quirk_matters(monkeypatch, quirk):
    name, replacement = QUIRKS[quirk]
    assert all(masks_equal(run(case), case) for case in CASES)
    monkeypatch.setattr(hallo_regions, name, replacement)
    changed = [case for case in CASES if not masks_equal(run(case), case)]
    print(quirk, "changes the masks of", changed)
    assert changed
    if quirk in ("truncation", "saturation", "pil_resize"):
        assert changed == CASES  # every case shows these
    elif quirk == "negative_start":
        assert changed == ["oversized"]


def test_face_expand_ratio_is_the_configs():
    assert hallo_regions.FACE_EXPAND_RATIO == META["cases"]["inside"]["face_expand_ratio"] == 1.2
    assert not masks_equal(run("inside", face_expand_ratio=1.3), "inside")


# --- inputs it refuses -----------------------------------------------------------------------------------------------


def refused(*args, **kwargs) -> InputError:
    with pytest.raises(InputError) as caught:
        hallo_reference(*args, **kwargs)
    assert caught.value.problem and caught.value.fix
    return caught.value


def test_too_few_or_misshapen_landmarks():
    err = refused(IMAGE, landmarks("inside")[:106], 64)
    assert "468" in err.problem and "MediaPipeDetector" in err.fix
    refused(IMAGE, np.zeros((478, 3)), 64)
    refused(IMAGE, "not landmarks", 64)


@pytest.mark.parametrize("resolution", [100, 32, 0, -64, 64.0, True])
def test_resolution_not_a_multiple_of_64(resolution):
    err = refused(IMAGE, landmarks("inside"), resolution)
    assert "multiple of 64" in err.problem and "512" in err.fix


@pytest.mark.parametrize("where", ["left", "below"])
def test_landmarks_outside_the_photo(where):
    points = landmarks("inside").astype(np.float64)
    if where == "left":
        points[hallo_regions.SILHOUETTE_IDS[27], 0] = -0.5
    else:
        points[hallo_regions.LIP_IDS[15], 1] = IMAGE.shape[0] + 0.25
    err = refused(IMAGE, points, 64)
    assert "outside" in err.problem and "pad the photo" in err.fix


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_landmarks(value):
    points = landmarks("inside").astype(np.float64)
    points[400, 1] = value  # not even a point they read
    err = refused(IMAGE, points, 64)
    assert "NaN or infinite" in err.problem


def test_bad_image_and_ratio():
    refused(IMAGE[..., 0], landmarks("inside"), 64)
    refused(IMAGE.astype(np.float32), landmarks("inside"), 64)
    refused(IMAGE, landmarks("inside"), 64, face_expand_ratio=0.0)
