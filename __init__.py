"""PortraitTalk for ComfyUI: the node pack's entry point (ComfyUI imports this folder as a package).

The nodes live in ``nodes/``; everything they compute lives in ``portraittalk_core/``, which ComfyUI
finds through this folder being on ``sys.path``.
"""

import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

WEB_DIRECTORY = "./web"

# pytest imports this file too (the repository root is a package): the nodes need ComfyUI's API.
if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint  # noqa: E402
    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
