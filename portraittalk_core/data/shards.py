"""Training shards: one compact ``<name>.npz`` per prepared video (data/prepare.py writes them).

A shard holds, at the training resolution:
- ``frames`` (F, S, S, 3) uint8: the face track, aligned once per video with a similarity transform from
  the median of the detected keypoints, so head motion inside the clip is kept (the model learns it);
- ``landmarks`` (F, N, 2) float32 in crop pixels, and ``head_masks`` (S, S) uint8 (the head placement mask
  of the whole track: where the head goes over the clip);
- ``audio`` (S_audio,) float16: the speech at 16 kHz mono, and ``audio_features`` (T, L, C) float16 with
  ``feature_rate`` from the model's audio front end;
- ``embedding`` (512,) when the face detector gives ArcFace embeddings;
- ``meta``: JSON with fps, frame count, landmark regions, caption, source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Shard:
    path: Path
    meta: dict
    arrays: dict[str, np.ndarray]

    @classmethod
    def load(cls, path: Path) -> "Shard":
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files if k != "meta"}
            meta = json.loads(str(data["meta"]))
        return cls(path, meta, arrays)


def write_shard(out: Path, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Writes the shard ``out`` whole or not at all: to a partial file first, renamed when complete, so an
    interrupted job never leaves a shard that looks finished."""
    partial = out.with_suffix(".partial.npz")
    np.savez_compressed(partial, meta=np.array(json.dumps(meta)), **arrays)
    partial.replace(out)
    return out
