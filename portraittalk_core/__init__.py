"""PortraitTalk: one-shot, audio-driven talking-face video generation with text customisation.

The core package behind the ComfyUI nodes and the ``portraittalk`` command. Importing it is cheap:
the heavy modules (torch models, pipeline) load when first used.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "PortraitTalkPipeline": "pipeline", "GenerationSettings": "generation.settings", "GenerationResult": "pipeline",
    "PortraitTalkConfig": "config", "preset": "config",
    "PortraitTalkModel": "models", "save_model": "weights", "load_model": "weights",
    "PortraitTalkError": "errors", "InputError": "errors", "WeightsError": "errors", "Cancelled": "errors",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'portraittalk_core' has no attribute '{name}'")
