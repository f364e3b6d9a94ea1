"""PortraitTalk for ComfyUI: the node pack's entry point (ComfyUI imports this folder as a package).

The nodes live in ``nodes/``; everything they compute lives in ``portraittalk_core/``. Both are imported
relatively, as subpackages of this one: nothing is put on ``sys.path``, so the pack's ``nodes`` package can
never shadow ComfyUI's own ``nodes`` module (nor the other way round), and ``portraittalk_core`` needs no
``pip install`` (ComfyUI-Manager installs requirements.txt only).
"""

import importlib.util

WEB_DIRECTORY = "./web"

# pytest imports this file too (the repository root is a package): the nodes need ComfyUI's API.
if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint
    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
