"""Still portraits of many people, for the training stages that take single frames (vae, text, base, stage 1).

The video dataset has few people (the demo recipe's 60, 48 of them for training), and a person's caption is
the same in every one of their clips. A text-to-image backbone trained on those frames sees 48 captions and
learns them by heart, not what each word means: asked for "a blue background" it cannot draw one
(docs/demo_model.md, *How the demo came to follow prompts*). A still costs one rendered frame (no speech, no
video), so the recipe adds thousands of people, each once, with their captions.

Each still is aligned as ``portraittalk prepare`` aligns a synthetic clip (its exact landmarks, the same
template and face fraction), so stills and video frames share one layout. Identity seeds come from their own
namespace (``still:<seed>:<k>``), never from the video dataset's (``identity:<seed>:<k>``), so no validation
or test person is among them; mouths, blinks and small poses are drawn at random.

File layout (``make_stills``): one ``.npz`` with ``frames`` (N, S, S, 3) uint8, ``landmarks`` (N, 68, 2)
float32 in crop pixels, ``captions`` (N,) str and ``meta`` (a json string of the settings).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import cv2
import numpy as np

from .. import face as face_io
from ..data.landmarks68 import synthetic_detection
from .dataset import _hash31
from .identity import caption, identity_from_seed
from .render import render_frame

STILLS_VERSION = 1


def still_seeds(seed: int, count: int) -> list[int]:
    return [_hash31(f"still:{seed}:{k}") for k in range(count)]


def render_still(identity_seed: int, size: int, train_size: int, face_fraction: float
                 ) -> tuple[np.ndarray, np.ndarray, str]:
    """One aligned still: (crop (train_size, train_size, 3) uint8, landmarks (68, 2) in crop pixels, caption)."""
    identity = identity_from_seed(identity_seed)
    rng = np.random.default_rng([identity_seed, 2])  # stream 2: the still's expression and pose
    image, landmarks = render_frame(
        identity, size, aperture=float(rng.uniform(0.0, 0.8)), width=float(rng.uniform(0.3, 0.8)),
        eye_open=float(1.0 if rng.random() > 0.1 else rng.uniform(0.0, 1.0)),
        pose=(float(rng.normal(0, 0.01)), float(rng.normal(0, 0.01)), float(rng.normal(0, 1.5))))
    matrix = face_io.align_face(image, synthetic_detection(landmarks[None]), train_size, face_fraction).matrix
    crop = cv2.warpAffine(image, matrix, (train_size, train_size), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REFLECT)
    return crop, (landmarks @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32), caption(identity)


def make_stills(out, count: int, size: int = 128, train_size: int = 64, face_fraction: float = 0.35,
                seed: int = 0) -> Path:
    """Render ``count`` stills into the file ``out``; a file made with the same settings is kept as it is."""
    out = Path(out)
    meta = dict(version=STILLS_VERSION, count=count, size=size, train_size=train_size,
                face_fraction=face_fraction, seed=seed)
    if out.exists():
        with np.load(out) as data:
            if json.loads(str(data["meta"])) == meta:
                return out
    stills = [render_still(s, size, train_size, face_fraction) for s in still_seeds(seed, count)]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.{uuid.uuid4().hex[:8]}.npz")
    try:
        np.savez_compressed(partial, frames=np.stack([s[0] for s in stills]),
                            landmarks=np.stack([s[1] for s in stills]),
                            captions=np.array([s[2] for s in stills]), meta=np.array(json.dumps(meta)))
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out
