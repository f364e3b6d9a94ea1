"""The clips ``eval`` measures: the demo recipe's procedural dataset (synthesised unless ``--data`` names one),
prepared at the model's resolution and face framing; the order they are measured in, each clip's speech, and the
'detector' that gives the generated frames the clip's exact face.

Building the data calls the synthesiser (synth/dataset.py) directly: evaluation depends on synth, never the other
way, and the one spec of the dataset (data/demo_dataset.py) is shared with ``train-demo``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE
from ..data.demo_dataset import DEMO_DATASET
from ..data.landmarks68 import synthetic_detection
from ..data.prepare import prepare_folder
from ..data.shards import Shard
from ..errors import InputError
from ..synth.dataset import synth_dataset
from .settings import EvalSettings


class KnownFace:
    """A face 'detector' that returns the synthetic clip's exact landmarks (see data/landmarks68.synthetic_detection),
    so that the generated frames are aligned exactly as the ground-truth crops are."""

    name = "exact synthetic landmarks"

    def __init__(self, landmarks: np.ndarray):
        self.detection = synthetic_detection(landmarks)

    def detect(self, image: np.ndarray):
        return [self.detection]


SPLITS = ("train", "val", "test")


def eval_data(settings: EvalSettings, resolution: int, face_fraction: float) -> tuple[Path, dict[str, Path]]:
    """(synth folder, {split: shards}): the recipe's splits, synthesised if needed and prepared (aligned crops,
    exact landmarks) at the model's resolution and face framing. Train and val teach the measuring regressor;
    test (or val, for tuning) is measured."""
    out = Path(settings.out)
    data = Path(settings.data) if settings.data else out / "synth"
    if settings.data is None:
        synth_dataset(data, DEMO_DATASET.identities, DEMO_DATASET.clips_per_identity, DEMO_DATASET.size,
                      seed=DEMO_DATASET.seed, workers=settings.workers)
    for split in SPLITS:
        if not any((data / split).glob("*.mp4")):
            raise InputError(f"no {split} clips (*.mp4) in '{data / split}'",
                             "point --data at a folder made by `portraittalk synth` (or leave it out)")
    shards = {}
    for split in SPLITS:
        shards[split] = out / f"shards_{resolution}" / split
        prepare_folder(data / split, shards[split], resolution, face_fraction=face_fraction, workers=settings.workers)
    return data, shards


def spread_over_identities(clips: list[Path]) -> list[Path]:
    """Sorted clips reordered round-robin over identities (a clip's name starts with its identity's
    10-character id), so the first N clips cover as many identities as they can."""
    rank, seen = {}, {}
    for path in clips:  # already sorted: the k-th clip of an identity gets rank k
        rank[path] = seen.get(path.name[:10], 0)
        seen[path.name[:10]] = rank[path] + 1
    return sorted(clips, key=lambda p: (rank[p], p.name))


def clip_speech(shard: Shard, seconds: float | None) -> tuple[np.ndarray, int]:
    """The clip's speech (mono at audio.SAMPLE_RATE, as prepared), its first ``seconds`` if given."""
    samples = shard.arrays["audio"].astype(np.float32)
    return (samples if seconds is None else samples[:int(seconds * SAMPLE_RATE)]), SAMPLE_RATE
