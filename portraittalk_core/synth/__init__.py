"""Procedural talking-face data: synthetic people saying espeak-ng sentences, deterministic from a seed.

Used to train and evaluate the small demo model on a CPU (``portraittalk synth``). Read top to
bottom: ``identity`` (who: attributes and caption), ``speech`` (what is said), ``motion`` (mouth,
blinks, head pose per frame), ``render`` (one frame and its 68 landmarks), ``dataset`` (clips,
splits, the whole folder).

Names load lazily, as in the top-level package, so that ``python -m
portraittalk_core.synth.dataset`` does not import the module twice.
"""

from __future__ import annotations

from importlib import import_module

_LAZY = {
    "Identity": "identity", "sample_identity": "identity", "identity_from_seed": "identity",
    "caption": "identity",
    "SENTENCES": "speech", "VOICES": "speech", "speak": "speech", "voice_slug": "speech",
    "mouth_curves": "motion", "frame_rms": "motion", "blinks": "motion", "head_motion": "motion",
    "render_frame": "render", "face_geometry": "render", "palette": "render",
    "ClipSpec": "dataset", "clip_id": "dataset", "plan_dataset": "dataset", "sentence_splits": "dataset",
    "identity_seeds": "dataset", "identity_splits": "dataset", "generate_clip": "dataset",
    "synth_dataset": "dataset", "main_synth": "dataset",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'portraittalk_core.synth' has no attribute '{name}'")
