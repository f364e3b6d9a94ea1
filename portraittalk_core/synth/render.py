"""Drawing one frame: a stylised front-facing portrait and its 68 landmarks, from the same geometry.

Everything about the face is first built as point lists in *face units*: origin midway between
the eyes, x to the image right, y down, 1 = eye line to chin (the unit ``face.FACE_TEMPLATE``
uses). Those points are then mapped to pixels by one affine per frame (the head pose) and filled
or stroked with OpenCV. The 68 landmarks are picked from the very same point lists and go through
the same affine, so they lie on the drawn features by construction: lip landmarks on the lip
outline, eye landmarks on the eye contour, jaw landmarks on the face outline.

Framing matches the project's portrait crops (``face.template_kps`` with ``face_fraction=0.35``):
eye line at 42% of the height, eyes to chin 35% of the height, centred horizontally.

Drawing happens at twice the output size with anti-aliased, sub-pixel polygons and is reduced
with INTER_AREA, which gives clean edges at 64-128 px. Layers, back to front: background, shirt,
ears, hair behind the head, neck, head, cheeks, nose, eyes, brows, beard, mouth, hair on top,
glasses.

The 68-point layout is iBUG's (data/landmarks68.py).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .identity import (BACKGROUND_COLOURS, BROW_THICKNESS, EYE_COLOURS, FACE_SHAPES,
                       FRAME_COLOURS, HAIR_COLOURS, LIP_COLOURS, SHIRT_COLOURS, SKIN_TONES,
                       Identity)

# ---- framing and landmark layout ------------------------------------------------------------------

FACE_FRACTION = 0.35  # eye line to chin, as a fraction of the frame height
EYE_LINE = 0.42  # eye line height, as a fraction of the frame height
HEAD_PIVOT = (0.0, 0.1)  # face units: where the head turns (between the eyes and the nose tip)

SUPERSAMPLE = 2
_SHIFT = 4  # cv2 sub-pixel bits: coordinates in 1/16 px

# Shared sample grids. Landmarks are picked at grid positions, so they are vertices of the drawn
# polygons rather than points near them.
_EYE_U = np.linspace(-1.0, 1.0, 25)  # contains +-1/3
_LIP_U = np.linspace(-1.0, 1.0, 61)  # contains +-2/3, +-0.3, +-0.9, +-0.45... in steps of 1/30
_BROW_T = np.linspace(0.0, 1.0, 21)  # contains 0, 1/4, 1/2, 3/4, 1


# ---- colours ---------------------------------------------------------------------------------------

Colour = tuple[float, float, float]


def _mix(a, b, t: float) -> Colour:
    return tuple(float(x) * (1.0 - t) + float(y) * t for x, y in zip(a, b))


def _shade(c, factor: float) -> Colour:
    return tuple(min(255.0, float(x) * factor) for x in c)


def palette(identity: Identity) -> dict[str, Colour]:
    """Every RGB colour a frame of ``identity`` uses, by role."""
    skin = SKIN_TONES[identity.skin_tone]
    hair = HAIR_COLOURS[identity.hair_colour]
    # Dyed hair (blue, pink) keeps natural dark brows; blond brows are a little darker than the hair.
    brow_base = (72, 52, 40) if identity.hair_colour in ("blue", "pink") else hair
    return {
        "skin": skin,
        "skin_shade": _shade(skin, 0.86),
        "skin_line": _shade(skin, 0.68),
        "blush": _mix(skin, (220, 90, 90), 0.5),
        "hair": hair,
        "hair_back": _shade(hair, 0.78),
        "hair_light": _mix(hair, (255, 255, 255), 0.25),
        "brows": _shade(brow_base, 0.75),
        "beard": _shade(brow_base if identity.hair_colour in ("blue", "pink") else hair, 0.85),
        # Lips mix the tint with a darker skin, so every tint looks plausible on every skin.
        "lips": _mix(_shade(skin, 0.85), LIP_COLOURS[identity.lip_colour], 0.65),
        "lip_line": _shade(_mix(_shade(skin, 0.85), LIP_COLOURS[identity.lip_colour], 0.65), 0.55),
        "mouth": (66, 20, 28),
        "teeth": (238, 234, 222),
        "tongue": (186, 78, 88),
        "eye_white": (246, 244, 238),
        "iris": EYE_COLOURS[identity.eye_colour],
        "pupil": (20, 16, 16),
        "lid": (44, 30, 28),
        "shirt": SHIRT_COLOURS[identity.shirt_colour],
        "shirt_shade": _shade(SHIRT_COLOURS[identity.shirt_colour], 0.8),
        "frame": FRAME_COLOURS[identity.glasses_colour],
        "background": BACKGROUND_COLOURS[identity.background_colour],
        "background2": BACKGROUND_COLOURS[identity.background_colour2 or identity.background_colour],
    }


# ---- geometry in face units -------------------------------------------------------------------------


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float = 0.0,
             end: float = 2 * math.pi, n: int = 48) -> np.ndarray:
    """Points on an ellipse from angle ``start`` to ``end`` (radians; y down, so pi/2 is the bottom)."""
    t = np.linspace(start, end, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _along(polyline: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Points at the given fractions of a polyline's arc length (they lie on its segments)."""
    steps = np.linalg.norm(np.diff(polyline, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)]) / steps.sum()
    return np.stack([np.interp(fractions, arc, polyline[:, k]) for k in (0, 1)], axis=1)


@dataclass
class Head:
    """The head's outline: cranium (upper half-ellipse) + jaw (superellipse), in face units."""

    half_width: float  # W: half the face width at cheek level
    cheek_y: float  # where the cranium and the jaw meet
    top_y: float  # top of the skull
    chin_y: float
    jaw: np.ndarray  # (M, 2) image-left cheek -> chin -> image-right cheek
    outline: np.ndarray  # (K, 2) closed: cranium over the top, then the jaw

    def cranium(self, grow_x: float = 0.0, grow_y: float = 0.0, start=math.pi, end=2 * math.pi, n=48):
        """An arc of the cranium ellipse, optionally grown (for hair that sits on the skull)."""
        return _ellipse(0.0, self.cheek_y, self.half_width + grow_x, self.cheek_y - self.top_y + grow_y,
                        start, end, n)


def head_shape(identity: Identity, jaw_drop: float) -> Head:
    """The head outline of ``identity``; ``jaw_drop`` lowers the chin (and the jaw with it) when
    the mouth opens, so the face lengthens as a real one does."""
    ratio, squareness = FACE_SHAPES[identity.face_shape]
    cheek_y, top_y, chin_y = 0.08, -0.95, 1.0 + jaw_drop
    w = ratio * (1.0 - top_y) / 2.0  # from the head's height with the mouth shut
    # Superellipse quadrant: x = W cos^(2/n), y = cheek + (chin - cheek) sin^(2/n).
    phi = np.linspace(0.0, math.pi / 2, 64)
    e = 2.0 / squareness
    quarter = np.stack([-w * np.cos(phi) ** e, cheek_y + (chin_y - cheek_y) * np.sin(phi) ** e], axis=1)
    jaw = np.concatenate([quarter, quarter[-2::-1] * [-1.0, 1.0]])
    cranium = _ellipse(0.0, cheek_y, w, cheek_y - top_y, 0.0, -math.pi, 64)  # right -> top -> left
    outline = np.concatenate([cranium[:-1], jaw[:-1]])
    return Head(w, cheek_y, top_y, chin_y, jaw, outline)


@dataclass
class Eye:
    contour: np.ndarray  # closed: upper lid left -> right, then lower lid right -> left
    upper: np.ndarray  # upper lid, image left -> right
    lower: np.ndarray  # lower lid, image left -> right
    centre: tuple[float, float]
    iris_radius: float


def eye_shape(cx: float, identity: Identity, openness: float) -> Eye:
    """An almond eye. Both lids move towards a closed line just below the centre, so at
    openness 0 they coincide (the eye is a single line) and the landmarks' lid gap is 0."""
    size = identity.eye_size
    half_w, up_h, lo_h = 0.125 * size, 0.085 * size, 0.055 * size
    bump = (1.0 - _EYE_U**2) ** 0.75
    x = cx + half_w * _EYE_U
    closed = 0.4 * lo_h * bump
    upper = closed + (-up_h * bump - closed) * openness
    lower = closed + (lo_h * bump - closed) * openness
    upper_pts, lower_pts = np.stack([x, upper], 1), np.stack([x, lower], 1)
    contour = np.concatenate([upper_pts, lower_pts[-2:0:-1]])
    return Eye(contour, upper_pts, lower_pts, (cx, -0.01 * size), 0.062 * size)


def _eye_landmarks(eye: Eye) -> np.ndarray:
    """Six iBUG eye points, clockwise in the image: left corner, upper lid at u = -1/3 and +1/3,
    right corner, lower lid at u = +1/3 and -1/3. For the image-left eye (36-41) the left corner
    is the outer one; for the image-right eye (42-47) it is the inner one, as iBUG numbers them."""
    return np.stack([eye.upper[0], eye.upper[8], eye.upper[16], eye.upper[-1],
                     eye.lower[16], eye.lower[8]])


@dataclass
class Mouth:
    outer: np.ndarray  # closed lip outline: upper lip left -> right, lower lip right -> left
    inner: np.ndarray  # closed inner contour (degenerate when the mouth is shut)
    upper_inner: np.ndarray  # left -> right
    lower_inner: np.ndarray
    landmarks: np.ndarray  # (20, 2): 48-67
    gap: float


def mouth_shape(identity: Identity, aperture: float, width: float) -> tuple[Mouth, float]:
    """Lips around a centre line at y0. Opening by ``gap`` moves the upper inner lip up by 30% of
    it and the lower lip (and the jaw) down by 70%; widening moves the corners out. Returns the
    mouth and the jaw drop, which the head outline needs."""
    a, w = float(np.clip(aperture, 0, 1)), float(np.clip(width, 0, 1))
    y0 = 0.68
    half = 0.24 * identity.mouth_width * (0.85 + 0.3 * w) * (1.0 - 0.12 * a)
    gap = 0.26 * a
    up_t, lo_t = 0.06 * identity.lip_fullness, 0.08 * identity.lip_fullness

    u = _LIP_U
    x = half * u
    inner_half = 0.9  # inner corners at 90% of the mouth's half-width
    ui = np.clip(u / inner_half, -1.0, 1.0)
    opening = (1.0 - ui**2) ** 0.6
    upper_inner = y0 - 0.3 * gap * opening
    lower_inner = y0 + 0.7 * gap * opening
    # The upper lip's thickness dips in the middle: the cupid's bow.
    upper_thick = up_t * (1.0 - u**2) ** 0.4 * (1.0 - 0.2 * np.exp(-((u / 0.15) ** 2)))
    lower_thick = lo_t * (1.0 - u**2) ** 0.55
    upper_outer = upper_inner - upper_thick
    lower_outer = lower_inner + lower_thick

    up_o, lo_o = np.stack([x, upper_outer], 1), np.stack([x, lower_outer], 1)
    inside = np.abs(u) <= inner_half + 1e-9
    up_i, lo_i = np.stack([x, upper_inner], 1)[inside], np.stack([x, lower_inner], 1)[inside]
    outer = np.concatenate([up_o, lo_o[-2:0:-1]])
    inner = np.concatenate([up_i, lo_i[-2:0:-1]])

    def at(curve: np.ndarray, fraction: float) -> np.ndarray:  # the grid point at u = fraction
        return curve[int(round((fraction + 1.0) * 30))]

    outer_lm = [at(up_o, f) for f in (-1, -2 / 3, -0.3, 0, 0.3, 2 / 3, 1)]  # 48-54
    outer_lm += [at(lo_o, f) for f in (2 / 3, 0.3, 0, -0.3, -2 / 3)]  # 55-59
    full_up_i, full_lo_i = np.stack([x, upper_inner], 1), np.stack([x, lower_inner], 1)
    inner_lm = [at(full_up_i, f) for f in (-0.9, -0.5, 0, 0.5, 0.9)]  # 60-64
    inner_lm += [at(full_lo_i, f) for f in (0.5, 0, -0.5)]  # 65-67
    mouth = Mouth(outer, inner, up_i, lo_i, np.array(outer_lm + inner_lm), gap)
    return mouth, 0.55 * gap


@dataclass
class Brow:
    polygon: np.ndarray
    centre_line: np.ndarray


def brow_shape(identity: Identity, side: int, raise_by: float) -> Brow:
    """A brow over the eye on ``side`` (-1 image left, +1 image right): an arched centre line,
    thick at the inner end and tapering outwards. Points run outer -> inner for the left brow
    and inner -> outer for the right one, as the iBUG numbering does."""
    eye_x = 0.30 * identity.eye_spacing
    thick = BROW_THICKNESS[identity.brow_thickness]
    t = _BROW_T if side < 0 else _BROW_T[::-1]  # t: 0 outer end, 1 inner end
    x = side * (eye_x + 0.19 - t * (eye_x + 0.19 - 0.08))
    # An arch peaking 40% of the way from the outer end, the outer tail dropping a little; the
    # inner end stays level (a brow sloping down to the nose reads as a frown).
    y = -0.21 - raise_by - 0.045 * (1.0 - ((t - 0.4) / 0.6) ** 2) + 0.03 * (1.0 - t) ** 2
    centre = np.stack([x, y], 1)
    half = 0.5 * thick * (0.55 + 0.45 * t)
    normal = np.gradient(centre, axis=0)[:, ::-1] * [1.0, -1.0]
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    polygon = np.concatenate([centre + normal * half[:, None], (centre - normal * half[:, None])[::-1]])
    return Brow(polygon, centre)


def nose_points(identity: Identity) -> np.ndarray:
    """(9, 2): bridge 27-30 down the middle to the tip, base 31-35 (wing, nostril, centre, ...)."""
    tip = 0.34 * identity.nose_length
    bridge = [(0.0, tip * k / 3.0) for k in range(4)]
    base = [(-0.095, tip + 0.035), (-0.05, tip + 0.06), (0.0, tip + 0.07), (0.05, tip + 0.06),
            (0.095, tip + 0.035)]
    return np.array(bridge + base)


@dataclass
class FaceGeometry:
    head: Head
    eyes: tuple[Eye, Eye]
    brows: tuple[Brow, Brow]
    nose: np.ndarray
    mouth: Mouth
    landmarks: np.ndarray  # (68, 2) face units


def face_geometry(identity: Identity, aperture: float, width: float, eye_open: float) -> FaceGeometry:
    """All face shapes for one frame, in face units, and the 68 landmarks picked from them."""
    mouth, jaw_drop = mouth_shape(identity, aperture, width)
    head = head_shape(identity, jaw_drop)
    eye_x = 0.30 * identity.eye_spacing
    openness = float(np.clip(eye_open, 0, 1))
    eyes = (eye_shape(-eye_x, identity, openness), eye_shape(eye_x, identity, openness))
    raise_by = 0.015 * float(np.clip(aperture, 0, 1))  # brows lift a little on open vowels
    brows = (brow_shape(identity, -1, raise_by), brow_shape(identity, +1, raise_by))
    nose = nose_points(identity)

    jaw = _along(head.jaw, np.linspace(0.0, 1.0, 17))
    brow_lm = [b.centre_line[::5] for b in brows]  # t = 0, 1/4, ... 1
    landmarks = np.concatenate([
        jaw, brow_lm[0], brow_lm[1], nose,
        _eye_landmarks(eyes[0]), _eye_landmarks(eyes[1]), mouth.landmarks,
    ])
    return FaceGeometry(head, eyes, brows, nose, mouth, landmarks)


# ---- hair ------------------------------------------------------------------------------------------------


def _hairline(head: Head, temple_y: float, top_y: float, reach: float = 0.97, p: float = 2.6,
              sweep: float = 0.0) -> np.ndarray:
    """The front edge of the hair across the forehead, image right -> left: low at the temples
    (``temple_y``), rising steeply to ``top_y`` over the forehead; ``sweep`` lowers the image-left
    side and raises the right, for a side-swept fringe."""
    x = np.linspace(reach * head.half_width, -reach * head.half_width, 41)
    r = np.abs(x) / (reach * head.half_width)
    y = temple_y + (top_y - temple_y) * (1.0 - r**p) ** (1.0 / p)
    y -= sweep * (x / (reach * head.half_width)) * (1.0 - r**4)  # zero at the temples
    return np.stack([x, y], 1)


def _cap(head: Head, grow_x: float, grow_y: float, temple_y: float, hairline: np.ndarray) -> np.ndarray:
    """Hair sitting on the skull: the grown cranium arc from the right temple over the top to the
    left temple, closed along the hairline. The arc lies outside the head outline and the hairline
    inside it, so the cap always covers the top of the head (it cannot float)."""
    b = head.cheek_y - head.top_y + grow_y
    angle = math.asin(np.clip((temple_y - head.cheek_y) / b, -1.0, 1.0))  # <= 0: above the cheeks
    arc = head.cranium(grow_x, grow_y, start=angle, end=-math.pi - angle, n=60)
    return np.concatenate([arc, hairline[::-1]])


@dataclass
class Hair:
    back: list[np.ndarray]  # polygons drawn behind the head (face units)
    front: list[np.ndarray]  # polygons drawn over the forehead
    strands: list[np.ndarray]  # highlight polylines over the front polygons


def hair_shapes(identity: Identity, head: Head) -> Hair:
    style = identity.hair_style
    if style == "bald":
        return Hair([], [], [])
    w = head.half_width
    if style == "short":
        line = _hairline(head, 0.02, -0.58, sweep=0.08)
        front = [_cap(head, 0.05, 0.09, 0.02, line)]
        return Hair([], front, _strands(head, 0.07, 3))
    if style == "bun":
        line = _hairline(head, -0.05, -0.62)
        bun = _ellipse(0.0, head.top_y + 0.02, 0.24, 0.2, n=48)  # mostly behind the cap
        return Hair([bun], [_cap(head, 0.02, 0.03, -0.05, line)], _strands(head, 0.03, 2))
    if style == "long":
        line = _hairline(head, 0.05, -0.6, p=2.2)
        # The back falls from over the skull to below the shoulders (the neck hides its middle).
        top = head.cranium(0.12, 0.09, start=0.0, end=-math.pi, n=48)
        sides = np.array([[-(w + 0.22), 0.8], [-(w + 0.26), 1.55], [-0.3, 1.7],
                          [0.3, 1.7], [w + 0.26, 1.55], [w + 0.22, 0.8]])
        back = np.concatenate([top, sides])
        return Hair([back], [_cap(head, 0.06, 0.08, 0.05, line)], _strands(head, 0.08, 4))
    if style == "bob":
        # A straight fringe above the brows and straight sides ending at the jaw.
        fringe = np.stack([np.linspace(0.9 * w, -0.9 * w, 21), np.full(21, -0.36)], 1)
        fringe[:, 1] += 0.02 * np.cos(np.linspace(0, 6 * math.pi, 21))  # a slightly uneven cut
        line = np.concatenate([[[0.99 * w, 0.0]], fringe, [[-0.99 * w, 0.0]]])
        top = head.cranium(0.14, 0.1, start=0.0, end=-math.pi, n=48)
        sides = np.array([[-(w + 0.16), 0.82], [-(w - 0.08), 0.9], [w - 0.08, 0.9], [w + 0.16, 0.82]])
        back = np.concatenate([top, sides])
        return Hair([back], [_cap(head, 0.1, 0.09, 0.0, line)], _strands(head, 0.09, 3))
    # curly: a cloud of curls around the skull, and small curls along the hairline.
    rng = np.random.default_rng(int(hashlib.sha1(identity.id.encode()).hexdigest()[:8], 16))
    ring = head.cranium(0.1, 0.06, start=0.45, end=-math.pi - 0.45, n=15)
    curls = [_ellipse(x, y, r, r, n=24) for (x, y), r in zip(ring, rng.uniform(0.16, 0.22, len(ring)))]
    back = [head.cranium(0.12, 0.08, start=0.45, end=-math.pi - 0.45, n=48)] + curls
    line = _hairline(head, 0.0, -0.58)
    front = [_cap(head, 0.06, 0.06, 0.0, line)]
    front += [_ellipse(x, y, 0.07, 0.07, n=20) for x, y in line[2:-2:4]]
    return Hair(back, front, [])


def _strands(head: Head, grow: float, count: int) -> list[np.ndarray]:
    """A few light arcs on the cap, following the skull: a hint of texture and shine."""
    arcs = []
    for k in range(count):
        start = -math.pi * (0.62 + 0.08 * k)
        arcs.append(head.cranium(grow * 0.3 - 0.04 * k, grow * 0.3 - 0.04 * k, start=start,
                                 end=start + 0.35, n=12))
    return arcs


# ---- drawing ----------------------------------------------------------------------------------------------


class _Canvas:
    """An RGB uint8 image drawn at SUPERSAMPLE x the output size, with face-unit -> pixel mappings.

    ``head`` maps face units through the pose (rotation about HEAD_PIVOT, then translation);
    ``body`` maps them without it (the shoulders stay put while the head moves).
    """

    def __init__(self, image: np.ndarray, size: int, pose):
        self.image, self.size = image, size
        self.unit = FACE_FRACTION * size  # pixels per face unit (output resolution)
        dx, dy, tilt = (float(v) for v in pose)
        angle = math.radians(tilt)
        c, s = math.cos(angle), math.sin(angle)
        rot = np.array([[c, -s], [s, c]])  # y points down, so a positive tilt turns clockwise
        pivot = np.array(HEAD_PIVOT)
        origin = np.array([0.5 * size, EYE_LINE * size])
        # head(p) = origin + shift + unit * (pivot + R (p - pivot)), as one 2x3 matrix.
        linear = self.unit * rot
        offset = origin + np.array([dx, dy]) * size + self.unit * (pivot - rot @ pivot)
        self.head_matrix = np.hstack([linear, offset[:, None]])
        self.body_matrix = np.hstack([self.unit * np.eye(2), origin[:, None]])

    def head(self, points) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        return p @ self.head_matrix[:, :2].T + self.head_matrix[:, 2]

    def body(self, points) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        return p @ self.body_matrix[:, :2].T + self.body_matrix[:, 2]

    def _fixed(self, pixels: np.ndarray) -> np.ndarray:
        # Output pixel centre x maps to supersampled x * S + (S - 1) / 2 (cv2 uses pixel centres).
        big = pixels * SUPERSAMPLE + (SUPERSAMPLE - 1) / 2.0
        return np.round(big * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)

    def thickness(self, face_units: float) -> int:
        return max(1, int(round(face_units * self.unit * SUPERSAMPLE)))

    def fill(self, pixels_list, colour, image=None) -> None:
        # One call per polygon: fillPoly given several polygons at once leaves their overlaps
        # unfilled (even-odd rule), which would punch holes where curls overlap.
        target = self.image if image is None else image
        for p in pixels_list:
            cv2.fillPoly(target, [self._fixed(p)], colour, cv2.LINE_AA, _SHIFT)

    def stroke(self, pixels_list, colour, face_units: float, closed: bool = False, image=None) -> None:
        target = self.image if image is None else image
        cv2.polylines(target, [self._fixed(p) for p in pixels_list], closed, colour,
                      self.thickness(face_units), cv2.LINE_AA, _SHIFT)

    def mask(self, pixels_list) -> np.ndarray:
        m = np.zeros(self.image.shape[:2], dtype=np.uint8)
        for p in pixels_list:
            cv2.fillPoly(m, [self._fixed(p)], 255, cv2.LINE_AA, _SHIFT)
        return m

    def composite(self, layer: np.ndarray, mask: np.ndarray, alpha: float = 1.0) -> None:
        """Blend ``layer`` into the image where ``mask`` (uint8) is set, with opacity ``alpha``."""
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            return
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        m = mask[y0:y1, x0:x1, None].astype(np.float32) * (alpha / 255.0)
        base = self.image[y0:y1, x0:x1].astype(np.float32)
        top = layer[y0:y1, x0:x1].astype(np.float32)
        self.image[y0:y1, x0:x1] = np.rint(base + (top - base) * m).astype(np.uint8)

    def fill_alpha(self, pixels_list, colour, alpha: float) -> None:
        layer = np.empty_like(self.image)
        layer[:] = np.array(colour, dtype=np.float64).round().astype(np.uint8)
        self.composite(layer, self.mask(pixels_list), alpha)


def _colour(c) -> tuple[int, int, int]:
    return tuple(int(round(v)) for v in c)


_BACKGROUND_CACHE: dict[tuple, np.ndarray] = {}


def _background(identity: Identity, pixels: int, colours: dict) -> np.ndarray:
    """The static background at ``pixels`` square: solid, vertical gradient or vertical stripes."""
    key = (identity.background, identity.background_colour, identity.background_colour2, pixels)
    cached = _BACKGROUND_CACHE.get(key)
    if cached is None:
        a = np.array(colours["background"], dtype=np.float64)
        b = np.array(colours["background2"], dtype=np.float64)
        if identity.background == "gradient":
            t = np.linspace(0.0, 1.0, pixels)[:, None, None]
            cached = np.broadcast_to(a * (1 - t) + b * t, (pixels, pixels, 3))
        elif identity.background == "stripes":
            stripe = (np.arange(pixels) * 10 // pixels) % 2  # ten stripes across
            row = np.where(stripe[:, None] == 0, a, b)
            cached = np.broadcast_to(row[None], (pixels, pixels, 3))
        else:
            cached = np.broadcast_to(a, (pixels, pixels, 3))
        cached = np.rint(cached).astype(np.uint8)
        if len(_BACKGROUND_CACHE) > 64:
            _BACKGROUND_CACHE.clear()
        _BACKGROUND_CACHE[key] = cached
    return cached.copy()


def render_frame(identity: Identity, size: int = 128, aperture: float = 0.0, width: float = 0.5,
                 eye_open: float = 1.0, pose=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """One frame of ``identity``: (image uint8 (size, size, 3) RGB, landmarks float32 (68, 2) in
    pixel coordinates, pixel centres at integers).

    ``aperture`` and ``width`` (0-1) shape the mouth, ``eye_open`` (0-1) the lids, and ``pose``
    is (dx, dy, tilt): a shift in fractions of the frame and a clockwise tilt in degrees about
    the head centre, applied to the drawing and the landmarks alike.
    """
    size = int(size)
    colours = {k: _colour(v) for k, v in palette(identity).items()}
    geo = face_geometry(identity, aperture, width, eye_open)
    canvas = _Canvas(_background(identity, size * SUPERSAMPLE, colours), size, pose)
    hair = hair_shapes(identity, geo.head)

    _draw_body(canvas, geo, colours)
    _draw_ears(canvas, geo, colours)
    if hair.back:
        canvas.fill([canvas.head(p) for p in hair.back], colours["hair_back"])
    _draw_neck(canvas, geo, colours)
    canvas.fill([canvas.head(geo.head.outline)], colours["skin"])
    canvas.stroke([canvas.head(geo.head.outline)], colours["skin_line"], 0.012, closed=True)
    _draw_cheeks(canvas, colours)
    _draw_nose(canvas, geo, colours)
    for eye in geo.eyes:
        _draw_eye(canvas, eye, colours)
    canvas.fill([canvas.head(b.polygon) for b in geo.brows], colours["brows"])
    if identity.beard != "none":
        _draw_beard(canvas, geo, colours, identity.beard)
    _draw_mouth(canvas, geo.mouth, colours)
    if hair.front:
        canvas.fill([canvas.head(p) for p in hair.front], colours["hair"])
        if hair.strands:
            canvas.stroke([canvas.head(s) for s in hair.strands], colours["hair_light"], 0.018)
    if identity.glasses != "none":
        _draw_glasses(canvas, geo, colours, identity.glasses)

    image = cv2.resize(canvas.image, (size, size), interpolation=cv2.INTER_AREA)
    return image, canvas.head(geo.landmarks).astype(np.float32)


def _draw_body(canvas: _Canvas, geo: FaceGeometry, colours) -> None:
    """Shoulders in the shirt colour: a gentle slope from the neck to beyond the frame edge."""
    w = geo.head.half_width
    shoulders = np.array([[-3.0, 3.0], [-3.0, 1.75], [-1.3, 1.46], [-w * 0.9, 1.32], [-0.3, 1.28],
                          [0.3, 1.28], [w * 0.9, 1.32], [1.3, 1.46], [3.0, 1.75], [3.0, 3.0]])
    canvas.fill([canvas.body(shoulders)], colours["shirt"])
    folds = [np.array([[-0.75, 1.42], [-0.68, 1.75]]), np.array([[0.75, 1.42], [0.68, 1.75]])]
    canvas.stroke([canvas.body(f) for f in folds], colours["shirt_shade"], 0.02)


def _draw_neck(canvas: _Canvas, geo: FaceGeometry, colours) -> None:
    """The neck's top moves with the head and its V-shaped neckline stays on the body; the shadow
    under the chin is the part of a darker band that the head does not cover."""
    top = canvas.head(np.array([[0.27, 0.55], [-0.27, 0.55]]))
    bottom = canvas.body(np.array([[-0.3, 1.3], [0.0, 1.5], [0.3, 1.3]]))
    neck = np.concatenate([top, bottom])
    canvas.fill([neck], colours["skin"])
    # The shadow moves with the head but must stay on the neck when the head tilts: clip it.
    shadow = canvas.head(np.array([[0.3, 0.6], [-0.3, 0.6], [-0.3, geo.head.chin_y + 0.12],
                                   [0.3, geo.head.chin_y + 0.12]]))
    layer = canvas.image.copy()
    canvas.fill([shadow], colours["skin_shade"], image=layer)
    canvas.composite(layer, canvas.mask([neck]))
    canvas.stroke([bottom], colours["shirt_shade"], 0.03)


def _draw_ears(canvas: _Canvas, geo: FaceGeometry, colours) -> None:
    w = geo.head.half_width
    for side in (-1, 1):
        ear = _ellipse(side * (w - 0.02), 0.14, 0.085, 0.15)
        canvas.fill([canvas.head(ear)], colours["skin"])
        canvas.stroke([canvas.head(ear)], colours["skin_line"], 0.012, closed=True)
        # The fold inside the ear: the outer half of a smaller ellipse.
        start = -math.pi / 2 if side > 0 else math.pi / 2
        fold = _ellipse(side * (w + 0.005), 0.14, 0.04, 0.09, start, start + math.pi, 16)
        canvas.stroke([canvas.head(fold)], colours["skin_line"], 0.014)


def _draw_cheeks(canvas: _Canvas, colours) -> None:
    cheeks = [_ellipse(side * 0.4, 0.42, 0.11, 0.07, n=32) for side in (-1, 1)]
    canvas.fill_alpha([canvas.head(c) for c in cheeks], colours["blush"], 0.25)


def _draw_nose(canvas: _Canvas, geo: FaceGeometry, colours) -> None:
    nose = geo.nose
    tip_y = nose[3, 1]
    # A soft shadow down one side of the bridge and around the tip gives the nose some volume.
    side = np.array([[-0.05, 0.04], [-0.07, tip_y - 0.05], [-0.095, tip_y + 0.035],
                     [-0.06, tip_y + 0.01], [-0.045, tip_y - 0.06], [-0.035, 0.06]])
    canvas.fill_alpha([canvas.head(side)], colours["skin_line"], 0.35)
    canvas.stroke([canvas.head(nose[4:9])], colours["skin_line"], 0.02)
    nostrils = [_ellipse(s * 0.045, tip_y + 0.045, 0.024, 0.013, n=16) for s in (-1, 1)]
    canvas.fill([canvas.head(n) for n in nostrils], _colour(_shade(colours["skin_line"], 0.7)))


def _draw_eye(canvas: _Canvas, eye: Eye, colours) -> None:
    """Eye white, then iris, pupil and a catch-light clipped to the eye's opening, then the lids."""
    contour = canvas.head(eye.contour)
    opening = canvas.mask([contour])
    if opening.any():
        layer = canvas.image.copy()
        canvas.fill([contour], colours["eye_white"], image=layer)
        cx, cy = eye.centre
        r = eye.iris_radius
        canvas.fill([canvas.head(_ellipse(cx, cy, r, r, n=32))], colours["iris"], image=layer)
        canvas.fill([canvas.head(_ellipse(cx, cy, 0.45 * r, 0.45 * r, n=24))], colours["pupil"], image=layer)
        glint = _ellipse(cx + 0.35 * r, cy - 0.35 * r, 0.22 * r, 0.22 * r, n=12)
        canvas.fill([canvas.head(glint)], (255, 255, 255), image=layer)
        canvas.composite(layer, opening)
    canvas.stroke([canvas.head(eye.upper)], colours["lid"], 0.022)
    canvas.stroke([canvas.head(eye.lower)], colours["skin_line"], 0.01)


def _draw_beard(canvas: _Canvas, geo: FaceGeometry, colours, beard: str) -> None:
    """The lower face below a line from the sideburns round the cheeks to under the nose; the
    lips are drawn over it. Stubble is the same area, mostly transparent."""
    head = geo.head
    w = head.half_width
    tip_y = geo.nose[3, 1]
    upper = np.array([[w * 0.98, head.cheek_y + 0.06], [0.5, 0.48], [0.3, tip_y + 0.15],
                      [0.12, tip_y + 0.1], [0.0, tip_y + 0.11], [-0.12, tip_y + 0.1],
                      [-0.3, tip_y + 0.15], [-0.5, 0.48], [-w * 0.98, head.cheek_y + 0.06]])
    jaw = head.jaw[head.jaw[:, 1] >= head.cheek_y + 0.06]
    area = canvas.head(np.concatenate([jaw, upper]))
    if beard == "full":
        canvas.fill([area], colours["beard"])
    else:
        canvas.fill_alpha([area], colours["beard"], 0.3)


def _draw_mouth(canvas: _Canvas, mouth: Mouth, colours) -> None:
    """Lips; when open, a dark mouth with the upper teeth, a hint of lower teeth and the tongue."""
    canvas.fill([canvas.head(mouth.outer)], colours["lips"])
    inner = canvas.head(mouth.inner)
    if mouth.gap > 0.01:
        layer = canvas.image.copy()
        canvas.fill([inner], colours["mouth"], image=layer)
        x = mouth.upper_inner[:, 0]
        half = float(x.max())
        tongue = _ellipse(0.0, mouth.lower_inner[:, 1].max() + 0.01, 0.6 * half, 0.07, n=32)
        canvas.fill([canvas.head(tongue)], colours["tongue"], image=layer)
        keep = np.abs(x) <= 0.75 * half
        upper_teeth = np.concatenate([mouth.upper_inner[keep], (mouth.upper_inner[keep] + [0.0, 0.055])[::-1]])
        canvas.fill([canvas.head(upper_teeth)], colours["teeth"], image=layer)
        keep = np.abs(x) <= 0.55 * half
        lower_teeth = np.concatenate([mouth.lower_inner[keep] - [0.0, 0.03], mouth.lower_inner[keep][::-1]])
        canvas.fill([canvas.head(lower_teeth)], colours["teeth"], image=layer)
        canvas.composite(layer, canvas.mask([inner]))
    canvas.stroke([inner], colours["lip_line"], 0.011, closed=True)


def _draw_glasses(canvas: _Canvas, geo: FaceGeometry, colours, kind: str) -> None:
    """Frames around both eyes, a bridge and the arms to the face edge; faintly tinted lenses."""
    w = geo.head.half_width
    rims = []
    for eye in geo.eyes:
        cx = eye.centre[0]
        if kind == "round":
            rims.append(_ellipse(cx, 0.0, 0.19, 0.19, n=48))
        else:
            rims.append(_rounded_rect(cx, 0.0, 0.2, 0.14, 0.05))
    reach = float(np.max(rims[1][:, 0]))
    inner_edge = float(np.min(rims[1][:, 0]))
    canvas.fill_alpha([canvas.head(r) for r in rims], (235, 240, 248), 0.15)
    bridge = np.array([[-inner_edge, -0.03], [-0.04, -0.06], [0.04, -0.06], [inner_edge, -0.03]])
    arms = [np.array([[-reach, -0.02], [-w, -0.03]]), np.array([[reach, -0.02], [w, -0.03]])]
    canvas.stroke([canvas.head(p) for p in [bridge, *arms]], colours["frame"], 0.025)
    canvas.stroke([canvas.head(r) for r in rims], colours["frame"], 0.03, closed=True)


def _rounded_rect(cx: float, cy: float, hx: float, hy: float, r: float) -> np.ndarray:
    corners = [(hx - r, hy - r, 0.0), (-(hx - r), hy - r, math.pi / 2), (-(hx - r), -(hy - r), math.pi),
               (hx - r, -(hy - r), 1.5 * math.pi)]
    arcs = [_ellipse(cx + x, cy + y, r, r, a, a + math.pi / 2, 8) for x, y, a in corners]
    return np.concatenate(arcs)
