"""Model folders, registered the way other packs do so that extra_model_paths.yaml entries are kept.

- ``models/portraittalk``: PortraitTalk weights (.safetensors only), plus the package's own assets folder,
  so the embedded demo model (``portraittalk_demo.safetensors``) is listed with nothing to copy;
- ``models/insightface``: the folder the InstantID and IPAdapter packs already use (``models/<name>/*.onnx``);
- ``models/audio_encoders``: ComfyUI's own folder, where wav2vec2 lives.
"""

import os

import folder_paths

from ..portraittalk_core.assets import ASSETS
from ..portraittalk_core.io.safetensors import read_metadata


def _register(name: str, extensions: set[str]) -> None:
    if name in folder_paths.folder_names_and_paths:
        paths, _ = folder_paths.folder_names_and_paths[name]
    else:
        paths = [os.path.join(folder_paths.models_dir, name)]
    folder_paths.folder_names_and_paths[name] = (paths, extensions)


_register("portraittalk", {".safetensors"})
if str(ASSETS) not in folder_paths.folder_names_and_paths["portraittalk"][0]:
    folder_paths.folder_names_and_paths["portraittalk"][0].append(str(ASSETS))
_register("insightface", set())


def portraittalk_files() -> list[str]:
    return folder_paths.get_filename_list("portraittalk")


def full_path(name: str, filename: str) -> str:
    """Where ``filename`` is among the folders for ``name``; else the path in the first, for the error."""
    return folder_paths.get_full_path(name, filename or "") or os.path.join(folder(name), filename or "")


def folder(name: str) -> str:
    """The first configured folder for ``name`` (where a missing file is reported as looked for)."""
    return folder_paths.get_folder_paths(name)[0]


def files_with_backbone() -> list[str]:
    """PortraitTalk files that carry their own small backbone (the demo model): Backbone Loader lists them."""
    found = []
    for name in portraittalk_files():
        try:
            if read_metadata(full_path("portraittalk", name)).get("backbone"):
                found.append(name)
        except Exception:  # an unreadable file is reported when it is chosen, not while listing
            continue
    return found


def audio_encoder_folders() -> list[str]:
    """Sub-folders of models/audio_encoders that look like a transformers wav2vec2 folder."""
    found = []
    for root in folder_paths.get_folder_paths("audio_encoders"):
        if os.path.isdir(root):
            found += [d for d in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, d, "config.json"))]
    return found
