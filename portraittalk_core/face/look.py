"""Exposure and colour: what the generator sees of a reference, and what the frames look like.

Generators learn from photos exposed and coloured the usual way. Shown a very dark crop, they draw the
mouth in the brightness they know, which lands on the dark photo as a glowing patch; shown a
black-and-white photo, they give it coloured lips. So a crop far outside the usual exposure is brought
into it before the model sees it (``photo_look``, ``PhotoLook.apply``), and the frames made from it are
taken back to the photo's exposure, and to gray for a gray photo (``PhotoLook.restore``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .images import check_rgb_uint8, is_torch_tensor
from .masks import head_placement_mask

# Measured on the aligned crop in 0..255, per pixel on its brightest channel for highlights and
# its darkest for shadows: the knot of the tone curve then has (nearly) every channel value on
# the side that is scaled, so hues are kept and the photo's pixels come back exactly.
# Both thresholds are half the range, far from well-exposed photos and from the procedural faces
# the demo model learned from. Normalising a photo that did not need it costs little: the model
# sees it somewhat brighter or darker, and the frames still get the photo's own values back.
# Under-exposed: the crop's highlights (99.5th percentile) stay below this. They are 242 in
# reference.jpg's 64 px crop and 186-250 in 119 procedural faces (darkest skin and background
# included); the astronaut photo scaled to 0.3 of its brightness has 72.
UNDEREXPOSED_HIGHLIGHTS = 128.0
# ... and are lifted to this, the photo's darker values scaled by the same factor.
TARGET_HIGHLIGHTS = 200.0
# Washed out: the darkest 1% of the face (pupils, nostrils, lip line) is lighter than this. It is
# 5 in reference.jpg's crop and 23-101 in the procedural faces (101: the palest).
OVEREXPOSED_FACE_SHADOWS = 128.0
TARGET_FACE_SHADOWS = 60.0
# A crop is gray when its pixels' channels differ by at most this (99th percentile), which
# allows a JPEG's rounding; a photo desaturated to 10% still differs by 15 or more.
GRAY_CHANNEL_SPREAD = 3


@dataclass(frozen=True, eq=False)
class PhotoLook:
    """How an aligned reference's pixels were changed for the generator (``normalise_look``),
    and ``restore``, which gives frames made from it the photo's own look.

    ``tone`` is a piecewise-linear curve, (x knots, y knots) in 0..255, that took the photo's
    pixel values to the ones the generator saw (None: unchanged); values outside the x knots
    clamp to its ends. Its inverse is exact where the curve stretches (nearly all the photo's
    pixels) and within a level or two where it compresses, so pasted-back photo pixels come back
    as they were.
    """

    grayscale: bool = False
    tone: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def changed(self) -> bool:
        """Whether ``restore`` does anything."""
        return self.grayscale or self.tone is not None

    def apply(self, image: np.ndarray) -> np.ndarray:
        """uint8 photo pixels -> what the generator sees."""
        if self.tone is None:
            return image
        return _tone_lut(*self.tone)[image]

    def restore(self, frames):
        """Frames made from the adjusted reference -> in the photo's exposure, gray for a gray
        photo. uint8 arrays (..., 3) in 0..255, float arrays or torch tensors in [0, 1] (ComfyUI
        IMAGE); the same type, shape and dtype come back."""
        if not self.changed:
            return frames
        if is_torch_tensor(frames):
            import torch

            restored = self.restore(frames.detach().cpu().float().numpy())
            return torch.from_numpy(restored).to(frames.device, frames.dtype)
        frames = np.asarray(frames)
        if frames.dtype == np.uint8:
            if self.tone is not None:
                xs, ys = self.tone
                frames = _tone_lut(ys, xs)[frames]
            if self.grayscale:
                gray = cv2.cvtColor(frames.reshape(-1, frames.shape[-2], 3), cv2.COLOR_RGB2GRAY)
                frames = np.repeat(gray.reshape(*frames.shape[:-1], 1), 3, axis=-1)
            return frames
        values = frames.astype(np.float32)
        if self.tone is not None:
            xs, ys = self.tone
            values = np.interp(values * 255.0, ys, xs).astype(np.float32) / 255.0
        if self.grayscale:
            luma = values @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            values = np.repeat(luma[..., None], 3, axis=-1)
        return values.astype(frames.dtype)


def _tone_lut(xs, ys) -> np.ndarray:
    return np.round(np.interp(np.arange(256), xs, ys)).clip(0, 255).astype(np.uint8)


def photo_look(image: np.ndarray, landmarks: np.ndarray) -> PhotoLook:
    """What ``normalise_look`` does to an aligned crop (``image``, RGB uint8) with these landmarks.

    Exposure is a multiplication, so a dark crop's values are scaled by one factor that puts its
    highlights at ``TARGET_HIGHLIGHTS``, and the few brighter ones (up to the crop's brightest)
    share what is left up to 255; a washed-out crop is scaled down from white alike, its face's
    shadows to ``TARGET_FACE_SHADOWS``. The curve ends at the crop's own extremes, not at 0 or
    255, so that what the model draws beyond the photo's range (a brighter tooth) comes back at
    the photo's brightest, not at a highlight the photo never had.
    """
    check_rgb_uint8(image)
    spread = image.max(axis=2).astype(np.int16) - image.min(axis=2)
    grayscale = bool(np.percentile(spread, 99) <= GRAY_CHANNEL_SPREAD)
    brightest = image.max(axis=2)
    highlights = float(np.percentile(brightest, 99.5))
    tone = None
    if highlights < UNDEREXPOSED_HIGHLIGHTS:
        knot = max(highlights, 1.0)  # an all-black crop: scale what little there is
        top = float(brightest.max())
        tone = ((0.0, knot, top), (0.0, TARGET_HIGHLIGHTS, 255.0)) if top > knot else (
            (0.0, knot), (0.0, TARGET_HIGHLIGHTS))
    else:
        face = head_placement_mask(landmarks, image.shape[0], margin=0.0) > 0
        darkest = image.min(axis=2)
        if face.any():
            shadows = float(np.percentile(darkest[face], 1))
            if shadows > OVEREXPOSED_FACE_SHADOWS:
                knot = min(shadows, 254.0)
                bottom = float(darkest.min())
                tone = ((bottom, knot, 255.0), (0.0, TARGET_FACE_SHADOWS, 255.0)) if bottom < knot else (
                    (knot, 255.0), (TARGET_FACE_SHADOWS, 255.0))
    return PhotoLook(grayscale=grayscale, tone=tone)
