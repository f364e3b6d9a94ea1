"""The measuring landmark regressor (landmarks.py): trained once on the train and val shards, kept in the
evaluation's folder, and reused while the shards it learnt from are the same ones (``shards_fingerprint``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..data.shards import Shard
from .landmarks import load_regressor, save_regressor, train_landmark_regressor


def measuring_regressor(folders: list[Path], out: Path, steps: int, seed: int, progress=print):
    """The landmark regressor, trained once on the shards in ``folders`` and kept in ``out``; and those shards."""
    paths = sorted(p for folder in folders for p in folder.glob("*.npz"))
    fingerprint = shards_fingerprint(paths, steps, seed)
    file = out / "landmark_regressor.safetensors"
    if file.exists():
        model = load_regressor(file, fingerprint)
        if model is not None:
            return model, paths
    progress(f"training the measuring landmark regressor on {len(paths)} train and val clips (kept in {file})")
    shards = [Shard.load(p) for p in paths]
    frames = np.concatenate([s.arrays["frames"] for s in shards])
    landmarks = np.concatenate([s.arrays["landmarks"] for s in shards])
    model = train_landmark_regressor(frames, landmarks, steps=steps, seed=seed)
    save_regressor(model, file, fingerprint)
    return model, paths


def shards_fingerprint(paths: list[Path], steps: int, seed: int) -> str:
    """What the regressor was trained on: each shard's split, name and bytes, so that a moved data folder keeps
    its regressor and a re-prepared one does not."""
    digest = hashlib.sha256(json.dumps([steps, seed]).encode())
    for path in paths:
        digest.update(f"{path.parent.name}/{path.name}".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]
