"""The demo recipe's procedural dataset: how many people, how many clips each, at what size, from which seed.

One spec for the two commands that make it: ``train-demo`` trains on it (training/recipe.py) and ``eval``, given no
``--data``, synthesises the same dataset and measures on its held-out split (evaluation/dataset.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SynthSpec:
    identities: int
    clips_per_identity: int
    size: int      # rendered frame side in pixels
    seed: int


DEMO_DATASET = SynthSpec(identities=60, clips_per_identity=6, size=128, seed=0)
