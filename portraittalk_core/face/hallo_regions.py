"""Hallo's preparation of the reference photo (issue 26): the pixels its VAE encodes, the face-locator input and the
three region masks its audio blocks multiply by, computed from one photo and its face-mesh landmarks exactly as their
code computes them. ``hallo_reference(image, landmarks)`` gives all three as a ``HalloReference``.

Their code is fudan-generative-vision/hallo at 8fd7c57: ``ImageProcessor.preprocess``
(hallo/datasets/image_processor.py:107-182), which calls ``get_mask`` (hallo/utils/util.py:497-526) and reads back
the PNGs it writes. Step by step, with what this module mirrors (facts only):

1. **Landmarks** (util.py:332-379). mediapipe's FaceLandmarker v2 (478 points), in IMAGE mode on the file, exactly
   one face (otherwise no landmarks); each point is ``(x * width, y * height)`` of its normalised output, in float64,
   not rounded, in the file's own pixels. Only ids below 468 are read, so the legacy 468-point mesh has every point
   they use. Ours: any (N, 2) array, N >= 468, in the photo's pixels, held in float64 here.
2. **Boxes.** The bounding box of the 36 face-oval ids and of the 20 outer-lip ids (util.py:323-329), each corner
   rounded with ``np.round``, half to even: 20.5 -> 20, 71.5 -> 72 (util.py:418-420,464-466). ``expand_region``
   (util.py:529-564): centre ``(min + max) // 2``, side ``(max - min) * ratio``, ends at centre -/+ ``side // 2``,
   all floor division in float64; then an end past an edge shifts the box back by the overshoot, the low edge first,
   then the high one, so a box bigger than the photo ends with a negative start. Ratios: the face
   ``face_expand_ratio``, 1.2 in their config (configs/inference/default.yaml:41, passed at image_processor.py:141);
   the lips 2.0 (get_lip_mask's default, which get_mask does not override: util.py:407,510).
3. **Fill** (util.py:423-425,469-471). A uint8 zeros (height, width) image, ``[min_y:max_y, min_x:max_x]`` set to
   255 with numpy's slicing: a negative start counts from the end, so an oversized box marks only a strip at the
   bottom or right (``hallo_reference`` warns). Written as PNG and read back by OpenCV and PIL, which changes nothing.
4. **Blur** (util.py:567-609). ``cv2.resize`` to 64x64 whatever the photo's shape (INTER_LINEAR, aspect not kept),
   ``cv2.GaussianBlur`` with kernel 51 for the face and 31 for the lips (util.py:516,519) and sigma 0 (OpenCV's own
   8 and 5 from the kernel size), then ``cv2.normalize`` NORM_MINMAX to 0..255 in uint8. A box that is all of the
   64x64 (or none of it) is constant and normalises to zeros. The exact values depend on OpenCV's fixed-point uint8
   arithmetic, so this module calls the same OpenCV functions.
5. **The three masks.** Full ("pose", their sep_background): ``(1 - face/255) * 255`` in float64 cast to uint8, which
   truncates (util.py:627-631). Face (sep_face): ``cv2.subtract(face, lip)``, saturating at 0 (util.py:662). Lip
   (sep_lip): the blurred lip box.
6. **Per level** (image_processor.py:71-98,149-180). Each 64x64 mask as a PIL "L" image, torchvision's
   ``Resize((R // 8, R // 8))`` (and R // 16, R // 32, R // 64: the sides come from the config's width), which on a
   PIL image is PIL's bilinear resize (antialiased when it shrinks; the identity at the same size), ``ToTensor``
   (uint8 / 255 in float32), then ``.view(1, -1)``. scripts/inference.py:271-282 repeats each over the clip's frames;
   the level index is the UNet depth (docs/hallo.md, section 1).
7. **Reference pixels** (image_processor.py:22-23,56-62,118-121). The photo as PIL RGB, ``Resize(img_size)`` with the
   config's (width, height) tuple, i.e. PIL bilinear straight to R x R (the aspect ratio is not kept), ``ToTensor``,
   ``Normalize([0.5], [0.5])``: ``(u / 255 - 0.5) / 0.5`` in float32, in [-1, 1].
8. **Face-locator input** (image_processor.py:64-69,141-146). The sharp face box (step 3) opened as RGB (three equal
   channels), PIL bilinear to R x R, ``ToTensor``: (3, R, R) in [0, 1].

Their ``img_size`` is (width, height) of configs/inference/default.yaml:9-11, 512 x 512 (scripts/inference.py:153-154);
torchvision reads a pair as (height, width), and the mask sides use the width alone, so only a square size means what
it says: ``resolution`` here is that side. It must be a multiple of 64 (the deepest level is R / 64).

Checked against their own functions (tools/hallo_reference.py masks, tests/fixtures/hallo/masks.*): every mask,
pixel and face-box value equal, with OpenCV 4.9 (their pin) and 5.1, Pillow 10.3 (their pin) and 13.0.

Landmarks from ``MediaPipeDetector`` (``FaceDetection.landmarks``: 468 points, float32, in the photo's pixels) can be
passed as they are. They come from the legacy face mesh run on a levelled crop and mapped back, not from
FaceLandmarker v2 on the whole photo, so on a real photo the points, and the boxes, can differ by a pixel or so
(docs/hallo.md, open question 4). insightface's 106 points are another scheme and are refused.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from ..errors import InputError, PortraitTalkWarning
from .images import check_rgb_uint8

if TYPE_CHECKING:  # torch itself is imported when hallo_reference runs (see there)
    import torch

# mediapipe face-mesh ids (facts of mediapipe's topology, as Hallo lists them: util.py:323-329)
SILHOUETTE_IDS = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
                  176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIP_IDS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375)
MESH_POINTS = 468  # every id above is below this
FACE_EXPAND_RATIO = 1.2  # configs/inference/default.yaml:41
LIP_EXPAND_RATIO = 2.0  # util.py:407
BLUR_SIDE = 64  # util.py:589
FACE_BLUR_KERNEL = 51  # util.py:516
LIP_BLUR_KERNEL = 31  # util.py:519
LEVELS = 4  # R/8, R/16, R/32, R/64 (image_processor.py:71-98)
RESOLUTION_STEP = 64
# The mask dict's keys and order: models.audio_block.REGIONS, which a test checks. Not imported from there: models/
# pulls in diffusers, and importing this package must stay light.
HALLO_REGIONS = ("full", "face", "lip")

Box = tuple[int, int, int, int]  # (min_x, max_x, min_y, max_y), Hallo's order


@dataclass(frozen=True)
class HalloReference:
    """What Hallo's ``ImageProcessor.preprocess`` gives for the reference photo, as torch float32 tensors.

    ``pixels``: (3, R, R) in [-1, 1], the VAE's input. ``face_box``: (3, R, R) in [0, 1], the face locator's input.
    ``masks``: region (``HALLO_REGIONS``: full, face, lip) -> one (1, h*w) mask a UNet level, h = R/8, R/16, R/32,
    R/64, in [0, 1] (``AttentionContext.region_masks``; repeat the rows for the frames). ``face_region`` and
    ``lip_region``: the boxes ``expand_region`` returned, (min_x, max_x, min_y, max_y) in the photo's pixels."""

    pixels: torch.Tensor
    face_box: torch.Tensor
    masks: dict[str, list[torch.Tensor]]
    face_region: Box
    lip_region: Box


def landmark_box(points: np.ndarray, ids) -> tuple[float, float, float, float]:
    """(min_x, max_x, min_y, max_y) of ``points[ids]``, each rounded half to even (util.py:418-420,464-466)."""
    chosen = np.asarray(points, dtype=np.float64)[list(ids)]
    low, high = np.round(chosen.min(axis=0)), np.round(chosen.max(axis=0))
    return float(low[0]), float(high[0]), float(low[1]), float(high[1])


def expand_region(box, width: int, height: int, ratio: float) -> Box:
    """Hallo's box growth (util.py:529-564): about the floor-divided centre, ends at floor(side / 2), then shifted
    back inside by the overshoot (low edge first), in float64 as there; returns whole numbers."""
    min_x, max_x, min_y, max_y = (float(v) for v in box)
    ends = []
    for low, high, limit in ((min_x, max_x, width), (min_y, max_y, height)):
        centre = (high + low) // 2
        half = ((high - low) * ratio) // 2
        low, high = centre - half, centre + half
        if low < 0:
            high -= low
            low = 0.0
        if high > limit:
            low -= high - limit
            high = float(limit)
        ends.append((low, high))
    (min_x, max_x), (min_y, max_y) = ends
    return round(min_x), round(max_x), round(min_y), round(max_y)


def fill_box(box: Box, height: int, width: int) -> np.ndarray:
    """uint8 (height, width): 255 inside ``box``, numpy's slicing as theirs (a negative start counts from the end;
    util.py:423-425,469-471)."""
    min_x, max_x, min_y, max_y = box
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[min_y:max_y, min_x:max_x] = 255
    return mask


def blur_box(mask: np.ndarray, kernel: int) -> np.ndarray:
    """uint8 (64, 64): OpenCV's resize, Gaussian blur (sigma from the kernel) and min-max normalisation
    (util.py:589-609)."""
    small = cv2.resize(mask, (BLUR_SIDE, BLUR_SIDE))
    blurred = cv2.GaussianBlur(small, (kernel, kernel), 0)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)


def inverted_truncated(mask: np.ndarray) -> np.ndarray:
    """The full ("pose") mask from the blurred face: 1 - m/255, times 255, in float64, cast to uint8 by truncation
    (util.py:627-631)."""
    return ((1.0 - mask / 255.0) * 255).astype(np.uint8)


def saturating_subtract(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a - b`` on uint8, negative results 0 (cv2.subtract: util.py:662)."""
    return np.clip(a.astype(np.int16) - b.astype(np.int16), 0, 255).astype(np.uint8)


def region_masks_64(face_region: Box, lip_region: Box, height: int, width: int) -> dict[str, np.ndarray]:
    """The three uint8 64x64 masks (their sep_background, sep_face, sep_lip) from the two boxes (util.py:497-526)."""
    face = blur_box(fill_box(face_region, height, width), FACE_BLUR_KERNEL)
    lip = blur_box(fill_box(lip_region, height, width), LIP_BLUR_KERNEL)
    return {"full": inverted_truncated(face), "face": saturating_subtract(face, lip), "lip": lip}


def pil_bilinear(image: np.ndarray, side: int, mode: str | None = None) -> np.ndarray:
    """``image`` (uint8, HxW or HxWx3) through PIL, optionally converted to ``mode`` first, bilinear to side x side
    (torchvision's Resize on a PIL image: image_processor.py:56-98)."""
    picture = Image.fromarray(image)
    if mode is not None:
        picture = picture.convert(mode)
    return np.asarray(picture.resize((side, side), Image.Resampling.BILINEAR))


def level_sides(resolution: int) -> list[int]:
    """The mask side at each UNet level: R/8, R/16, R/32, R/64."""
    return [resolution // 8 >> level for level in range(LEVELS)]


def hallo_reference(image: np.ndarray, landmarks, resolution: int = 512,
                    face_expand_ratio: float = FACE_EXPAND_RATIO) -> HalloReference:
    """Hallo's reference pixels, face-locator input and region masks for one photo.

    ``image``: RGB uint8 HxWx3. ``landmarks``: (N, 2) mediapipe face-mesh points, N >= 468, x then y in ``image``'s
    pixels (``MediaPipeDetector``'s ``FaceDetection.landmarks`` as they are; mediapipe's normalised points times width
    and height, not rounded). ``resolution``: the square side R, a multiple of 64 (Hallo's is 512).
    ``face_expand_ratio``: their config's (1.2). Raises ``InputError`` on unusable inputs; warns
    (``PortraitTalkWarning``) where the grown face box is larger than the photo, which their code turns into a strip."""
    # deferred: torch is heavy, and importing portraittalk_core.face must not need it (as look.py)
    import torch

    check_rgb_uint8(image)
    points = _checked_landmarks(landmarks, image.shape[0], image.shape[1])
    resolution = _checked_resolution(resolution)
    if not (isinstance(face_expand_ratio, (int, float)) and math.isfinite(face_expand_ratio)
            and face_expand_ratio > 0):
        raise InputError(f"face_expand_ratio must be a positive number, got {face_expand_ratio!r}",
                         f"use Hallo's {FACE_EXPAND_RATIO}")
    height, width = image.shape[:2]
    face_region = expand_region(landmark_box(points, SILHOUETTE_IDS), width, height, float(face_expand_ratio))
    lip_region = expand_region(landmark_box(points, LIP_IDS), width, height, LIP_EXPAND_RATIO)
    for name, region in (("face", face_region), ("lip", lip_region)):
        if min(region) < 0:
            warnings.warn(PortraitTalkWarning(
                f"The {name} box Hallo draws from these landmarks, {region[1] - region[0]} x "
                f"{region[3] - region[2]} px, is larger than the photo ({width} x {height}): Hallo's code then marks "
                f"only a strip at its bottom or right edge, and so does this copy of it. Give a photo with more room "
                "around the face (pad it)"), stacklevel=2)

    pixels = torch.from_numpy(pil_bilinear(image, resolution).copy()).permute(2, 0, 1).float().div(255)
    pixels = pixels.sub(0.5).div(0.5)
    face_fill = fill_box(face_region, height, width)
    face_box = torch.from_numpy(pil_bilinear(face_fill, resolution, "RGB").copy()).permute(2, 0, 1).float().div(255)
    masks = {}
    for region, mask in region_masks_64(face_region, lip_region, height, width).items():
        masks[region] = [torch.from_numpy(pil_bilinear(mask, side).copy()).float().div(255).reshape(1, -1)
                         for side in level_sides(resolution)]
    return HalloReference(pixels=pixels.contiguous(), face_box=face_box.contiguous(),
                          masks={region: masks[region] for region in HALLO_REGIONS},
                          face_region=face_region, lip_region=lip_region)


def _checked_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution <= 0 \
            or resolution % RESOLUTION_STEP:
        raise InputError(f"Hallo's resolution must be a whole number, a positive multiple of {RESOLUTION_STEP} (its "
                         f"deepest mask level is resolution / 64), got {resolution!r}", "use 512, Hallo's own")
    return int(resolution)


def _checked_landmarks(landmarks, height: int, width: int) -> np.ndarray:
    try:
        points = np.asarray(landmarks, dtype=np.float64)
    except (TypeError, ValueError):
        points = None
    if points is None or points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < MESH_POINTS:
        described = getattr(points, "shape", type(landmarks).__name__)
        raise InputError(
            f"Hallo's masks need mediapipe face-mesh landmarks, (N, 2) with N >= {MESH_POINTS}; got {described}",
            "pass FaceDetection.landmarks from MediaPipeDetector (468 points), or mediapipe FaceLandmarker's 478 "
            "points times the photo's width and height")
    if not np.isfinite(points).all():
        raise InputError("The landmarks hold NaN or infinite values", "pass the detector's landmarks unchanged")
    used = points[list(SILHOUETTE_IDS + LIP_IDS)]
    outside = (used[:, 0] < 0) | (used[:, 0] > width) | (used[:, 1] < 0) | (used[:, 1] > height)
    if outside.any():
        first = used[outside][0]
        raise InputError(
            f"{int(outside.sum())} of the face-oval and lip landmarks lie outside the {width} x {height} photo "
            f"(e.g. x={first[0]:.1f}, y={first[1]:.1f}): they must be in the photo's own pixels, and Hallo's boxes "
            "assume the whole face is in it",
            "pass landmarks of this photo (not of a crop or a resized copy), or pad the photo so that the whole "
            "face, chin and forehead included, is inside it")
    return points
