"""Reference facts about the published Hallo model, taken from Hallo's own code (issue 26).

Hallo (fudan-generative-vision/hallo on GitHub) publishes one `net.pth` holding every trained part. This tool imports
Hallo's code from a checkout that you name and reports what it builds, so that PortraitTalk's conversion of those
weights can be checked against the real thing. Nothing is downloaded and no weights are needed: the networks are built
on PyTorch's meta device.

HALLO_PATH names a checkout of Hallo's repository (a git clone, or an unpacked archive of it); the tool imports its
`scripts/inference.py` and `hallo/` from there and installs nothing. Run it with a separate reference Python, never
the project's `.venv` (Hallo's code wants the older diffusers / transformers it pins):

    python3 -m venv /work/hallo_env
    /work/hallo_env/bin/pip install torch==2.13.0 diffusers==0.27.2 transformers==4.39.2 huggingface_hub==0.25.2 \\
        numpy==1.26.4 einops omegaconf safetensors
    HALLO_PATH=~/hallo /work/hallo_env/bin/python tools/hallo_reference.py keys --out tests/fixtures/hallo/net_keys.json

(The fixture was made with torch 2.13.0's CPU build; any build gives the same keys. diffusers 0.27.2 is Hallo's pin and
decides the key names inside its blocks: the tool warns under another version.)

Stand-in modules. Hallo's files import packages that building the networks never calls. The tool serves an empty
stand-in module for each of them that is not installed (an import hook, `_StubFinder`; no files are written, and a real
package that is installed wins). Calling anything from a stand-in raises. Which are needed, and by whom:

- `xformers`, `xformers.ops`: `hallo/models/motion_module.py` (imported at the top, used only when xformers attention
  is switched on). This is the only one that `import hallo.models.*` needs.
- the rest only because `Net` lives in `scripts/inference.py`, whose imports pull in Hallo's data preparation and
  video writing: `cv2`, `mediapipe`, `insightface`, `insightface.app` (`hallo/datasets/image_processor.py`,
  `hallo/utils/util.py`), `librosa`, `audio_separator`, `audio_separator.separator`
  (`hallo/datasets/audio_processor.py`), `av`, `torchvision`, `moviepy`, `moviepy.editor` (`hallo/utils/util.py`).

Subcommands:

- `keys --out FILE`: build Hallo's full-size `Net` as `scripts/inference.py` assembles it (reference UNet, denoising
  UNet with motion and audio modules, face locator, image projection, audio projection) and write every state-dict key
  with its shape (one a line), the dtype (with any exceptions), the key and parameter counts and a count per group
  (reference_unet, denoising_unet split into spatial / motion_modules / audio_modules, face_locator, imageproj,
  audioproj). `parameter_count` counts parameters; `state_dict_numel` adds the 42 persistent buffers (the motion
  modules' `pos_encoder.pe`), which `net.pth` holds too: scripts/inference.py:244-250 loads it strictly. A `.gz`
  name writes gzip'd JSON.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import re
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

# Packages that Hallo's files import at their top but that building the networks never uses (see the docstring).
STUBBED = ("xformers", "cv2", "mediapipe", "insightface", "librosa", "audio_separator", "av", "torchvision",
           "moviepy")

# Stable Diffusion 1.5's UNet, the values of its `unet/config.json` (runwayml/stable-diffusion-v1-5, diffusers
# format), which both of Hallo's UNets are made from (scripts/inference.py:196-205). Keys left out there take
# diffusers' defaults (e.g. use_linear_projection False: 1x1-conv proj_in / proj_out).
SD15_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

# What UNet3DConditionModel.from_pretrained_2d changes in that config before building (hallo/models/unet_3d.py:758-774;
# inference passes use_landmark=False, so the channel counts stay 4).
UNET_3D_BLOCKS = {
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
    "mid_block_type": "UNetMidBlock3DCrossAttn",
}

PIP = ("pip install torch==2.13.0 diffusers==0.27.2 transformers==4.39.2 huggingface_hub==0.25.2 numpy==1.26.4 "
       "einops omegaconf safetensors")


class ToolError(Exception):
    """A problem the user can fix; printed as one line."""


class _Missing:
    """What any attribute of a stand-in module is: usable in an import, raises when used."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name} is a stand-in (hallo_reference.py); the real package is not installed")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves an empty package for each name in `roots` (and any submodule of it) that nothing else can import.

    It sits last on sys.meta_path, so an installed package is always preferred."""

    def __init__(self, roots):
        self.roots = set(roots)
        self.served: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] not in self.roots:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def __getattr__(attr, _name=spec.name):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return _Missing(f"{_name}.{attr}")

        module.__getattr__ = __getattr__
        return module

    def exec_module(self, module):
        self.served.append(module.__name__)


def hallo_checkout() -> Path:
    value = os.environ.get("HALLO_PATH")
    if not value:
        raise ToolError("HALLO_PATH is not set: point it at a checkout of fudan-generative-vision/hallo, "
                        "e.g. HALLO_PATH=~/hallo python tools/hallo_reference.py ...")
    root = Path(value).expanduser().resolve()
    missing = [p for p in ("hallo/models/unet_3d.py", "scripts/inference.py", "configs/inference/default.yaml")
               if not (root / p).is_file()]
    if missing:
        raise ToolError(f"HALLO_PATH={value} is not a Hallo checkout (no {missing[0]}); point it at the folder that "
                        "holds hallo/ and scripts/ of fudan-generative-vision/hallo")
    return root


def import_hallo(root: Path):
    """Hallo's `scripts/inference.py` as a module (its `Net` and the classes it imports), with stand-ins installed.

    Returns the module and the names of the stand-ins that were served."""
    for package in ("torch", "diffusers", "omegaconf", "einops", "transformers"):
        if importlib.util.find_spec(package) is None:
            raise ToolError(f"{package} is not installed in {sys.executable}: run this tool with the reference "
                            f"environment's Python (python3 -m venv /work/hallo_env; /work/hallo_env/bin/{PIP})")
    import diffusers  # deferred: the tool must say which Python to use before importing the heavy packages

    if diffusers.__version__ != "0.27.2":
        print(f"hallo_reference.py: warning: diffusers {diffusers.__version__}, not 0.27.2 (Hallo's pin): key names "
              "or Hallo's imports may differ", file=sys.stderr)
    finder = _StubFinder(STUBBED)
    sys.meta_path.append(finder)
    sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location("hallo_scripts_inference", root / "scripts" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines Net and functions; its main runs only under __name__ == "__main__"
    return module, finder.served


def build_net(inference, root: Path, config_path: Path):
    """Hallo's Net on the meta device, assembled as scripts/inference.py:195-242 does, without loading weights."""
    import torch
    from omegaconf import OmegaConf

    config = OmegaConf.load(config_path)
    unet_kwargs = OmegaConf.to_container(config.unet_additional_kwargs)
    with torch.device("meta"):
        # scripts/inference.py:196: UNet2DConditionModel.from_pretrained(base_model_path, subfolder="unet")
        reference_unet = inference.UNet2DConditionModel.from_config(dict(SD15_UNET))
        # scripts/inference.py:198-205 -> hallo/models/unet_3d.py:757-776
        config_3d = dict(SD15_UNET, _class_name=inference.UNet3DConditionModel.__name__, **UNET_3D_BLOCKS)
        denoising_unet = inference.UNet3DConditionModel.from_config(config_3d, **unet_kwargs)
        # scripts/inference.py:206-220
        face_locator = inference.FaceLocator(conditioning_embedding_channels=320)
        image_proj = inference.ImageProjModel(cross_attention_dim=denoising_unet.config.cross_attention_dim,
                                              clip_embeddings_dim=512, clip_extra_context_tokens=4)
        audio_proj = inference.AudioProjModel(seq_len=5, blocks=12, channels=768, intermediate_dim=512,
                                              output_dim=768, context_tokens=32)
        # scripts/inference.py:236-242
        net = inference.Net(reference_unet, denoising_unet, face_locator, image_proj, audio_proj)
    return net, unet_kwargs


def group_of(key: str) -> str:
    top = key.split(".")[0]
    if top != "denoising_unet":
        return top
    if ".motion_modules." in key:
        return "denoising_unet/motion_modules"
    if ".audio_modules." in key:
        return "denoising_unet/audio_modules"
    return "denoising_unet/spatial"


def numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def hallo_commit(root: Path) -> str | None:
    """The checkout's commit where HALLO_PATH is a git work tree (None for an unpacked archive)."""
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=False)
    except OSError:
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and (root / ".git").exists() else None


def describe(net, unet_kwargs, config_path: Path, root: Path):
    import diffusers
    import torch

    state = net.state_dict()
    params = {name for name, _ in net.named_parameters()}
    keys = {k: list(v.shape) for k, v in state.items()}
    dtypes = Counter(str(v.dtype).removeprefix("torch.") for v in state.values())
    dtype = dtypes.most_common(1)[0][0]
    groups: dict[str, dict[str, int]] = {}
    for k, shape in keys.items():
        g = groups.setdefault(group_of(k), {"keys": 0, "numel": 0})
        g["keys"] += 1
        g["numel"] += numel(shape)
    buffers = sorted(k for k in keys if k not in params)
    return {
        "source": {
            "module": "Net of scripts/inference.py (fudan-generative-vision/hallo), built on the meta "
                      "device from SD 1.5's UNet config and the unet_additional_kwargs of "
                      + config_path.relative_to(root).as_posix(),
            "hallo_commit": hallo_commit(root),
            "diffusers": diffusers.__version__,
            "torch": torch.__version__.split("+")[0],
        },
        "unet_additional_kwargs": unet_kwargs,
        "key_count": len(keys),
        "parameter_count": sum(p.numel() for p in net.parameters()),
        "state_dict_numel": sum(numel(s) for s in keys.values()),
        "buffers": buffers,
        "groups": groups,
        "dtype": dtype,
        "dtype_exceptions": {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()
                             if str(v.dtype).removeprefix("torch.") != dtype},
        "keys": keys,
    }


def dump(report: dict) -> str:
    """JSON with one state-dict key a line, so that a change to the fixture reads as a diff."""
    head = {k: v for k, v in report.items() if k != "keys"}
    text = json.dumps(head, indent=1)[:-2]
    # lists of numbers on one line
    text = re.sub(r"\[[\d,\s]*\]", lambda m: "[" + ",".join(re.findall(r"\d+", m.group(0))) + "]", text)
    lines = [f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in report["keys"].items()]
    return text + ',\n "keys": {\n' + ",\n".join(lines) + "\n }\n}\n"


def cmd_keys(args) -> None:
    root = hallo_checkout()
    config_path = (root / args.config) if not Path(args.config).is_absolute() else Path(args.config)
    if not config_path.is_file():
        raise ToolError(f"no config {config_path}")
    inference, served = import_hallo(root)
    net, unet_kwargs = build_net(inference, root, config_path)
    report = describe(net, unet_kwargs, config_path, root)
    text = dump(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".gz":
        out.write_bytes(gzip.compress(text.encode(), mtime=0))
    else:
        out.write_text(text)
    print(f"{report['key_count']} keys, {report['parameter_count']:,} parameters "
          f"({report['state_dict_numel']:,} numbers in the state dict, {len(report['buffers'])} buffers), "
          f"dtype {report['dtype']}")
    print(f"stand-in modules served: {', '.join(sorted(served)) or 'none'}")
    for name, g in report["groups"].items():
        print(f"  {name:32s} {g['keys']:5d} keys {g['numel']:>15,d}")
    print(f"wrote {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("keys", help="write every state-dict key of Hallo's Net with its shape")
    keys.add_argument("--out", required=True, help="JSON file to write (.gz: gzip'd)")
    keys.add_argument("--config", default="configs/inference/default.yaml",
                      help="Hallo config whose unet_additional_kwargs to use, relative to HALLO_PATH "
                           "(default: %(default)s, as scripts/inference.py)")
    keys.set_defaults(run=cmd_keys)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ToolError as error:
        print(f"hallo_reference.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
