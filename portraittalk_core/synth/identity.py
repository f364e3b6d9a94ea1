"""Who is talking: the attributes of one synthetic person, sampled from a seed, and their caption.

An ``Identity`` holds names, not pixels: every colour is a key of one of the palettes below, so
the caption can say exactly the words an evaluation will look for ("red curly hair", "a blue
background"), and ``render`` looks the RGB values up in the same palettes. A few continuous
proportions (eye spacing, mouth width, ...) make two people with the same named attributes still
look different.

Palette names are chosen so that no word means two things in one caption: skin tones and lip
colours avoid the hair and background colour words ("brown", "red", "pink", ...).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

# ---- palettes (name -> RGB, or name -> geometry) ------------------------------------------------

# (face width / head height, jaw squareness): squareness is the exponent of the superellipse
# that draws the lower face, 2 = an ellipse's round chin, larger = a wider, flatter jaw.
FACE_SHAPES: dict[str, tuple[float, float]] = {
    "oval": (0.70, 2.0),
    "round": (0.78, 2.3),
    "long": (0.64, 2.1),
    "square": (0.74, 3.2),
}

# Realistic skin tones, lightest to deepest.
SKIN_TONES: dict[str, tuple[int, int, int]] = {
    "pale": (250, 224, 206),
    "fair": (241, 204, 177),
    "light": (229, 184, 148),
    "medium": (204, 152, 112),
    "olive": (186, 143, 98),
    "tan": (168, 117, 80),
    "dark": (124, 82, 55),
    "deep": (88, 58, 40),
}

HAIR_STYLES: tuple[str, ...] = ("short", "long", "bob", "curly", "bun", "bald")

HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (32, 28, 27),
    "brown": (101, 66, 38),
    "blond": (224, 192, 124),
    "red": (172, 64, 30),
    "grey": (165, 165, 168),
    "blue": (50, 95, 200),
    "pink": (236, 112, 172),
}

EYE_COLOURS: dict[str, tuple[int, int, int]] = {
    "brown": (102, 62, 34),
    "blue": (70, 132, 196),
    "green": (78, 142, 84),
    "grey": (128, 140, 148),
}

GLASSES: tuple[str, ...] = ("none", "round", "square")

FRAME_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30),
    "tortoiseshell": (112, 68, 36),
    "gold": (206, 166, 72),
    "silver": (186, 190, 198),
    "red": (192, 40, 46),
}

BEARDS: tuple[str, ...] = ("none", "stubble", "full")

SHIRT_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 236),
    "black": (36, 36, 40),
    "grey": (128, 130, 136),
    "red": (196, 46, 46),
    "orange": (236, 132, 42),
    "yellow": (240, 206, 62),
    "green": (58, 150, 80),
    "blue": (50, 96, 192),
    "purple": (126, 72, 166),
    "pink": (236, 142, 178),
}

BACKGROUND_KINDS: tuple[str, ...] = ("solid", "gradient", "stripes")

BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (244, 244, 240),
    "grey": (150, 152, 156),
    "beige": (226, 212, 182),
    "yellow": (246, 222, 112),
    "orange": (246, 162, 82),
    "red": (206, 72, 66),
    "pink": (246, 178, 198),
    "purple": (156, 122, 202),
    "blue": (96, 150, 226),
    "teal": (58, 160, 160),
    "green": (120, 186, 110),
}

# Lip tints; render mixes them with the skin so that every tint looks plausible on every skin.
LIP_COLOURS: dict[str, tuple[int, int, int]] = {
    "natural": (196, 112, 100),
    "rose": (204, 92, 112),
    "coral": (236, 112, 92),
    "crimson": (176, 26, 46),
    "berry": (132, 40, 72),
    "mauve": (166, 96, 122),
}

# Eyebrow thickness in face units (1 = eye line to chin).
BROW_THICKNESS: dict[str, float] = {"thin": 0.035, "medium": 0.05, "thick": 0.07}

# Probabilities of the rarer accessories: most people wear neither glasses nor a beard.
_GLASSES_P = (0.64, 0.18, 0.18)
_BEARD_P = (0.72, 0.14, 0.14)
_BACKGROUND_P = (0.5, 0.3, 0.2)


@dataclass
class Identity:
    """One synthetic person. Categorical fields are palette names; proportions are multipliers."""

    id: str
    face_shape: str
    skin_tone: str
    hair_style: str
    hair_colour: str
    eye_colour: str
    glasses: str
    glasses_colour: str  # frame colour; meaningless when glasses == "none"
    beard: str
    shirt_colour: str
    background: str  # a BACKGROUND_KINDS entry
    background_colour: str
    background_colour2: str | None  # the second colour of a gradient or stripes
    lip_colour: str
    brow_thickness: str
    # Proportions around the average face; rounded so that they survive a JSON round trip.
    eye_spacing: float
    eye_size: float
    nose_length: float
    mouth_width: float
    lip_fullness: float
    seed: int | None = None


def sample_identity(rng: np.random.Generator, seed: int | None = None) -> Identity:
    """Draw every attribute from ``rng``; ``seed`` (if known) is recorded and hashed into the id."""

    def pick(options, p=None) -> str:
        names = list(options)
        return names[int(rng.choice(len(names), p=p))]

    def jitter(low: float, high: float) -> float:
        return round(float(rng.uniform(low, high)), 3)

    background = pick(BACKGROUND_KINDS, _BACKGROUND_P)
    background_colour = pick(BACKGROUND_COLOURS)
    background_colour2 = None
    if background != "solid":
        background_colour2 = pick([c for c in BACKGROUND_COLOURS if c != background_colour])

    attributes = dict(
        face_shape=pick(FACE_SHAPES),
        skin_tone=pick(SKIN_TONES),
        hair_style=pick(HAIR_STYLES),
        hair_colour=pick(HAIR_COLOURS),
        eye_colour=pick(EYE_COLOURS),
        glasses=pick(GLASSES, _GLASSES_P),
        glasses_colour=pick(FRAME_COLOURS),
        beard=pick(BEARDS, _BEARD_P),
        shirt_colour=pick(SHIRT_COLOURS),
        background=background,
        background_colour=background_colour,
        background_colour2=background_colour2,
        lip_colour=pick(LIP_COLOURS),
        brow_thickness=pick(BROW_THICKNESS),
        eye_spacing=jitter(0.93, 1.07),
        eye_size=jitter(0.9, 1.12),
        nose_length=jitter(0.9, 1.1),
        mouth_width=jitter(0.9, 1.1),
        lip_fullness=jitter(0.8, 1.25),
    )
    return Identity(id=_identity_hash(attributes, seed), seed=seed, **attributes)


def identity_from_seed(seed: int) -> Identity:
    """The identity of a dataset seed: the same seed always gives the same person."""
    return sample_identity(np.random.default_rng(int(seed)), seed=int(seed))


def _identity_hash(attributes: dict, seed: int | None) -> str:
    text = json.dumps({"seed": seed, **attributes}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


# ---- caption --------------------------------------------------------------------------------------

_HAIR_PHRASES = {
    "short": "short {} hair",
    "long": "long {} hair",
    "bob": "{} hair in a bob",
    "curly": "{} curly hair",
    "bun": "{} hair in a bun",
}
_BEARD_PHRASES = {"stubble": "stubble", "full": "a full beard"}


def caption(identity: Identity) -> str:
    """The identity in words, e.g. 'a person with an oval face, fair skin, red curly hair, brown
    eyes, ..., wearing a green shirt, in front of a blue background'. Every colour word is the
    palette name, verbatim."""
    i = identity
    subject = "a bald person" if i.hair_style == "bald" else "a person"
    features = [f"{_a(i.face_shape)} {i.face_shape} face", f"{i.skin_tone} skin"]
    if i.hair_style != "bald":
        features.append(_HAIR_PHRASES[i.hair_style].format(i.hair_colour))
    features += [f"{i.eye_colour} eyes", f"{i.brow_thickness} eyebrows", f"{i.lip_colour} lips"]
    if i.beard != "none":
        features.append(_BEARD_PHRASES[i.beard])
    if i.glasses != "none":
        features.append(f"{i.glasses} glasses with {i.glasses_colour} frames")
    return (f"{subject} with {', '.join(features)}, wearing {_a(i.shirt_colour)} {i.shirt_colour} shirt, "
            f"in front of {_background_phrase(i)}")


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _background_phrase(i: Identity) -> str:
    if i.background == "gradient":
        return f"{_a(i.background_colour)} {i.background_colour} to {i.background_colour2} gradient background"
    if i.background == "stripes":
        return f"{_a(i.background_colour)} {i.background_colour} and {i.background_colour2} striped background"
    return f"{_a(i.background_colour)} {i.background_colour} background"


def identity_attributes(identity: Identity) -> dict:
    """The identity as a JSON-ready dict (``asdict``)."""
    return asdict(identity)
