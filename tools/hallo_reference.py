"""Reference facts about the published Hallo model, taken from Hallo's own code (issue 26).

Hallo (fudan-generative-vision/hallo on GitHub) publishes one `net.pth` holding every trained part. This tool imports
Hallo's code from a checkout that you name and reports what it builds, so that PortraitTalk's conversion of those
weights can be checked against the real thing. Nothing is downloaded and no weights are needed: `keys` builds the
full-size networks on PyTorch's meta device, `fixtures` builds small modules on the CPU with seeded random weights.

HALLO_PATH names a checkout of Hallo's repository (a git clone, or an unpacked archive of it); the tool imports its
`scripts/inference.py` and `hallo/` from there and installs nothing. Run it with a separate reference Python, never
the project's `.venv` (Hallo's code wants the older diffusers / transformers it pins):

    python3 -m venv /work/hallo_env
    /work/hallo_env/bin/pip install torch==2.13.0 diffusers==0.27.2 transformers==4.39.2 huggingface_hub==0.25.2 \\
        numpy==1.26.4 einops omegaconf safetensors
    /work/hallo_env/bin/pip install opencv-python-headless==4.9.0.80 pillow torchvision==0.28.0   # for `masks` only
    HALLO_PATH=~/hallo /work/hallo_env/bin/python tools/hallo_reference.py keys --out tests/fixtures/hallo/net_keys.json

(The fixture was made with torch 2.13.0's CPU build; any build gives the same keys. diffusers 0.27.2 is Hallo's pin and
decides the key names inside its blocks: the tool warns under another version.)

`masks` runs Hallo's image preparation, whose numbers come from OpenCV, Pillow and torchvision's transforms: those three
must be the real packages (it says so and stops otherwise); `keys`, `fixtures` and `calls` run with or without them and
write the same bytes. opencv-python-headless 4.9.0.80 is Hallo's pin (their requirements.txt); the fixture was made with
it, Pillow 13.0.0 and torchvision 0.28.0 (the release made for torch 2.13; Hallo pins 0.17.2 for its torch 2.2.2, and in
both Resize of a PIL image calls PIL's own resize, ToTensor and Normalize the same float32 arithmetic). PyPI's
torchvision wheel is built against the CUDA torch, so beside the CPU build its C operators cannot load and `import
torchvision` fails in `torchvision._meta_registrations` (fake kernels of those operators); the tool then serves an empty
module under that one name before Hallo's code imports torchvision (`_torchvision_without_c_ops`). Nothing that Hallo's
code calls uses those operators. Pillow 10.3.0 (Hallo's pin) and OpenCV 5.1.0 give the same masks.safetensors, byte for
byte (checked with each on PYTHONPATH).

Stand-in modules. Hallo's files import packages that building the networks never calls. The tool serves an empty
stand-in module for each of them that is not installed (an import hook, `_StubFinder`; no files are written, and a real
package that is installed wins). Calling anything from a stand-in raises. Which are needed, and by whom:

- `xformers`, `xformers.ops`: `hallo/models/motion_module.py` (imported at the top, used only when xformers attention
  is switched on). This is the only one that `import hallo.models.*` needs.
- the rest only because `Net` lives in `scripts/inference.py`, whose imports pull in Hallo's data preparation and
  video writing: `cv2`, `mediapipe`, `insightface`, `insightface.app` (`hallo/datasets/image_processor.py`,
  `hallo/utils/util.py`), `librosa`, `audio_separator`, `audio_separator.separator`
  (`hallo/datasets/audio_processor.py`), `av`, `torchvision`, `moviepy`, `moviepy.editor` (`hallo/utils/util.py`).
  `masks` needs the real `cv2` and `torchvision` (and Pillow); `mediapipe` and `insightface` stay stand-ins there too,
  because `masks` hands their code the landmarks and a face list itself (see below).
- `pydub`, `icecream`: Hallo2's `scripts/inference_long.py` only (see below).

Hallo2. HALLO_PATH may also name a checkout of fudan-generative-vision/hallo2, whose `hallo/` package is Hallo's with
`hallo/datasets/audio_processor.py` and `hallo/utils/util.py` changed (docs/hallo2.md): its `Net` lives in
`scripts/inference_long.py` and its inference config is `configs/inference/long.yaml`, which the tool then reads in
place of `scripts/inference.py` and `configs/inference/default.yaml` (`LAYOUTS`). Run on Hallo's checkout, every
subcommand writes the same bytes as before Hallo2's layout was known.

Subcommands:

- `keys --out FILE`: build Hallo's full-size `Net` as `scripts/inference.py` assembles it (reference UNet, denoising
  UNet with motion and audio modules, face locator, image projection, audio projection) and write every state-dict key
  with its shape (one a line), the dtype (with any exceptions), the key and parameter counts and a count per group
  (reference_unet, denoising_unet split into spatial / motion_modules / audio_modules, face_locator, imageproj,
  audioproj). `parameter_count` counts parameters; `state_dict_numel` adds the 42 persistent buffers (the motion
  modules' `pos_encoder.pe`), which `net.pth` holds too: scripts/inference.py:244-250 loads it strictly. A `.gz`
  name writes gzip'd JSON. `--digest-out FILE` also writes a small summary: the source, the counts, the groups and
  `key_digest` of the keys (tests/fixtures/hallo/net2_keys_digest.json is Hallo2's, checked against net_keys.json by
  tests/test_convert_hallo.py).
- `fixtures [--out tests/fixtures/hallo] [--seed 0]`: golden fixtures for PortraitTalk's tests. Each of Hallo's small
  modules is built from their class at a tiny size, its parameters drawn from a seeded generator (their
  zero-initialised layers included, so every path reaches the output), and called in fp32 with one thread exactly as
  their inference path calls it (the call, with file and line, is in the fixture's JSON). One `NAME.safetensors` per
  fixture: `in.*` the inputs, `out.*` the outputs, `state.*` the module's state dict under THEIR key names (load it
  with strict=True); metadata `hallo_commit`. Beside it `NAME.json`: the constructor arguments, the full-size
  equivalents and where their Net holds them, the call, the tensor shapes, the Hallo commit, torch and diffusers
  versions, and the quirks a re-implementation must mirror. Fixtures: image_proj, audio_proj, face_locator,
  audio_block, motion_module (without and with the motion-frame prefix), audio_windows, audio_interpolation. Some
  chain as in their pipeline: audio_windows' output feeds audio_proj, whose [zeros; tokens] feeds audio_block. The
  tool rebuilds each module from the saved state alone and checks that it gives the same bits (train and eval mode),
  and the files are byte-identical from run to run.
- `calls [--out tests/fixtures/hallo] [--seed 0]`: whole-model fixtures. One tiny Net (4 levels of 32 channels,
  layers_per_block 1, cross_attention_dim 32, audio_attention_dim 32, the rest of configs/inference/default.yaml's
  unet_additional_kwargs; seeded random weights rounded to float16 values, zero inits made non-zero) is frozen and set
  up as scripts/inference.py:195-262 does (gradient checkpointing on in both UNets, reference UNet in eval mode,
  denoiser in TRAINING mode), and Hallo's own FaceAnimatePipeline.__call__ runs one 4-frame clip with 2 motion frames
  at 8x8 latents, guidance 3.5, their DDIM scheduler (scripts/inference.py:185-192), stopped from its callback after
  2 of 40 steps. The VAE is a stand-in that returns fixed latent means (the Net never sees pixels). Hooks record:
  `reference_bank` (the reference pass at t=0 and each block's norm1 bank, with the reader/writer pairing),
  `unet_call` (the first guided denoiser call: every input, the float16 banks, the raw and guided prediction, and how
  far the output moves when each quirk is dropped), `two_steps` (the pipeline's inputs, the per-clip conditioning,
  each step's predictions and latents, the scheduler's timesteps, betas and alphas_cumprod). `tiny_net.pth` is that
  Net's state dict as torch.save of a plain dict (their key names; loads with torch.load(weights_only=True)),
  `tiny_net.json` its keys and shapes. The tool then rebuilds the Net from tiny_net.pth alone and checks that the
  whole run gives the same bits.
- `masks [--out tests/fixtures/hallo]`: what Hallo's preparation of the reference photo gives, from their own
  ImageProcessor.preprocess (hallo/datasets/image_processor.py:107-182) and the hallo/utils/util.py functions it calls
  (get_mask, get_lip_mask, get_face_mask, expand_region, get_blur_mask / blur_mask, get_background_mask,
  get_sep_face_mask), writing and reading their cache PNGs in a temporary folder as they do. The two things that need
  models are handed in: util.get_landmark (mediapipe FaceLandmarker) returns the case's synthetic landmarks in pixels,
  as their compute_face_landmarks gives them (util.py:332-379), and insightface's FaceAnalysis returns one face with a
  zero embedding. One deterministic 96x80 (width x height) RGB photo; cases (478 landmarks each, their 36 silhouette and
  20 lip ids placed on ellipses with the box-deciding extremes on .5 so that np.round's half-to-even shows):
  `inside` (both boxes inside the photo) at resolution 64 and `inside_128` at 128, `shifted` (expand_region moves the
  face box back inside, in x and y), `oversized` (the face box grown by 1.2 is taller than the photo: after the shift
  its top is negative and the fill's slice wraps to the bottom rows). `masks.safetensors`: `in.image` (uint8 HxWx3),
  `in.<case>.landmarks` (float32, exact: every value a multiple of 1/4; `inside_128` uses `inside`'s),
  `out.inside.pixels` (3, R, R) in [-1, 1], `out.inside.face_box` (3, R, R) in [0, 1], and for every case
  `out.<case>.<full|face|lip>_mask.<level>` (1, h*w), h = R/8 >> level. Pixels and face box of one case only, to keep
  the file small: the other cases at 64 give the same pixels (the tool checks it), and the face box is the fill their
  masks start from. `masks.json`: each case's resolution, the boxes expand_region was given and returned, the
  versions of OpenCV, Pillow, torchvision and numpy, and the quirks with file and line. Byte-identical from run to run.
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
import zlib
from collections import Counter
from pathlib import Path

# Packages that Hallo's files import at their top but that building the networks never uses (see the docstring).
STUBBED = ("xformers", "cv2", "mediapipe", "insightface", "librosa", "audio_separator", "av", "torchvision",
           "moviepy", "pydub", "icecream")

# The checkouts the tool reads: (repository, the script holding Net, the inference config it loads by default).
# Hallo2 keeps Hallo's hallo/ package and Net class; only the script and config names differ (docs/hallo2.md).
LAYOUTS = (("fudan-generative-vision/hallo", "scripts/inference.py", "configs/inference/default.yaml"),
           ("fudan-generative-vision/hallo2", "scripts/inference_long.py", "configs/inference/long.yaml"))

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
    if checkout_layout(root) is None:  # neither Hallo's files nor Hallo2's (LAYOUTS): name Hallo's first missing one
        missing = [p for p in ("hallo/models/unet_3d.py", "scripts/inference.py", "configs/inference/default.yaml")
                   if not (root / p).is_file()]
        raise ToolError(f"HALLO_PATH={value} is not a Hallo checkout (no {missing[0]}); point it at the folder that "
                        "holds hallo/ and scripts/ of fudan-generative-vision/hallo (or hallo2)")
    return root


def checkout_layout(root: Path):
    """The entry of LAYOUTS whose files `root` holds (Hallo's first), or None."""
    for layout in LAYOUTS:
        if all((root / p).is_file() for p in ("hallo/models/unet_3d.py",) + layout[1:]):
            return layout
    return None


def default_config(root: Path) -> Path:
    """The inference config of the checkout's layout: configs/inference/default.yaml for Hallo, long.yaml for Hallo2."""
    return root / checkout_layout(root)[2]


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
    if _torchvision_without_c_ops():
        finder.served.append("torchvision._meta_registrations")
    sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location("hallo_scripts_inference", root / checkout_layout(root)[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines Net and functions; its main runs only under __name__ == "__main__"
    return module, finder.served


def _torchvision_without_c_ops() -> bool:
    """Where torchvision is installed but its C operators cannot load beside this torch (PyPI's CUDA-built wheel next
    to torch's CPU build), serve an empty `torchvision._meta_registrations`: that module registers fake kernels for
    those operators at import and raises when they are missing. Its transforms, all that Hallo's code uses, never
    call them. True when the empty module was served."""
    import glob

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or "torchvision" in sys.modules or not spec.submodule_search_locations:
        return False
    libraries = glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "_C.*"))
    try:
        for library in libraries:
            torch.ops.load_library(library)
        if libraries:
            return False
    except OSError:
        pass
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    return True


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
            "module": "Net of {1} ({0}), built on the meta ".format(*checkout_layout(root)) +
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


def key_digest(keys: dict) -> str:
    """sha256 of the sorted lines `<key>:<d0>,<d1>,...` (one per state-dict key, each ending in a newline, UTF-8)."""
    import hashlib

    lines = "".join(f"{key}:{','.join(str(d) for d in shape)}\n" for key, shape in sorted(keys.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def digest_report(report: dict) -> dict:
    """What `keys --digest-out` writes: the key list's summary and its digest, without the list itself."""
    return {"source": report["source"], "unet_additional_kwargs": report["unet_additional_kwargs"],
            "key_count": report["key_count"], "parameter_count": report["parameter_count"],
            "state_dict_numel": report["state_dict_numel"], "buffer_count": len(report["buffers"]),
            "groups": report["groups"], "dtype": report["dtype"],
            "digest": {"sha256": key_digest(report["keys"]),
                       "of": "the sorted lines '<key>:<d0>,<d1>,...', one per state-dict key, each ending in a "
                             "newline, UTF-8 (tools/hallo_reference.py key_digest)"}}


def cmd_keys(args) -> None:
    root = hallo_checkout()
    if args.config is None:
        config_path = default_config(root)
    else:
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
    if args.digest_out:
        digest_out = Path(args.digest_out)
        digest_out.parent.mkdir(parents=True, exist_ok=True)
        digest_out.write_text(json.dumps(digest_report(report), indent=1) + "\n")
    print(f"{report['key_count']} keys, {report['parameter_count']:,} parameters "
          f"({report['state_dict_numel']:,} numbers in the state dict, {len(report['buffers'])} buffers), "
          f"dtype {report['dtype']}")
    print(f"stand-in modules served: {', '.join(sorted(served)) or 'none'}")
    for name, g in report["groups"].items():
        print(f"  {name:32s} {g['keys']:5d} keys {g['numel']:>15,d}")
    digest = f" and {args.digest_out} (sha256 {key_digest(report['keys'])})" if args.digest_out else ""
    print(f"wrote {out}{digest}")


# --- fixtures ------------------------------------------------------------------------------------------------------
#
# Golden fixtures for issue 26: Hallo's own small modules, built from their classes at tiny sizes with seeded random
# weights, called as their inference path calls them. Sizes shared by the fixtures, so that one fixture's output can be
# the next one's input as in their pipeline (windows -> audio projection -> audio module):
FIXTURE_FRAMES = 4  # frames of a clip (their n_sample_frames, 16: configs/inference/default.yaml:8)
FIXTURE_MOTION_FRAMES = 2  # their n_motion_frames (default.yaml:7)
FIXTURE_HEADS = 8  # SD 1.5's attention_head_dim, which their blocks use as the number of heads
FIXTURE_LATENT = 8  # latent side at level 0; level l has side FIXTURE_LATENT >> l (4 levels: unet_3d.py:250,279,338)
FIXTURE_LEVEL = 1  # the level (block depth) of the audio module and the motion module below: side 4


def _generator(seed: int, name: str):
    """One torch.Generator per fixture, from the seed and the fixture's name: adding a fixture changes no other."""
    import torch

    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


def _randomise(module, generator) -> None:
    """Every parameter drawn again, in sorted name order: weights N(0, 1/fan_in), biases N(0, 0.2^2), norm scales
    1 + N(0, 0.1^2). Their zero-initialised layers (zero_module: FaceLocator.conv_out, the motion module's proj_out,
    the audio block's zero_conv_*) become non-zero, so every path reaches the output. Buffers (the motion module's
    sinusoidal `pe`) keep the values their constructor computes."""
    import torch

    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            if name.endswith("bias"):
                p.copy_(0.2 * noise)
            elif p.ndim == 1:
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)


def _randn(generator, *shape):
    import torch

    return torch.randn(shape, generator=generator, dtype=torch.float32)


def _uniform(generator, *shape):
    import torch

    return torch.rand(shape, generator=generator, dtype=torch.float32)


def _level_masks(generator, frames: int):
    """One region mask per level as their pipeline hands them to the UNet: a (1, side*side) mask in [0, 1] per level
    (image_processor.py:156-180 makes them /255 and flattened), repeated over the clip's frames (inference.py:271-282),
    then the whole (frames, side*side) block twice, [uncond; cond] (face_animate.py:345-359): (2*frames, side*side),
    every row of a level equal."""
    import torch

    masks = []
    for level in range(4):
        side = FIXTURE_LATENT >> level
        one = _uniform(generator, 1, side * side)
        per_clip = one.repeat(frames, 1)
        masks.append(torch.cat([per_clip] * 2))
    return masks


class _Fixture:
    """What one fixture file holds, and how to call the module again from its saved state (the self-check)."""

    def __init__(self, name, *, module=None, factory=None, call=None, inputs, outputs, info):
        self.name, self.module, self.factory, self.call = name, module, factory, call
        self.inputs, self.outputs, self.info = inputs, outputs, info


def _fixture_image_proj(inference, seed):
    import torch

    g = _generator(seed, "image_proj")
    kwargs = {"cross_attention_dim": 32, "clip_embeddings_dim": 16, "clip_extra_context_tokens": 4}
    module = inference.ImageProjModel(**kwargs)
    _randomise(module, g)
    # The raw insightface embedding (not normalised: image_processor.py:133-138), reshaped to (1, dim) by
    # scripts/inference.py:268. Their pipeline projects it and a zeros_like of it in two calls and concatenates
    # [uncond, cond] (face_animate.py:294-298).
    face_emb = _randn(g, 1, kwargs["clip_embeddings_dim"])
    image_embeds = torch.cat([torch.zeros_like(face_emb), face_emb])

    def call(m, ins):
        emb = ins["image_embeds"][1:]
        return {"tokens": torch.cat([m(torch.zeros_like(emb)), m(emb)])}

    outputs = call(module, {"image_embeds": image_embeds})
    batched = module(image_embeds)
    info = {
        "module": "hallo.models.image_proj.ImageProjModel",
        "constructor": kwargs,
        "full_size": {"cross_attention_dim": 768, "clip_embeddings_dim": 512, "clip_extra_context_tokens": 4,
                      "net_prefix": "imageproj.", "built_at": "scripts/inference.py:207-211"},
        "call": "face_animate.py:294-298: encoder_hidden_states = image_proj(face_emb); uncond = "
                "image_proj(zeros_like(face_emb)); cat([uncond, cond], dim=0). The fixture's out.tokens is made that "
                "way, from row 1 of in.image_embeds; row 0 of in.image_embeds is the zeros their uncond projects.",
        "batched_call_max_abs_diff": float((batched - outputs["tokens"]).abs().max()),
        "notes": ["proj: Linear(clip_embeddings_dim -> tokens*cross_attention_dim), reshape (-1, tokens, dim) "
                  "row-major, then LayerNorm(dim, eps 1e-5) per token (image_proj.py:51-54,71-75)",
                  "the uncond tokens are LayerNorm(reshape(proj.bias)), not zero"],
    }
    return _Fixture("image_proj", module=module, factory=lambda: inference.ImageProjModel(**kwargs), call=call,
                    inputs={"image_embeds": image_embeds}, outputs=outputs, info=info)


def _fixture_audio_windows(inference, seed):
    g = _generator(seed, "audio_windows")
    frames, layers, channels = 2 * FIXTURE_FRAMES, 3, 16
    # audio_processor.py:124-125: stack(hidden_states[1:], dim=1).squeeze(0), then "b s d -> s b d":
    # (video frames of the whole padded clip, wav2vec2 layers, channels).
    audio_emb = _randn(g, frames, layers, channels)
    windows = inference.process_audio_emb(audio_emb)
    info = {
        "module": "scripts/inference.py:95-114 process_audio_emb (a function, no state)",
        "constructor": {},
        "full_size": {"input": "(n_frames, 12, 768), n_frames a multiple of 16 (audio_processor.py:113-115)",
                      "output": "(n_frames, 5, 12, 768)"},
        "call": "scripts/inference.py:264, once over the whole padded audio, before it is cut into clips "
                "(:314-316 takes rows t*16:(t+1)*16 of the windows)",
        "notes": ["out.windows[i, j] = in.audio_emb[clamp(i + j - 2, 0, n_frames - 1)] for j in 0..4 (offsets "
                  "-2..+2, clamped at both ends of the WHOLE padded audio, not at clip boundaries)",
                  "a clip's first and last windows therefore reach into the neighbouring clips' frames",
                  "the padded tail frames (zero samples, audio_processor.py:113-115) are real wav2vec2 outputs "
                  "and are windowed like any other frame"],
    }
    return _Fixture("audio_windows", inputs={"audio_emb": audio_emb}, outputs={"windows": windows}, info=info)


def _fixture_audio_interpolation(seed):
    import importlib

    g = _generator(seed, "audio_interpolation")
    wav2vec = importlib.import_module("hallo.models.wav2vec")
    # wav2vec2's CNN gives 49-50 feature frames a second at 16 kHz; Hallo resamples them to 25 fps (seq_len frames).
    features = _randn(g, 1, 2 * FIXTURE_FRAMES * 2 - 1, 8)
    seq_len = 2 * FIXTURE_FRAMES
    out = wav2vec.linear_interpolation(features, seq_len=seq_len)
    info = {
        "module": "hallo/models/wav2vec.py:196-210 linear_interpolation (a function, no state)",
        "constructor": {"seq_len": seq_len},
        "full_size": {"input": "(1, T, 512): the CNN feature encoder's output, transposed to (batch, time, channels)",
                      "output": "(1, seq_len, 512), seq_len = the padded video frame count "
                                "(audio_processor.py:108-115)"},
        "call": "hallo/models/wav2vec.py:75-77 (Wav2VecModel.forward, as audio_processor.py:119 calls it): "
                "feature_extractor -> transpose(1, 2) -> linear_interpolation(seq_len) -> then the feature "
                "projection and the encoder",
        "notes": ["torch.nn.functional.interpolate over time, mode 'linear', align_corners=True: output frame k "
                  "samples input position k*(T-1)/(seq_len-1)",
                  "this happens BEFORE feature_projection and the transformer encoder, so every hidden state "
                  "is at the video rate; interpolating the encoder's 50 Hz output afterwards is not equivalent"],
    }
    return _Fixture("audio_interpolation", inputs={"extract_features": features}, outputs={"features": out},
                    info=info)


def _fixture_audio_proj(inference, seed, windows):
    import torch

    g = _generator(seed, "audio_proj")
    layers, channels = windows.shape[2], windows.shape[3]
    kwargs = {"seq_len": 5, "blocks": layers, "channels": channels, "intermediate_dim": 32, "output_dim": 32,
              "context_tokens": 4}
    module = inference.AudioProjModel(**kwargs)
    _randomise(module, g)
    # scripts/inference.py:314-320: the windows of clip t (here t = 1 of clips of FIXTURE_FRAMES), unsqueeze(0).
    t = 1
    audio_embeds = windows[t * FIXTURE_FRAMES:(t + 1) * FIXTURE_FRAMES].unsqueeze(0).clone()

    def call(m, ins):
        tokens = m(ins["audio_embeds"])
        # face_animate.py:377-378: [zeros_like(tokens); tokens] is what every audio module receives
        return {"tokens": tokens, "audio_tensor": torch.cat([torch.zeros_like(tokens), tokens])}

    info = {
        "module": "hallo.models.audio_proj.AudioProjModel",
        "constructor": kwargs,
        "full_size": {"seq_len": 5, "blocks": 12, "channels": 768, "intermediate_dim": 512, "output_dim": 768,
                      "context_tokens": 32, "net_prefix": "audioproj.", "built_at": "scripts/inference.py:213-220"},
        "call": "scripts/inference.py:314-320: audioproj(windows[t*clip:(t+1)*clip].unsqueeze(0)), once per clip; "
                "in.audio_embeds is clip t=1 of audio_windows.safetensors' out.windows. out.audio_tensor is "
                "face_animate.py:377-378: cat([zeros_like(tokens), tokens]), the audio modules' context",
        "notes": ["each frame's (5, blocks, channels) window is flattened row-major (window index slowest, "
                  "channel fastest: audio_proj.py:108-110)",
                  "proj1 -> ReLU -> proj2 -> ReLU -> proj3, reshape (frames, context_tokens, output_dim), "
                  "LayerNorm(output_dim, eps 1e-5) (audio_proj.py:112-119; layers built at :90-94), then back to "
                  "(batch, frames, tokens, dim) (:120-122)",
                  "uncond audio is zeros of the PROJECTED tokens, not the projection of zero windows"],
    }
    return _Fixture("audio_proj", module=module, factory=lambda: inference.AudioProjModel(**kwargs), call=call,
                    inputs={"audio_embeds": audio_embeds}, outputs=call(module, {"audio_embeds": audio_embeds}),
                    info=info)


def _fixture_face_locator(inference, seed):
    import torch

    g = _generator(seed, "face_locator")
    kwargs = {"conditioning_embedding_channels": 32, "conditioning_channels": 3, "block_out_channels": [8, 16, 16, 32]}
    module = inference.FaceLocator(**kwargs)
    _randomise(module, g)
    side = 32  # pixels; the three stride-2 convs give side / 8 = 4, the latent side this image would have
    # image_processor.py:141-146: the face box as an RGB image in [0, 1]; scripts/inference.py:267 unsqueeze(0).
    face_mask = _uniform(g, 1, 3, side, side)

    def call(m, ins):
        # face_animate.py:339-343: unsqueeze(1) (b f c h w), repeat over the clip's frames, transpose to
        # (b, c, f, h, w), face_locator, then [zeros; features] for CFG.
        x = ins["face_mask"].unsqueeze(1).repeat(1, FIXTURE_FRAMES, 1, 1, 1).transpose(1, 2)
        emb = m(x)
        return {"embedding": emb, "mask_cond_fea": torch.cat([torch.zeros_like(emb), emb])}

    info = {
        "module": "hallo.models.face_locator.FaceLocator",
        "constructor": kwargs,
        "full_size": {"conditioning_embedding_channels": 320, "conditioning_channels": 3,
                      "block_out_channels": [16, 32, 64, 128], "net_prefix": "face_locator.",
                      "built_at": "scripts/inference.py:206"},
        "call": "face_animate.py:339-343 (the repeat over frames, the transpose and the CFG concatenation are part "
                "of the fixture's call); out.mask_cond_fea is added to conv_in's output (unet_3d.py:603-605)",
        "notes": ["InflatedConv3d = Conv2d on (b f) c h w, frame by frame (resnet.py:30-66)",
                  "conv_in(3x3) SiLU; per stage: conv 3x3 SiLU, conv 3x3 stride 2 SiLU; conv_out 3x3 with NO "
                  "activation (layers face_locator.py:67-92, forward :104-113); padding 1 everywhere",
                  "the uncond half is zeros (face_animate.py:343), not face_locator(zeros)"],
    }
    return _Fixture("face_locator", module=module, factory=lambda: inference.FaceLocator(**kwargs), call=call,
                    inputs={"face_mask": face_mask}, outputs=call(module, {"face_mask": face_mask}), info=info)


AUDIO_BLOCK_WEIGHTS = (0.5, 1.5, 0.25)  # pose, face, lip: distinct, so that a swapped branch shows


def _fixture_audio_block(seed, audio_tensor):
    import importlib

    g = _generator(seed, "audio_block")
    transformer_3d = importlib.import_module("hallo.models.transformer_3d")
    block_in, block_out = 32, 64  # like down_blocks.1's first layer (320 -> 640): inner width = the block's input
    kwargs = {
        "num_attention_heads": FIXTURE_HEADS, "attention_head_dim": block_in // FIXTURE_HEADS,
        "in_channels": block_out, "num_layers": 1, "cross_attention_dim": audio_tensor.shape[-1],
        "norm_num_groups": 32, "use_linear_projection": False, "only_cross_attention": False,
        "upcast_attention": False, "use_audio_module": True, "depth": FIXTURE_LEVEL, "unet_block_name": "down",
        "stack_enable_blocks_name": ["up", "down", "mid"], "stack_enable_blocks_depth": [0, 1, 2, 3],
    }
    module = transformer_3d.Transformer3DModel(**kwargs)
    _randomise(module, g)
    side = FIXTURE_LATENT >> FIXTURE_LEVEL
    hidden = _randn(g, 2, block_out, FIXTURE_FRAMES, side, side)
    full, face, lip = (_level_masks(g, FIXTURE_FRAMES) for _ in range(3))
    inputs = {"hidden_states": hidden, "audio_embedding": audio_tensor}
    for name, masks in (("full_mask", full), ("face_mask", face), ("lip_mask", lip)):
        for level, mask in enumerate(masks):
            inputs[f"{name}.{level}"] = mask

    def call(m, ins):
        lists = {n: [ins[f"{n}.{lvl}"] for lvl in range(4)] for n in ("full_mask", "face_mask", "lip_mask")}
        out = {}
        for key, scale in (("sample", [1.0, 1.0, 1.0]), ("sample_weighted", list(AUDIO_BLOCK_WEIGHTS))):
            # unet_3d_blocks.py:724-733 (the train-mode branch their inference takes; checkpoint() only wraps it)
            out[key] = m(ins["hidden_states"], ins["audio_embedding"], None, lists["full_mask"],
                         lists["face_mask"], lists["lip_mask"], scale, return_dict=False)[0]
        return out

    info = {
        "module": "hallo.models.transformer_3d.Transformer3DModel (use_audio_module=True; its block is "
                  "hallo.models.attention.AudioTemporalBasicTransformerBlock)",
        "constructor": kwargs,
        "full_size": {"example": "denoising_unet.down_blocks.1.audio_modules.0: num_attention_heads 8, "
                                 "attention_head_dim 40 (inner 320), in_channels 640, cross_attention_dim 768, "
                                 "depth 1, unet_block_name 'down'",
                      "built_at": "unet_3d_blocks.py:586-603 (down), 357-375 (mid, depth 3), 1048-1065 (up, depth "
                                  "3-i); unet_additional_kwargs of configs/inference/default.yaml:46-74"},
        "call": "unet_3d_blocks.py:724-733: audio_module(hidden_states, audio_embedding, attention_mask=None, "
                "full_mask, face_mask, lip_mask, motion_scale)[0], after the spatial transformer and before the "
                "motion module; out.sample with motion_scale [1.0, 1.0, 1.0] (scripts/inference.py:137, "
                "default.yaml:42-44), out.sample_weighted with [pose, face, lip] = "
                f"{list(AUDIO_BLOCK_WEIGHTS)}",
        "level": FIXTURE_LEVEL,
        "motion_scale_weighted": list(AUDIO_BLOCK_WEIGHTS),
        "notes": ["in.audio_embedding is audio_proj.safetensors' out.audio_tensor: (2 CFG halves, frames, tokens, "
                  "dim), [zeros; tokens]; flattened to ((b f), tokens, dim) (transformer_3d.py:183-187)",
                  "hidden_states (b, c, f, h, w) -> (b f) c h w; GroupNorm(32, in_channels, eps 1e-6) per frame; "
                  "1x1 conv proj_in to the inner width; tokens row-major (h, w) (transformer_3d.py:180-203)",
                  "block: norm1 -> attn1 (self) + residual; norm2 -> attn2_0/1/2 over the frame's audio tokens; "
                  "each x mask[level][:, :, None], reshaped to a square (side = int(sqrt(tokens))) NCHW, its own "
                  "1x1 zero_conv_full/face/lip with bias; sum = s0*full + s1*face + s2*lip + hidden; "
                  "norm3 -> GEGLU feed-forward + residual (attention.py:812-905)",
                  "the masks are the full 4-level lists; the block reads index `depth` only (attention.py:853)",
                  "LayerNorms eps 1e-5; attention heads 8, scale 1/sqrt(head_dim), no q/k/v bias, to_out bias",
                  "the zero-audio (uncond) rows still change: to_out biases x mask -> zero_conv with bias",
                  "proj_out 1x1 conv inner -> in_channels, plus the block input as residual"],
    }
    return _Fixture("audio_block", module=module, factory=lambda: transformer_3d.Transformer3DModel(**kwargs),
                    call=call, inputs=inputs, outputs=call(module, inputs), info=info)


def _fixture_motion_module(seed):
    import importlib
    import torch

    g = _generator(seed, "motion_module")
    motion_module = importlib.import_module("hallo.models.motion_module")
    width, n, side = 64, FIXTURE_MOTION_FRAMES, FIXTURE_LATENT >> FIXTURE_LEVEL
    # configs/inference/default.yaml:59-68, at a tiny width; built by unet_3d_blocks.py:606-613
    mm_kwargs = {"num_attention_heads": FIXTURE_HEADS, "num_transformer_block": 1,
                 "attention_block_types": ["Temporal_Self", "Temporal_Self"], "temporal_position_encoding": True,
                 "temporal_position_encoding_max_len": 32, "temporal_attention_dim_div": 1}

    def factory():
        return motion_module.get_motion_module(in_channels=width, motion_module_type="Vanilla",
                                               motion_module_kwargs=dict(mm_kwargs))

    module = factory()
    _randomise(module, g)
    hidden = _randn(g, 2, width, FIXTURE_FRAMES, side, side)
    # The reference bank of the same layer: rows [ref, m1, m2] for each CFG half, (2*(1+n), side*side, width), the
    # reference UNet's norm1 output cast to float16 by update() (mutual_self_attention.py:404,453).
    bank = _randn(g, 2 * (1 + n), side * side, width).to(torch.float16).to(torch.float32)
    # mutual_self_attention.py:248-252: "(b s) l c -> b s l c" with b = 2, rows 1: of each half; then
    # unet_3d_blocks.py:702-709: "b f (d1 d2) c -> b c f d1 d2" with d1 = hidden_states.size(-1) (the width; the
    # tokens are split width-major, which is the row-major (h, w) order only because the latents are square).
    motion_frames = bank.reshape(2, 1 + n, side * side, width)[:, 1:].reshape(2, n, side, side, width)
    motion_frames = motion_frames.permute(0, 4, 1, 2, 3).contiguous()
    # The image tokens their blocks pass (unused by Temporal_Self attention; checked below).
    context = _randn(g, 2, 4, 32)

    def call(m, ins):
        without = m(ins["hidden_states"], encoder_hidden_states=context)
        # unet_3d_blocks.py:737-748: cat([motion_frames, hidden_states], dim=2), the module, then [:, :, n:]
        prefixed = torch.cat([ins["motion_frames"].to(ins["hidden_states"].dtype), ins["hidden_states"]], dim=2)
        with_all = m(prefixed, context)
        return {"without_prefix": without, "with_prefix_all": with_all,
                "with_prefix": with_all[:, :, ins["motion_frames"].shape[2]:]}

    inputs = {"hidden_states": hidden, "reference_bank": bank, "motion_frames": motion_frames}
    outputs = call(module, inputs)
    context_unused = bool(torch.equal(module(hidden, None), outputs["without_prefix"]))
    info = {
        "module": "hallo.models.motion_module.VanillaTemporalModule (AnimateDiff v2)",
        "constructor": {"in_channels": width, **mm_kwargs},
        "full_size": {"in_channels": "320 / 640 / 1280 (the block's output width)",
                      "net_prefix": "denoising_unet.<down_blocks.i|mid_block|up_blocks.i>.motion_modules.j.",
                      "built_at": "unet_3d_blocks.py:606-613 (get_motion_module(in_channels=out_channels, "
                                  "'Vanilla', motion_module_kwargs)); kwargs from default.yaml:59-68"},
        "call": "with prefix (their inference, every cross-attention block and mid): unet_3d_blocks.py:737-748 "
                "(down), 477-490 (mid), 1149-1202 (up): motion_module(cat([motion_frames, hidden_states], dim=2), "
                "encoder_hidden_states)[:, :, n_motion:]; out.with_prefix_all is before the slice. Without: "
                "motion_module(hidden_states, encoder_hidden_states), the module alone (their eval branch, "
                "unet_3d_blocks.py:766-770, which their inference never takes)",
        "encoder_hidden_states_unused": context_unused,
        "level": FIXTURE_LEVEL,
        "notes": ["in.motion_frames is derived from in.reference_bank exactly as their code does (see the tool); "
                  "its values are float16-representable",
                  "(b, c, f, h, w) -> (b f) c h w; GroupNorm(32 groups, eps 1e-6) PER FRAME over (c/32, h, w) "
                  "(motion_module.py:284-290): the prefix frames are normalised on their own",
                  "proj_in Linear(c -> c); tokens (b f, h*w, c) -> (b h*w, f, c) for each attention "
                  "(motion_module.py:580-583)",
                  "per attention block: LayerNorm (eps 1e-5) -> + pe[:, :f] (sinusoidal, length 32, added AFTER the "
                  "norm, to the attention input only, not to the residual; motion_module.py:585-586,407-418) -> "
                  "self-attention over frames (8 heads) -> + residual; two such blocks, then ff_norm -> GEGLU "
                  "feed-forward + residual; proj_out Linear(c -> c) + the input as residual",
                  "with the prefix the clip's frames get positions n..n+f-1 of pe (2..17 at full size) and the "
                  "prefix frames take part in every attention; their outputs are dropped",
                  "state includes the two pos_encoder.pe buffers (their net.pth holds them too)"],
    }
    return _Fixture("motion_module", module=module, factory=factory, call=call, inputs=inputs, outputs=outputs,
                    info=info)


def _fixture_tensors(fixture) -> dict:
    tensors = {f"in.{k}": v for k, v in fixture.inputs.items()}
    tensors.update({f"out.{k}": v for k, v in fixture.outputs.items()})
    if fixture.module is not None:
        tensors.update({f"state.{k}": v for k, v in fixture.module.state_dict().items()})
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def _check_replay(fixture, tensors) -> float:
    """Rebuild the module from the file's state alone (strict), call it on the file's inputs: must be bit-identical,
    and identical in eval mode too (their denoiser runs in training mode; no module here has dropout > 0)."""
    import torch

    module = fixture.factory()
    state = {k.removeprefix("state."): v for k, v in tensors.items() if k.startswith("state.")}
    module.load_state_dict(state, strict=True)
    inputs = {k.removeprefix("in."): v for k, v in tensors.items() if k.startswith("in.")}
    worst = 0.0
    for mode in ("train", "eval"):
        module.train(mode == "train")
        with torch.no_grad():
            outputs = fixture.call(module, inputs)
        for k, v in outputs.items():
            if not torch.equal(v, tensors[f"out.{k}"]):
                worst = max(worst, float((v - tensors[f"out.{k}"]).abs().max()))
    return worst


def cmd_fixtures(args) -> None:
    root = hallo_checkout()
    inference, served = import_hallo(root)
    import diffusers
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    commit = hallo_commit(root)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seed = args.seed
    with torch.no_grad():  # their pipeline's __call__ is under no_grad (face_animate.py:249)
        windows = _fixture_audio_windows(inference, seed)
        audio_proj = _fixture_audio_proj(inference, seed, windows.outputs["windows"])
        fixtures = [
            _fixture_image_proj(inference, seed),
            audio_proj,
            _fixture_face_locator(inference, seed),
            _fixture_audio_block(seed, audio_proj.outputs["audio_tensor"]),
            _fixture_motion_module(seed),
            windows,
            _fixture_audio_interpolation(seed),
        ]
    total = 0
    for fixture in fixtures:
        tensors = _fixture_tensors(fixture)
        path = out / f"{fixture.name}.safetensors"
        # One metadata key only: safetensors writes the metadata map in no fixed order, so two keys could swap
        # between runs and the bytes would differ.
        save_file(tensors, str(path), metadata={"hallo_commit": commit or "unknown"})
        replay = _check_replay(fixture, tensors) if fixture.factory is not None else 0.0
        if replay != 0.0:
            raise ToolError(f"{fixture.name}: rebuilding from the saved state gives a different output "
                            f"(max |diff| {replay:.3g})")
        info = {
            "fixture": fixture.name,
            "hallo_commit": commit,
            "torch": torch.__version__.split("+")[0],
            "diffusers": diffusers.__version__,
            "seed": seed,
            "dtype": "float32",
            "threads": 1,
            **fixture.info,
            "tensors": {k: list(v.shape) for k, v in tensors.items() if not k.startswith("state.")},
            "state_keys": len([k for k in tensors if k.startswith("state.")]),
        }
        (out / f"{fixture.name}.json").write_text(json.dumps(info, indent=1) + "\n")
        size = path.stat().st_size
        total += size
        print(f"  {path.name:34s} {size:>9,d} bytes, {info['state_keys']:3d} state tensors")
    print(f"stand-in modules served: {', '.join(sorted(served)) or 'none'}")
    print(f"wrote {len(fixtures)} fixtures to {out} ({total:,} bytes of safetensors), Hallo {commit or 'unknown'}")


# --- calls: whole-model fixtures -----------------------------------------------------------------------------------
#
# One tiny Net with seeded random weights goes through Hallo's own FaceAnimatePipeline.__call__ (face_animate.py:249-
# 430) exactly as scripts/inference.py:322-337 calls it, for two of its 40 steps; hooks record what it passes where.
# The three fixtures come from that one run, so they chain: reference_bank is its reference pass (step 0), unet_call
# its first guided denoiser call, two_steps its first two scheduler steps. The weights are tiny_net.pth.
#
# Sizes. Every level needs 32 channels (the motion modules' GroupNorm has 32 groups: motion_module.py:231,244) and
# there are 4 levels (unet_3d.py:217,250,279,295,338); layers_per_block 1 keeps the Net at 2.1 M parameters.
CALLS_SIDE = 8  # latent side at level 0; levels 1-3: 4, 2, 1 (square: the audio blocks reshape to a square)
CALLS_PIXELS = CALLS_SIDE * 8  # what the face locator sees (its three stride-2 convs: / 8), and the stand-in VAE's
CALLS_UNET = dict(SD15_UNET, block_out_channels=[32, 32, 32, 32], layers_per_block=1, cross_attention_dim=32,
                  sample_size=CALLS_SIDE)
# On top of configs/inference/default.yaml:46-74 (every other key as there: inflated GroupNorm, motion modules at all
# four resolutions and mid, audio modules at every depth, 8 motion heads, pe length 32).
CALLS_UNET_KWARGS = {"audio_attention_dim": 32}
CALLS_FACE_LOCATOR = {"conditioning_embedding_channels": 32, "conditioning_channels": 3,
                      "block_out_channels": [8, 8, 16, 16]}
CALLS_IMAGE_PROJ = {"cross_attention_dim": 32, "clip_embeddings_dim": 16, "clip_extra_context_tokens": 4}
CALLS_AUDIO_PROJ = {"seq_len": 5, "blocks": 3, "channels": 16, "intermediate_dim": 32, "output_dim": 32,
                    "context_tokens": 4}
CALLS_STEPS_RUN = 2  # of their 40 (default.yaml:17): the pipeline is stopped from its callback after step 1
NOISE_SEED = 42  # scripts/inference.py:289: torch.manual_seed(42), the generator prepare_latents draws from


class _StopPipeline(Exception):
    """Raised from the pipeline's callback once the steps a fixture needs are done."""


def _calls_config(root: Path):
    from omegaconf import OmegaConf

    return OmegaConf.load(default_config(root))


def _calls_net(inference, config, state=None, seed=0):
    """The tiny Net, assembled and frozen as scripts/inference.py:195-242 does. Weights: seeded random (every parameter
    drawn, then rounded to a float16-representable value, so that tiny_net.pth can hold them as float16 and still give
    the same float32 computation), or `state` (a tiny_net.pth state dict) loaded strictly as :244-250 does."""
    import torch
    from omegaconf import OmegaConf

    unet_kwargs = OmegaConf.to_container(config.unet_additional_kwargs)
    unet_kwargs.update(CALLS_UNET_KWARGS)
    reference_unet = inference.UNet2DConditionModel.from_config(dict(CALLS_UNET))
    denoising_unet = inference.UNet3DConditionModel.from_config(
        dict(CALLS_UNET, _class_name=inference.UNet3DConditionModel.__name__, **UNET_3D_BLOCKS), **unet_kwargs)
    net = inference.Net(reference_unet, denoising_unet, inference.FaceLocator(**CALLS_FACE_LOCATOR),
                        inference.ImageProjModel(**CALLS_IMAGE_PROJ), inference.AudioProjModel(**CALLS_AUDIO_PROJ))
    if state is None:
        _randomise(net, _generator(seed, "tiny_net"))
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(p.to(torch.float16).to(torch.float32))
    else:
        net.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    # scripts/inference.py:226-234: frozen, gradient checkpointing on in both UNets.
    net.requires_grad_(False)
    reference_unet.enable_gradient_checkpointing()
    denoising_unet.enable_gradient_checkpointing()
    # scripts/inference.py:196 builds the reference UNet with from_pretrained, which returns it in eval mode; the
    # denoiser comes from from_config (unet_3d.py:776), which leaves it in TRAINING mode, and nothing calls eval().
    reference_unet.eval()
    denoising_unet.train()
    return net, unet_kwargs


def _calls_scheduler(inference, config):
    """scripts/inference.py:185-192, verbatim in effect: the yaml's kwargs, then the zero-SNR trio."""
    from omegaconf import OmegaConf

    kwargs = OmegaConf.to_container(config.noise_scheduler_kwargs)
    if config.enable_zero_snr:
        kwargs.update(rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction")
    return inference.DDIMScheduler(**kwargs), kwargs


def _calls_inputs(seed):
    """What scripts/inference.py hands the pipeline for one clip, drawn at random at the tiny size."""
    g = _generator(seed, "calls_inputs")
    f, n = FIXTURE_FRAMES, FIXTURE_MOTION_FRAMES
    face_emb = _randn(g, 1, CALLS_IMAGE_PROJ["clip_embeddings_dim"])  # raw insightface embedding, inference.py:268
    face_region = _uniform(g, 1, 3, CALLS_PIXELS, CALLS_PIXELS)  # image_processor.py:141-146, inference.py:267
    # inference.py:314-317: one clip's windows of the audio features, (1, f, 5, layers, channels)
    audio_windows = _randn(g, 1, f, CALLS_AUDIO_PROJ["seq_len"], CALLS_AUDIO_PROJ["blocks"],
                           CALLS_AUDIO_PROJ["channels"])
    masks = {}
    for name in ("full_mask", "face_mask", "lip_mask"):
        for level in range(4):
            side = CALLS_SIDE >> level
            # image_processor.py:156-180: (1, side*side) in [0, 1]; inference.py:271-282: .repeat(clip_length, 1)
            masks[f"{name}.{level}"] = _uniform(g, 1, side * side).repeat(f, 1)
    # The VAE's latent_dist.mean of [reference; motion frames] (face_animate.py:332-335); the stand-in VAE returns it.
    # Scaled so that mean * 0.18215 has about unit spread, as SD latents do. The rows differ, as in any clip after the
    # first (inference.py:302-310: the previous clip's last n frames; the first clip repeats the reference, :294-301),
    # so that a mix-up of reference and motion rows shows.
    vae_mean = 5.0 * _randn(g, 1 + n, 4, CALLS_SIDE, CALLS_SIDE)
    # The pixels the pipeline would encode, (1, 1 + n, 3, H, W) in [-1, 1] (inference.py:309-312). The stand-in VAE
    # ignores them; they only have to pass VaeImageProcessor.preprocess (face_animate.py:332-334).
    ref_pixels = 2.0 * _uniform(g, 1, 1 + n, 3, CALLS_PIXELS, CALLS_PIXELS) - 1.0
    return {"face_emb": face_emb, "face_region": face_region, "audio_windows": audio_windows, "vae_mean": vae_mean,
            "ref_pixels": ref_pixels, **masks}


def _stand_in_vae(mean):
    """The pipeline's VAE, reduced to what __call__ uses before decoding: config.block_out_channels (4 entries: scale
    factor 8, face_animate.py:117), dtype, device, and encode(x).latent_dist.mean (face_animate.py:334-335)."""
    import types

    import torch

    class FixedLatentVAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("fixed_mean", mean.clone())
            self.config = types.SimpleNamespace(block_out_channels=[0, 0, 0, 0])

        @property
        def dtype(self):
            return self.fixed_mean.dtype

        @property
        def device(self):
            return self.fixed_mean.device

        def encode(self, x):
            if x.shape[0] != self.fixed_mean.shape[0]:
                raise ToolError(f"stand-in VAE: {x.shape[0]} images, expected {self.fixed_mean.shape[0]}")
            return types.SimpleNamespace(latent_dist=types.SimpleNamespace(mean=self.fixed_mean.clone()))

    return FixedLatentVAE()


def _clone_tree(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone_tree(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone_tree(v) for k, v in value.items()}
    return value


def _bank_blocks(net):
    """(writer, reader) block pairs in the order ReferenceAttentionControl.update pairs them
    (mutual_self_attention.py:433-453: every BasicTransformerBlock of the reference UNet and every
    TemporalBasicTransformerBlock of the denoiser, depth first, each list sorted by norm1 width, descending, stable),
    as (name, module) tuples."""
    import importlib

    msa = importlib.import_module("hallo.models.mutual_self_attention")
    names_ref = {id(m): n for n, m in net.reference_unet.named_modules()}
    names_den = {id(m): n for n, m in net.denoising_unet.named_modules()}
    writers = [m for m in msa.torch_dfs(net.reference_unet) if isinstance(m, msa.BasicTransformerBlock)]
    readers = [m for m in msa.torch_dfs(net.denoising_unet) if isinstance(m, msa.TemporalBasicTransformerBlock)]
    writers = sorted(writers, key=lambda m: -m.norm1.normalized_shape[0])
    readers = sorted(readers, key=lambda m: -m.norm1.normalized_shape[0])
    return [((names_ref[id(w)], w), (names_den[id(r)], r)) for w, r in zip(writers, readers)]


def _run_pipeline(inference, config, net, inputs):
    """Hallo's FaceAnimatePipeline.__call__ for one clip, as scripts/inference.py:254-337 builds and calls it, stopped
    after CALLS_STEPS_RUN steps. Returns everything recorded on the way."""
    import functools

    import torch

    scheduler, sched_kwargs = _calls_scheduler(inference, config)
    pipeline = inference.FaceAnimatePipeline(vae=_stand_in_vae(inputs["vae_mean"]), reference_unet=net.reference_unet,
                                             denoising_unet=net.denoising_unet, face_locator=net.face_locator,
                                             scheduler=scheduler, image_proj=net.imageproj)
    pipeline.set_progress_bar_config(disable=True)
    rec = {"reference": [], "denoiser": [], "steps": [], "latents": []}
    hooks = [
        net.reference_unet.register_forward_hook(
            lambda m, a, k, o: rec["reference"].append((_clone_tree(a), _clone_tree(k))), with_kwargs=True),
        net.denoising_unet.register_forward_hook(
            lambda m, a, k, o: rec["denoiser"].append((_clone_tree(a), _clone_tree(k), _clone_tree(o))),
            with_kwargs=True),
    ]
    original_step = scheduler.step

    @functools.wraps(original_step)  # keeps the signature prepare_extra_step_kwargs inspects (face_animate.py:207-219)
    def step(model_output, timestep, sample, *args, return_dict=True, **kwargs):
        out = original_step(model_output, timestep, sample, *args, return_dict=True, **kwargs)
        rec["steps"].append({"timestep": _clone_tree(timestep), "model_output": _clone_tree(model_output),
                             "sample": _clone_tree(sample), "prev_sample": _clone_tree(out.prev_sample),
                             "pred_original_sample": _clone_tree(out.pred_original_sample)})
        return out if return_dict else (out.prev_sample,)

    scheduler.step = step

    def callback(step_idx, t, latents):  # face_animate.py:423-427, after every step
        rec["latents"].append(latents.clone())
        if len(rec["latents"]) == CALLS_STEPS_RUN:
            raise _StopPipeline

    # scripts/inference.py:314-320: the audio projection runs outside the pipeline, once per clip.
    audio_tensor = net.audioproj(inputs["audio_windows"])
    masks = {name: [inputs[f"{name}.{level}"] for level in range(4)] for name in ("full_mask", "face_mask", "lip_mask")}
    motion_scale = [config.pose_weight, config.face_weight, config.lip_weight]  # scripts/inference.py:137
    try:
        pipeline(ref_image=inputs["ref_pixels"], audio_tensor=audio_tensor, face_emb=inputs["face_emb"],
                 face_mask=inputs["face_region"], pixel_values_full_mask=masks["full_mask"],
                 pixel_values_face_mask=masks["face_mask"], pixel_values_lip_mask=masks["lip_mask"],
                 width=CALLS_PIXELS, height=CALLS_PIXELS, video_length=FIXTURE_FRAMES,
                 num_inference_steps=config.inference_steps, guidance_scale=config.cfg_scale,
                 generator=torch.manual_seed(NOISE_SEED), motion_scale=motion_scale, callback=callback)
    except _StopPipeline:
        pass
    else:
        raise ToolError("the pipeline ran to the end: its callback was never called")
    finally:
        for h in hooks:
            h.remove()
    if len(rec["reference"]) != 1 or len(rec["denoiser"]) != CALLS_STEPS_RUN or len(rec["steps"]) != CALLS_STEPS_RUN:
        raise ToolError(f"unexpected call counts: reference {len(rec['reference'])}, denoiser {len(rec['denoiser'])}, "
                        f"steps {len(rec['steps'])}")
    rec.update(pipeline=pipeline, scheduler=scheduler, sched_kwargs=sched_kwargs, audio_tensor=audio_tensor,
               motion_scale=motion_scale, inputs=inputs)
    # The banks as the run left them (the pipeline's clear() at face_animate.py:429-430 never ran).
    rec["banks"] = []
    for (wname, w), (rname, r) in _bank_blocks(net):
        if len(w.bank) != 1 or len(r.bank) != 1:
            raise ToolError(f"bank of {wname} / {rname}: {len(w.bank)} / {len(r.bank)} entries, expected 1")
        if not torch.equal(r.bank[0], w.bank[0].to(torch.float16)):
            raise ToolError(f"the bank {rname} reads is not {wname}'s, rounded to float16")
        rec["banks"].append((wname, w.bank[0].clone(), rname, r.bank[0].clone()))
    return rec


def _denoiser_call(net, call):
    args, kwargs, _ = call
    return net.denoising_unet(*args, **kwargs)[0]


def _quirk_effects(net, rec):
    """How far the first denoiser call moves when one quirk of their inference is left out (max |diff| of the raw
    prediction, at this tiny size); each variant runs on the same inputs, then the state is put back."""
    import torch

    call = rec["denoiser"][0]
    base = call[2][0]
    effects = {}
    if not torch.equal(_denoiser_call(net, call), base):
        raise ToolError("calling the denoiser again with the recorded inputs gives different bits")
    net.denoising_unet.eval()
    effects["eval_mode"] = float((_denoiser_call(net, call) - base).abs().max())
    net.denoising_unet.train()
    net.denoising_unet.disable_gradient_checkpointing()
    effects["train_mode_without_checkpointing"] = float((_denoiser_call(net, call) - base).abs().max())
    net.denoising_unet.enable_gradient_checkpointing()
    pairs = _bank_blocks(net)
    saved = [r.bank for _, (_, r) in pairs]
    for (_, w), (_, r) in pairs:
        r.bank = [w.bank[0].clone()]
    effects["bank_not_rounded_to_float16"] = float((_denoiser_call(net, call) - base).abs().max())
    # The reference pass with each row's own half of the context ([u, u, u, c, c, c]) instead of their tiled one.
    ref_args, ref_kwargs = rec["reference"][0]
    context = ref_kwargs["encoder_hidden_states"]
    rows = ref_args[0].shape[0]
    untiled = context.repeat_interleave(rows // context.shape[0], dim=0)
    for (_, w), _ in pairs:
        w.bank = []
    net.reference_unet(*ref_args, **dict(ref_kwargs, encoder_hidden_states=untiled))
    for (_, w), (_, r) in pairs:
        r.bank = [w.bank[0].to(torch.float16)]
    effects["reference_context_not_tiled"] = float((_denoiser_call(net, call) - base).abs().max())
    for ((_, w), (_, r)), bank, entry in zip(pairs, saved, rec["banks"]):
        r.bank = bank
        w.bank = [entry[1]]
    if not torch.equal(_denoiser_call(net, call), base):
        raise ToolError("the banks were not restored")
    return effects


def _block_stats(net, call):
    """mean, std and max |x| of each top-level block's output in the first denoiser call: where to look first when a
    re-implementation disagrees."""
    hooks, stats = [], {}
    blocks = [("conv_in", net.denoising_unet.conv_in)]
    blocks += [(f"down_blocks.{i}", b) for i, b in enumerate(net.denoising_unet.down_blocks)]
    blocks += [("mid_block", net.denoising_unet.mid_block)]
    blocks += [(f"up_blocks.{i}", b) for i, b in enumerate(net.denoising_unet.up_blocks)]

    def record(name):
        def hook(module, args, output):
            x = output[0] if isinstance(output, tuple) else output
            stats[name] = {"shape": list(x.shape), "mean": round(float(x.mean()), 6), "std": round(float(x.std()), 6),
                           "max_abs": round(float(x.abs().max()), 6)}
        return hook

    for name, module in blocks:
        hooks.append(module.register_forward_hook(record(name)))
    try:
        _denoiser_call(net, call)
    finally:
        for h in hooks:
            h.remove()
    return stats


def _net_state(net):
    """The Net's state dict as tiny_net.pth holds it: parameters float16 (their values are float16-representable by
    construction), buffers (the motion modules' pos_encoder.pe) float32 as their constructor computes them."""
    import torch

    params = {name for name, _ in net.named_parameters()}
    return {k: (v.to(torch.float16) if k in params else v).detach().clone().contiguous()
            for k, v in net.state_dict().items()}


def _torch_save_bytes(state) -> bytes:
    """torch.save of a plain dict into memory: the archive's folder is then always `archive/` (saving to a path names
    it after the file), so the bytes depend on the contents only."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _calls_common(commit, seed):
    import diffusers
    import torch

    return {"hallo_commit": commit, "torch": torch.__version__.split("+")[0], "diffusers": diffusers.__version__,
            "seed": seed, "dtype": "float32", "threads": 1,
            "weights": "tiny_net.pth (this run's Net; see tiny_net.json)"}


def _calls_tiny_config(unet_kwargs):
    return {"unet": {k: CALLS_UNET[k] for k in ("block_out_channels", "layers_per_block", "cross_attention_dim",
                                                "attention_head_dim", "norm_num_groups", "sample_size")},
            "unet_additional_kwargs": unet_kwargs, "face_locator": CALLS_FACE_LOCATOR, "image_proj": CALLS_IMAGE_PROJ,
            "audio_proj": CALLS_AUDIO_PROJ, "frames": FIXTURE_FRAMES, "motion_frames": FIXTURE_MOTION_FRAMES,
            "latent_side": CALLS_SIDE, "pixels": CALLS_PIXELS,
            "full_size": {"unet": "SD 1.5 (block_out_channels 320/640/1280/1280, layers_per_block 2, "
                                  "cross_attention_dim 768, 8 heads), audio_attention_dim 768",
                          "face_locator": "FaceLocator(320), widths 16/32/64/128 (scripts/inference.py:206)",
                          "image_proj": "ImageProjModel(768, 512, 4) (:207-211)",
                          "audio_proj": "AudioProjModel(5, 12, 768, 512, 768, 32) (:213-220)",
                          "frames": 16, "motion_frames": 2, "latent_side": 64, "pixels": 512}}


def _calls_fixtures(rec, effects, stats, config):
    """(name, tensors, info) of the three fixtures."""
    import torch

    f, n = FIXTURE_FRAMES, FIXTURE_MOTION_FRAMES
    ref_args, ref_kwargs = rec["reference"][0]
    ref_latents = ref_args[0][: 1 + n]
    banks = rec["banks"]
    pairing = [{"reader": rname, "writer": wname, "shape": list(wb.shape)} for wname, wb, rname, _ in banks]

    # 1. reference_bank
    tensors = {"in.ref_image_latents": ref_latents, "in.sample": ref_args[0], "in.timestep": ref_args[1],
               "in.encoder_hidden_states": ref_kwargs["encoder_hidden_states"]}
    for wname, wbank, _, _ in banks:
        tensors[f"write.{wname}"] = wbank
    reference_bank = ("reference_bank", tensors, {
        "module": "net.reference_unet (hallo.models.unet_2d_condition.UNet2DConditionModel, eval mode) under "
                  "ReferenceAttentionControl(mode='write'), read by net.denoising_unet under mode='read' "
                  "(hallo/models/mutual_self_attention.py)",
        "call": "face_animate.py:386-395, at step i == 0 only: reference_unet(ref_image_latents.repeat(2, 1, 1, 1), "
                "torch.zeros_like(t), encoder_hidden_states=cat([uncond, cond]), return_dict=False); then "
                "reference_control_reader.update(reference_control_writer) (mutual_self_attention.py:404-453)",
        "rows": [f"half{h}.{row}" for h in (0, 1) for row in ["ref"] + [f"m{i + 1}" for i in range(n)]],
        "row_context": ["uncond" if r % 2 == 0 else "cond" for r in range(2 * (1 + n))],
        "row_use": f"the denoiser's uncond rows (the first {f} of its 2*{f}) take rows 0..{n} (half0), its cond rows "
                   f"rows {1 + n}..{1 + 2 * n} (half1): the ref row of each half is the attn1 bank (half0's is then "
                   "discarded by the uncond recompute), the m rows the motion prefix. So the cond half's bank is "
                   "the reference seen with the cond context, but its prefix rows saw the contexts of row_context "
                   "(here m1 uncond, m2 cond)",
        "pairing": pairing,
        "notes": [
            "in.ref_image_latents: rows [reference, motion frames 1..n] = VAE latent_dist.mean * 0.18215 "
            "(face_animate.py:332-336), all different as in any clip after the first (the first clip's motion frames "
            "are copies of the reference: scripts/inference.py:294-301); in.sample is it repeated twice "
            "(face_animate.py:388-390), in.timestep a 0-d int64 zero (:391)",
            "context: in.encoder_hidden_states is [image_proj(zeros), image_proj(face_emb)] (face_animate.py:294-298); "
            "the hacked "
            "block repeats it to the rows with .repeat(rows/2, 1, 1) (mutual_self_attention.py:341-346), so row r "
            "gets cond when r is odd: see row_context (the parity depends on 1 + n_motion)",
            "write.<reference UNet block>: the block's norm1 output, float32, appended before attn1 "
            "(mutual_self_attention.py:206,223-224); shape (rows, h*w, width), tokens row-major (h, w)",
            "what each denoiser block reads (pairing[i].reader) is write.<pairing[i].writer> cast to float16 by "
            "update() (mutual_self_attention.py:404,453: dtype defaults to float16, fp32 runs included; the tool "
            "checks the equality; unet_call.safetensors' bank.* holds the float16 tensors). Pairing: both "
            "lists depth first (children in registration order: down_blocks, up_blocks, mid_block in both UNets: "
            "unet_3d.py:203-205,258; unet_2d_condition.py:494-495,572), then sorted by width, descending, stable "
            "(mutual_self_attention.py:446-451), so blocks pair by structural position",
            "the denoiser's block reads the bank as: row 0 of each CFG half (the reference) repeated over the clip's "
            "frames and concatenated after the frame's own norm1 tokens as keys/values of its OWN attn1 "
            "(mutual_self_attention.py:235-263); rows 1..n of each half are the motion frames handed to the motion "
            "module as a prefix (:248-252,327; unet_3d_blocks.py:702-709 reshapes them with d1 = the width)",
            "the uncond rows (the first half of the 2*frames rows) then have attn1 recomputed as plain "
            "self-attention: no bank (:264-284; the hard-coded 16 of :159-166 falls back to halves, :267-275)",
            "the reference UNet has no conv_norm_out (unet_2d_condition.py:686) and skips conv_out "
            "(post_process False, :921,1345); its output is not used",
        ],
    })

    # 2. unet_call: the first guided call (step 0)
    args, kwargs, output = rec["denoiser"][0]
    raw = output[0]
    uncond, cond = raw.chunk(2)
    guided = uncond + config.cfg_scale * (cond - uncond)  # face_animate.py:415-417
    if not torch.equal(guided, rec["steps"][0]["model_output"]):
        raise ToolError("the guided prediction recomputed here is not what the scheduler received")
    tensors = {"in.sample": args[0], "in.timestep": args[1],
               "in.encoder_hidden_states": kwargs["encoder_hidden_states"], "in.mask_cond_fea": kwargs["mask_cond_fea"],
               "in.audio_embedding": kwargs["audio_embedding"]}
    for name in ("full_mask", "face_mask", "lip_mask"):
        for level, mask in enumerate(kwargs[name]):
            tensors[f"in.{name}.{level}"] = mask
    for _, _, rname, rbank in banks:
        tensors[f"bank.{rname}"] = rbank
    tensors.update({"out.noise_pred": raw, "out.guided": guided})
    unet_call = ("unet_call", tensors, {
        "module": "net.denoising_unet (hallo.models.unet_3d.UNet3DConditionModel) in TRAINING mode with gradient "
                  "checkpointing on, its 10 TemporalBasicTransformerBlocks in ReferenceAttentionControl read mode",
        "call": "face_animate.py:398-412 at step 0: latent_model_input = scale_model_input(cat([latents] * 2), t) "
                "(identity for DDIM); denoising_unet(latent_model_input, t, encoder_hidden_states=, "
                "mask_cond_fea=face_mask, full_mask=, face_mask=, lip_mask=, audio_embedding=, motion_scale=, "
                "return_dict=False)[0]; then guidance :415-417: uncond + scale * (cond - uncond)",
        "timestep": int(args[1]),
        "guidance_scale": config.cfg_scale,
        "motion_scale": rec["motion_scale"],
        "quirk_effects_max_abs": effects,
        "block_stats": stats,
        "notes": [
            "out.noise_pred is the raw (v-)prediction for both rows, [uncond; cond], (2, 4, frames, h, w); "
            "out.guided = noise_pred[0] + guidance_scale * (noise_pred[1] - noise_pred[0]), what the scheduler gets",
            "bank.<block>: the float16 bank each reader block holds (= reference_bank.safetensors write.<its writer> "
            "cast to float16); the block's motion prefix is rows 1..n of each half of it",
            "in.encoder_hidden_states: [image_proj(zeros); image_proj(face_emb)], the only cross-attention context "
            "(no text); the spatial transformers repeat it over the frames, 'b n c -> (b f) n c' "
            "(transformer_3d.py:189-192)",
            "in.mask_cond_fea: [zeros; face_locator(face region over the frames)] (face_animate.py:339-343), added "
            "to conv_in's output (unet_3d.py:603-605)",
            "in.audio_embedding: [zeros_like(tokens); tokens] (face_animate.py:377-379), flattened to ((b f), tokens, "
            "dim) inside each audio module (transformer_3d.py:183-187)",
            "in.<full|face|lip>_mask.<level>: (2*frames, side*side): the (frames, side*side) mask of the level "
            "concatenated twice for CFG (face_animate.py:345-374); each audio block reads index = its depth "
            "(attention.py:853): down i -> i, mid -> 3, up i -> 3-i (unet_3d.py:250,279,338)",
            "motion_scale [pose, face, lip] multiplies the audio blocks' three branches (attention.py:892-897); "
            "passed positionally through checkpoint() (unet_3d_blocks.py:724-733)",
            "train + checkpointing: down_blocks 0-2 and up_blocks 1-3 take the checkpoint branch "
            "(unet_3d_blocks.py:681-748, 1133-1202): resnet, spatial transformer (returns the motion prefix), audio "
            "module with motion_scale, motion module over cat([prefix, hidden], dim=2) then [:, :, n:]; the mid block "
            "always does the same (:436-492); down_blocks.3 and up_blocks.0 (no attention) run ONLY their resnets: "
            "their motion modules are skipped (:905-916, 1376-1388)",
            "checkpoint() is called without use_reentrant, so torch uses the reentrant variant (it warns); under "
            "no_grad that is a plain call",
            "the uncond rows get zero face-locator features and zero audio tokens but still run the audio modules "
            "(biases add output), the same masks, and the motion prefix; only the reference bank is withheld",
            "quirk_effects_max_abs: how far out.noise_pred moves at this size when one quirk is dropped: eval mode "
            "(the eval branch: no prefix, motion modules everywhere, no motion_scale), train mode without the "
            "checkpointing flag (takes the same eval branch), the bank in float32, the reference pass with "
            "[u, u, u, c, c, c] contexts instead of their tiling",
            "block_stats: each top-level block's output in this call (conv_in before the face-locator residual)",
        ],
    })

    # 3. two_steps
    steps = rec["steps"]
    sched = rec["scheduler"]
    tensors = {"in.latents": steps[0]["sample"]}
    for key in ("face_emb", "face_region", "audio_windows"):
        tensors[f"in.{key}"] = rec["inputs"][key]
    tensors["in.ref_image_latents"] = ref_latents
    for name in ("full_mask", "face_mask", "lip_mask"):
        for level in range(4):
            tensors[f"in.{name}.{level}"] = rec["inputs"][f"{name}.{level}"]
    tensors.update({"cond.encoder_hidden_states": kwargs["encoder_hidden_states"],
                    "cond.audio_tensor": rec["audio_tensor"], "cond.mask_cond_fea": kwargs["mask_cond_fea"]})
    for i, (step, call) in enumerate(zip(steps, rec["denoiser"])):
        if not torch.equal(call[0][0], torch.cat([step["sample"]] * 2)):
            raise ToolError(f"step {i}: the denoiser's input is not the latents doubled")
        tensors.update({f"step{i}.timestep": step["timestep"], f"step{i}.noise_pred": call[2][0],
                        f"step{i}.guided": step["model_output"],
                        f"step{i}.pred_original_sample": step["pred_original_sample"],
                        f"step{i}.latents": step["prev_sample"]})
        if not torch.equal(step["prev_sample"], rec["latents"][i]):
            raise ToolError(f"step {i}: the callback's latents are not the scheduler's output")
    tensors.update({"sched.timesteps": sched.timesteps, "sched.betas": sched.betas,
                    "sched.alphas_cumprod": sched.alphas_cumprod})
    two_steps = ("two_steps", tensors, {
        "module": "hallo.animate.face_animate.FaceAnimatePipeline.__call__ with the tiny Net, stopped after 2 of "
                  f"{config.inference_steps} steps",
        "call": "scripts/inference.py:314-337 (audioproj outside, then pipeline(...)), face_animate.py:249-427",
        "scheduler": {"class": "diffusers.DDIMScheduler", "kwargs": rec["sched_kwargs"],
                      "built_at": "scripts/inference.py:185-192 from configs/inference/default.yaml:77-88",
                      "num_inference_steps": config.inference_steps, "eta": 0.0,
                      "final_alpha_cumprod": float(sched.final_alpha_cumprod),
                      "init_noise_sigma": float(sched.init_noise_sigma),
                      "timesteps_head": [int(t) for t in sched.timesteps[:4]],
                      "alphas_cumprod_used": {str(int(t)): float(sched.alphas_cumprod[int(t)])
                                              for t in sched.timesteps[:CALLS_STEPS_RUN + 1]},
                      "prev_timestep_rule": "t - 1000 // 40 = t - 25 (scheduling_ddim.py step, diffusers 0.27.2)"},
        "guidance_scale": config.cfg_scale,
        "motion_scale": rec["motion_scale"],
        "noise": f"in.latents = prepare_latents' randn_tensor with torch.manual_seed({NOISE_SEED}) (scripts/"
                 "inference.py:289; face_animate.py:166-187) times init_noise_sigma 1.0",
        "notes": [
            "inputs as scripts/inference.py gives them to the pipeline: in.face_emb (1, 16) the raw embedding; "
            "in.face_region (1, 3, H, W) in [0, 1]; in.audio_windows (1, frames, 5, layers, channels), which "
            "net.audioproj turns into cond.audio_tensor (1, frames, tokens, dim) before the call "
            "(scripts/inference.py:314-320); the masks (frames, side*side) per level, before the pipeline's CFG "
            "doubling; in.ref_image_latents the VAE side's result (a stand-in VAE returned fixed means: "
            "face_animate.py:335-336 multiplies by 0.18215)",
            "cond.*: what the pipeline derives once per clip: cond.encoder_hidden_states [image_proj(zeros), "
            "image_proj(face_emb)] (face_animate.py:294-298), cond.mask_cond_fea [zeros, face_locator(...)] "
            "(:339-343), cond.audio_tensor (the uncond half, zeros, is added at :377-378)",
            "each step i: step{i}.noise_pred = denoiser(cat([latents]*2), t, ...) as in unet_call; step{i}.guided = "
            "uncond + 3.5 * (cond - uncond); DDIM with eta 0: x0 = sqrt(a_t) x - sqrt(1 - a_t) v, eps = sqrt(a_t) v + "
            "sqrt(1 - a_t) x, latents = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps (no clipping, clip_sample false); "
            "step{i}.latents the result, step{i}.pred_original_sample its x0",
            "the reference bank is computed at step 0 only and reused by step 1 (reference_bank.safetensors, "
            "unet_call.safetensors' bank.*: all three fixtures come from this one run)",
            "zero terminal SNR: alphas_cumprod[999] is exactly 0, so step 0 has x0 = -v and eps = x",
            "betas: diffusers' plain 'linear' 0.00085..0.012 (default.yaml:82; scripts/inference.py:193 switches to "
            "scaled_linear only after the scheduler is built), rescaled to zero terminal SNR; trailing spacing: "
            "999, 974, ..., 24; set_alpha_to_one True (final_alpha_cumprod 1.0, used after t=24); steps_offset 1 is "
            "ignored by trailing spacing",
            "sched.*: the scheduler's timesteps (all 40), betas and alphas_cumprod (float32, 1000 each)",
        ],
    })
    return [reference_bank, unet_call, two_steps]


def _net_keys_report(state, net, unet_kwargs, commit):
    import diffusers
    import torch

    params = {name for name, _ in net.named_parameters()}
    groups: dict[str, dict[str, int]] = {}
    for k, v in state.items():
        g = groups.setdefault(group_of(k), {"keys": 0, "numel": 0})
        g["keys"] += 1
        g["numel"] += v.numel()
    return {
        "source": {"module": "Net of scripts/inference.py at the tiny size of tools/hallo_reference.py calls "
                             "(tiny_net.pth)", "hallo_commit": commit, "diffusers": diffusers.__version__,
                   "torch": torch.__version__.split("+")[0]},
        "config": _calls_tiny_config(unet_kwargs),
        "file": "tiny_net.pth: torch.save of a plain dict {key: tensor} (no wrapper), loads with "
                "torch.load(weights_only=True); their net.pth holds the same keys at full size",
        "key_count": len(state),
        "parameter_count": sum(state[k].numel() for k in params),
        "buffers": sorted(k for k in state if k not in params),
        "groups": groups,
        "dtype": "float16",
        "dtype_note": "parameters float16 (drawn at random, rounded to float16 before any computation, so the float32 "
                      "fixtures use exactly these values); the pos_encoder.pe buffers float32, as their constructor "
                      "computes them (motion_module.py: PositionalEncoding)",
        "dtype_exceptions": {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()
                             if v.dtype != torch.float16},
        "keys": {k: list(v.shape) for k, v in state.items()},
    }


def cmd_calls(args) -> None:
    root = hallo_checkout()
    inference, served = import_hallo(root)
    import io
    import warnings

    import diffusers
    import torch
    from safetensors.torch import save_file

    # Their code calls checkpoint() without use_reentrant (torch warns at every call, and again that no input needs a
    # gradient), diffusers warns about deprecations and about SD 1.5 config keys a class ignores: all expected here.
    warnings.filterwarnings("ignore", message=".*use_reentrant.*")
    warnings.filterwarnings("ignore", message=".*requires_grad=True.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    diffusers.utils.logging.set_verbosity_error()
    torch.set_num_threads(1)
    commit = hallo_commit(root)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = _calls_config(root)
    with torch.no_grad():
        net, unet_kwargs = _calls_net(inference, config, seed=args.seed)
        inputs = _calls_inputs(args.seed)
        rec = _run_pipeline(inference, config, net, inputs)
        effects = _quirk_effects(net, rec)
        stats = _block_stats(net, rec["denoiser"][0])
        fixtures = _calls_fixtures(rec, effects, stats, config)
        state = _net_state(net)
        blob = _torch_save_bytes(state)
        # Replay: the Net rebuilt from the saved file alone (torch.load weights_only, strict), the same run again.
        loaded = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        net2, _ = _calls_net(inference, config, state=loaded)
        rec2 = _run_pipeline(inference, config, net2, inputs)
        for (name, tensors, _), (_, tensors2, _) in zip(fixtures, _calls_fixtures(rec2, effects, stats, config)):
            for k, v in tensors.items():
                if not torch.equal(v, tensors2[k]):
                    raise ToolError(f"{name}: {k} differs when the Net is rebuilt from tiny_net.pth")
    common = _calls_common(commit, args.seed)
    tiny = _calls_tiny_config(unet_kwargs)
    total = 0
    for name, tensors, info in fixtures:
        tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
        path = out / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={"hallo_commit": commit or "unknown"})
        doc = {"fixture": name, **common, "config": tiny, **info,
               "tensors": {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in tensors.items()}}
        (out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
        total += path.stat().st_size
        print(f"  {path.name:34s} {path.stat().st_size:>9,d} bytes, {len(tensors):3d} tensors")
    pth = out / "tiny_net.pth"
    pth.write_bytes(blob)
    report = _net_keys_report(state, net, unet_kwargs, commit)
    (out / "tiny_net.json").write_text(dump(report))
    total += len(blob)
    print(f"  {pth.name:34s} {len(blob):>9,d} bytes, {len(state):3d} keys, "
          f"{report['parameter_count']:,} parameters")
    print("  quirk effects (max |diff| of the first call's prediction): "
          + ", ".join(f"{k} {v:.3g}" for k, v in effects.items()))
    print(f"stand-in modules served: {', '.join(sorted(served)) or 'none'}")
    print(f"wrote 3 fixtures and tiny_net.pth to {out} ({total:,} bytes), Hallo {commit or 'unknown'}")
    folder = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"{out} now holds {folder:,} bytes")


# --- masks: the reference photo's preparation ------------------------------------------------------------------------
#
# Hallo's ImageProcessor.preprocess (hallo/datasets/image_processor.py:107-182) on one synthetic photo, with their own
# mask functions (hallo/utils/util.py:407-666) writing and reading their cache PNGs. Only the two model calls are
# handed in: the landmarks (util.get_landmark) and insightface's face list.
MASKS_PHOTO = (96, 80)  # width, height: not square, so that a kept aspect ratio would show
MASKS_CASES = {
    # name: (resolution, face ellipse centre and radii, lip corners' x, lip centre y, lip top and bottom y), in pixels
    # of the photo. Every extreme that decides a box ends in .5: np.round goes half to even (20.5 -> 20, 71.5 -> 72).
    "inside": (64, (46.0, 40.0), (25.5, 29.5), (36.5, 55.5), 54.0, (50.5, 58.5)),
    "inside_128": (128, (46.0, 40.0), (25.5, 29.5), (36.5, 55.5), 54.0, (50.5, 58.5)),
    # the face box grown by 1.2 crosses the right and the top edge: expand_region shifts it back inside
    "shifted": (64, (77.0, 26.5), (16.5, 25.0), (71.5, 82.5), 38.0, (35.5, 41.5)),
    # grown by 1.2 it is taller than the photo: shifted down, then up past the top; the fill's slice then starts at a
    # negative row and marks only the bottom rows (numpy's slicing from the end)
    "oversized": (64, (48.0, 40.5), (24.0, 38.25), (38.5, 57.5), 60.0, (56.5, 64.5)),
}
# Kept small (each (3, 64, 64) float32 output is 49 KB): the photo's pixels and the face-locator input for `inside`
# only (the other cases at 64 give the same pixels: checked; the face box is the same fill that their masks start
# from, so every case's masks check its box), and `inside_128` shares `inside`'s landmarks.
MASKS_WITH_PIXELS = ("inside",)
MASKS_WITH_FACE_BOX = ("inside",)
MASKS_SHARED_LANDMARKS = {"inside_128": "inside"}
MASKS_LANDMARKS = 478  # mediapipe FaceLandmarker v2's count (468 mesh points and 10 iris points)


def _masks_photo():
    """A deterministic RGB photo: horizontal and vertical ramps, a checkerboard of 8-pixel squares and a product
    pattern, so that resizing has edges and gradients to work on."""
    import numpy as np

    width, height = MASKS_PHOTO
    y, x = np.mgrid[0:height, 0:width]
    red = (x * 255) // (width - 1)
    green = (y * 255) // (height - 1)
    blue = ((x // 8 + y // 8) % 2) * 160 + (x * y) % 61
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def _quarter(values):
    import numpy as np

    return np.round(np.asarray(values, dtype=np.float64) * 4) / 4


def _masks_landmarks(util, case):
    """478 landmarks (x, y) in pixels. Their 36 silhouette ids on an ellipse, clockwise from the top as mediapipe's
    face oval runs (id 10 at the top of the forehead, 152 at the chin); their 20 lip ids on the outer lip line, the
    upper one from corner 61 to corner 291 and the lower one between them; every other point on a spiral inside the
    face. Every value a multiple of 1/4 (exact in float32)."""
    import numpy as np

    _, centre, radii, (lip_left, lip_right), lip_y, (lip_top, lip_bottom) = MASKS_CASES[case]
    (cx, cy), (rx, ry) = centre, radii
    points = np.zeros((MASKS_LANDMARKS, 2))
    index = np.arange(MASKS_LANDMARKS)
    radius = 0.7 * np.sqrt((index + 0.5) / MASKS_LANDMARKS)
    angle = index * 2.399963229728653  # the golden angle
    points[:, 0] = _quarter(cx + radius * rx * np.cos(angle))
    points[:, 1] = _quarter(cy + radius * ry * np.sin(angle))
    silhouette = list(util.silhouette_ids)
    turn = 2 * np.pi * np.arange(len(silhouette)) / len(silhouette)
    points[silhouette, 0] = _quarter(cx + rx * np.sin(turn))
    points[silhouette, 1] = _quarter(cy - ry * np.cos(turn))
    quarter_turn = len(silhouette) // 4  # the exact extremes: right, bottom, left, top
    for k, (x, y) in zip(range(0, len(silhouette), quarter_turn),
                         ((cx, cy - ry), (cx + rx, cy), (cx, cy + ry), (cx - rx, cy))):
        points[silhouette[k]] = (x, y)
    lips = list(util.lip_ids)
    upper, lower = lips[:11], lips[11:]  # 61 .. 291 along the upper lip; 146 .. 375 along the lower one
    t = np.linspace(0.0, 1.0, len(upper))
    points[upper, 0] = _quarter(lip_left + t * (lip_right - lip_left))
    points[upper, 1] = _quarter(lip_y - (lip_y - lip_top) * np.sin(np.pi * t))
    t = np.arange(1, len(lower) + 1) / (len(lower) + 1)
    points[lower, 0] = _quarter(lip_left + t * (lip_right - lip_left))
    points[lower, 1] = _quarter(lip_y + (lip_bottom - lip_y) * np.sin(np.pi * t))
    points[upper[len(upper) // 2]] = ((lip_left + lip_right) / 2, lip_top)  # id 0, the top of the upper lip
    points[lower[len(lower) // 2]] = ((lip_left + lip_right) / 2, lip_bottom)  # id 17, the bottom of the lower lip
    width, height = MASKS_PHOTO
    assert (points >= 0).all() and (points[:, 0] <= width).all() and (points[:, 1] <= height).all(), case
    assert np.array_equal(points.astype(np.float32).astype(np.float64), points), case
    return points


class _OneFace:
    """insightface's FaceAnalysis as ImageProcessor builds and calls it (image_processor.py:100-105,124): one face
    covering the photo, zero embedding. Nothing in the masks depends on it."""

    def __init__(self, **kwargs):
        self.models = {}

    def prepare(self, **kwargs):
        pass

    def get(self, bgr):
        import numpy as np

        return [{"bbox": [0, 0, bgr.shape[1], bgr.shape[0]], "embedding": np.zeros(512, dtype=np.float32)}]


def _masks_case(processor_module, util, photo_path: Path, landmarks, resolution: int, ratio: float):
    """Their preprocess on the photo at `resolution` with these landmarks; returns their outputs and the regions
    expand_region was given and returned (lip first, then face, in get_mask's order: util.py:510-513)."""
    import contextlib
    import io
    import tempfile

    import numpy as np
    from PIL import Image

    boxes = []
    original_expand = util.expand_region

    def expand_region(region, image_w, image_h, expand_ratio=1.0):
        result = original_expand(region, image_w, image_h, expand_ratio)
        boxes.append({"given": [float(v) for v in region], "image_w": int(image_w), "image_h": int(image_h),
                      "expand_ratio": float(expand_ratio), "returned": [int(v) for v in result]})
        return result

    width, height = Image.open(photo_path).size
    saved = util.get_landmark, util.expand_region, processor_module.FaceAnalysis
    # util.get_landmark gives (np.array of [x*width, y*height] per point, height, width) (util.py:348,372-379)
    util.get_landmark = lambda file: (np.array(landmarks, dtype=np.float64), height, width)
    util.expand_region = expand_region
    processor_module.FaceAnalysis = _OneFace
    try:
        with tempfile.TemporaryDirectory() as cache, contextlib.redirect_stdout(io.StringIO()):
            # scripts/inference.py:153-164: img_size = (width, height) of the config, square there
            with processor_module.ImageProcessor((resolution, resolution), "unused") as processor:
                outputs = processor.preprocess(str(photo_path), cache, ratio)
    finally:
        util.get_landmark, util.expand_region, processor_module.FaceAnalysis = saved
    pixels, face_box, _, full, face, lip = outputs
    return {"pixels": pixels, "face_box": face_box, "full": full, "face": face, "lip": lip}, boxes


MASKS_QUIRKS = [
    "landmarks: mediapipe FaceLandmarker v2 (478 points), exactly one face, each point (x * width, y * height) of its "
    "normalised output in float64, not rounded (util.py:344-348,361-379)",
    "face box: bounding box of the 36 silhouette ids, lip box of the 20 lip ids (util.py:323-329), corners np.round "
    "(half to even) (util.py:418-420,464-466)",
    "expand_region (util.py:529-564): centre by floor division of the sum, side (max-min)*ratio, half side by floor "
    "division; a box past an edge is shifted back by the overshoot, left/top first, then right/bottom (so a box "
    "larger than the photo ends with a negative start); face ratio = config face_expand_ratio 1.2 (default.yaml:41, "
    "passed at image_processor.py:141), lip ratio 2.0 (get_lip_mask's default, get_mask passes none: util.py:407,510)",
    "box fill: uint8 zeros (height, width), the slice [min_y:max_y, min_x:max_x] set to 255, numpy slicing (a negative "
    "start counts from the end) (util.py:423-425,469-471); written as PNG and read back unchanged (8-bit grey)",
    "blur (util.py:589-609): cv2.resize to 64x64 (dsize fixed, INTER_LINEAR, aspect not kept), cv2.GaussianBlur "
    "kernel 51 for the face, 31 for the lips (util.py:516,519), sigma 0 (OpenCV derives 8 and 5), then cv2.normalize "
    "NORM_MINMAX to 0..255 in uint8",
    "full ('pose') mask: (1 - blurred_face/255) * 255 in float64, astype uint8: truncation (util.py:627-631)",
    "face mask: cv2.subtract(blurred_face, blurred_lip), saturating at 0 (util.py:662); lip mask: the blurred lip box",
    "per level (image_processor.py:71-98,156-180): each 64x64 PNG opened by PIL (mode L), torchvision Resize to "
    "(R/8, R/8), (R/16, ..), (R/32, ..), (R/64, ..) = PIL bilinear (antialiased), ToTensor /255 in float32, then "
    ".view(1, -1)",
    "reference pixels (image_processor.py:56-62,118-121): PIL RGB, torchvision Resize(img_size) with the (w, h) "
    "tuple = PIL bilinear to R x R (aspect not kept), ToTensor /255, Normalize(0.5, 0.5) in float32",
    "face-locator input (image_processor.py:64-69,141-146): the sharp face box PNG opened by PIL and converted to RGB, "
    "Resize(img_size) = PIL bilinear to R x R, ToTensor /255 in float32",
]


def cmd_masks(args) -> None:
    missing = [name for name, package in (("opencv-python-headless==4.9.0.80", "cv2"), ("pillow", "PIL"),
                                          ("torchvision==0.28.0", "torchvision"))
               if importlib.util.find_spec(package) is None]
    if missing:
        raise ToolError(f"masks runs Hallo's image preparation, which needs the real {', '.join(missing)}: "
                        f"{sys.executable} -m pip install {' '.join(missing)}")
    root = hallo_checkout()
    _, served = import_hallo(root)
    import cv2
    import numpy as np
    import PIL
    import torch
    import torchvision
    from omegaconf import OmegaConf
    from PIL import Image
    from safetensors.torch import save_file

    processor_module = sys.modules["hallo.datasets.image_processor"]
    util = sys.modules["hallo.utils.util"]
    ratio = float(OmegaConf.load(default_config(root)).face_expand_ratio)
    commit = hallo_commit(root)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    photo = _masks_photo()
    tensors = {"in.image": torch.from_numpy(photo.copy())}
    cases = {}
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        photo_path = Path(folder) / "photo.png"  # PNG: read back unchanged by PIL; the cache names come from "photo"
        Image.fromarray(photo).save(photo_path)
        reference_pixels = {}
        for case, (resolution, *_) in MASKS_CASES.items():
            landmarks = _masks_landmarks(util, case)
            found, boxes = _masks_case(processor_module, util, photo_path, landmarks, resolution, ratio)
            shared = MASKS_SHARED_LANDMARKS.get(case)
            if shared is None:
                tensors[f"in.{case}.landmarks"] = torch.from_numpy(landmarks.astype(np.float32))
            elif not np.array_equal(landmarks, tensors[f"in.{shared}.landmarks"].numpy()):
                raise ToolError(f"{case}: its landmarks are not {shared}'s")
            pixels = found["pixels"]
            if resolution in reference_pixels:
                if not torch.equal(pixels, reference_pixels[resolution]):
                    raise ToolError(f"{case}: the photo's pixels differ from another case's at {resolution}")
            reference_pixels.setdefault(resolution, pixels)
            if case in MASKS_WITH_PIXELS:
                tensors[f"out.{case}.pixels"] = pixels
            if case in MASKS_WITH_FACE_BOX:
                tensors[f"out.{case}.face_box"] = found["face_box"]
            levels = []
            for region in ("full", "face", "lip"):
                for level, mask in enumerate(found[region]):
                    side = resolution // 8 >> level
                    if tuple(mask.shape) != (1, side * side):
                        raise ToolError(f"{case}: their {region} mask at level {level} has shape {tuple(mask.shape)}")
                    tensors[f"out.{case}.{region}_mask.{level}"] = mask
                    levels.append(side) if region == "full" else None
            lip, face = boxes
            cases[case] = {"resolution": resolution, "landmarks": f"in.{shared or case}.landmarks",
                           "levels": levels, "face_expand_ratio": ratio,
                           "face_box": face, "lip_box": lip,
                           "with": sorted({k.split(".")[2] for k in tensors if k.startswith(f"out.{case}.")})}
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    path = out / "masks.safetensors"
    save_file(tensors, str(path), metadata={"hallo_commit": commit or "unknown"})
    doc = {
        "fixture": "masks",
        "hallo_commit": commit,
        "call": "ImageProcessor((R, R), ...).preprocess(photo.png, cache_dir, face_expand_ratio) "
                "(hallo/datasets/image_processor.py:107-182, as scripts/inference.py:153-164 calls it), landmarks "
                "handed in through util.get_landmark, one face with a zero embedding through FaceAnalysis",
        "versions": {"opencv": cv2.__version__, "pillow": PIL.__version__,
                     "torchvision": torchvision.__version__.split("+")[0], "numpy": np.__version__,
                     "torch": torch.__version__.split("+")[0]},
        "photo": {"width": MASKS_PHOTO[0], "height": MASKS_PHOTO[1], "dtype": "uint8", "layout": "HxWx3 RGB"},
        "landmarks": "float32 (N, 2) in the photo's pixels, x then y; every value a multiple of 1/4, so exact; their "
                     "code holds them as float64",
        "regions": {"full": "their sep_background (pixel_values_full_mask, the 'pose' region)",
                    "face": "their sep_face (pixel_values_face_mask)", "lip": "their sep_lip (pixel_values_lip_mask)"},
        "cases": cases,
        "quirks": MASKS_QUIRKS,
        "tensors": {k: f"{str(v.dtype).removeprefix('torch.')} {list(v.shape)}" for k, v in tensors.items()},
    }
    text = json.dumps(doc, indent=1)
    text = re.sub(r"\[[\d\s,.\-]*\]", lambda m: "[" + " ".join(m.group(0)[1:-1].split()) + "]", text)  # one line
    (out / "masks.json").write_text(text + "\n")
    for case, info in cases.items():
        print(f"  {case:11s} R={info['resolution']:<4d} face box {info['face_box']['given']} -> "
              f"{info['face_box']['returned']}, lip box {info['lip_box']['given']} -> {info['lip_box']['returned']}")
    print(f"opencv {cv2.__version__}, pillow {PIL.__version__}, torchvision {torchvision.__version__}")
    print(f"stand-in modules served: {', '.join(sorted(served)) or 'none'}")
    print(f"wrote {path} ({path.stat().st_size:,} bytes, {len(tensors)} tensors) and masks.json, "
          f"Hallo {commit or 'unknown'}")


# The tiny wav2vec2 of the audio fixture: base's convolution stack (320 samples a step), 3 layers of width 16.
AUDIO_WAV2VEC2 = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                      conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
AUDIO_SECONDS, AUDIO_FPS, AUDIO_CLIP = 0.22, 25, 4  # 6 frames, padded to 8


def cmd_audio(args) -> None:
    """Their audio features for a short wave on a tiny random wav2vec2, as AudioProcessor.preprocess computes them
    (hallo/datasets/audio_processor.py:104-125: the feature extractor's whole-clip normalisation, zero padding to
    whole clips of 640 samples a frame, their Wav2VecModel with seq_len, hidden_states[1:]), then the +-2 window
    (scripts/inference.py:95-114). The wav file's reading (librosa) and the vocal separation are left out: the
    samples are given at 16 kHz. Writes audio_features.safetensors/.json and the model as wav2vec2_tiny/."""
    import math

    import torch
    import transformers
    from einops import rearrange
    from safetensors.torch import save_file
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor

    root = hallo_checkout()
    inference, _ = import_hallo(root)
    wav2vec = importlib.import_module("hallo.models.wav2vec")
    torch.set_num_threads(1)
    g = _generator(args.seed, "audio_features")
    model = wav2vec.Wav2VecModel(Wav2Vec2Config(**AUDIO_WAV2VEC2))
    _randomise(model, g)
    model.eval()
    rate = 16_000
    t = torch.arange(int(AUDIO_SECONDS * rate)) / rate
    wave = (0.3 * torch.sin(2 * math.pi * 220 * t) + 0.05 * _randn(g, len(t))).numpy().astype("float32")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=rate, padding_value=0.0, do_normalize=True,
                                         return_attention_mask=False)
    # audio_processor.py:106-115, step by step
    features = torch.from_numpy(extractor(wave, sampling_rate=rate).input_values[0]).float()
    seq_len = math.ceil(len(features) / rate * AUDIO_FPS)
    frames = seq_len
    if seq_len % AUDIO_CLIP:
        features = torch.nn.functional.pad(features, (0, (AUDIO_CLIP - seq_len % AUDIO_CLIP) * (rate // AUDIO_FPS)))
        seq_len += AUDIO_CLIP - seq_len % AUDIO_CLIP
    with torch.no_grad():
        states = model(features[None], seq_len=seq_len, output_hidden_states=True).hidden_states
    audio_emb = rearrange(torch.stack(states[1:], dim=1).squeeze(0), "b s d -> s b d")
    windows = inference.process_audio_emb(audio_emb)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "wav2vec2_tiny", safe_serialization=True)
    save_file({"in.wave": torch.from_numpy(wave), "out.audio_emb": audio_emb.contiguous(),
               "out.windows": windows.contiguous()}, str(out / "audio_features.safetensors"))
    report = {"fixture": "audio_features", "hallo_commit": hallo_commit(root), "seed": args.seed,
              "torch": torch.__version__.split("+")[0], "transformers": transformers.__version__, "threads": 1,
              "wav2vec2": AUDIO_WAV2VEC2, "sample_rate": rate, "fps": AUDIO_FPS, "clip_length": AUDIO_CLIP,
              "frames": frames, "padded_frames": seq_len,
              "call": "audio_processor.py:106-125 (feature extractor, padding, Wav2VecModel(seq_len), "
                      "hidden_states[1:]) and inference.py:95-114 (window)",
              "tensors": {"in.wave": list(wave.shape), "out.audio_emb": list(audio_emb.shape),
                          "out.windows": list(windows.shape)}}
    (out / "audio_features.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out / 'audio_features.safetensors'}: {frames} frames padded to {seq_len}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("keys", help="write every state-dict key of Hallo's Net with its shape")
    keys.add_argument("--out", required=True, help="JSON file to write (.gz: gzip'd)")
    keys.add_argument("--config", default=None,
                      help="Hallo config whose unet_additional_kwargs to use, relative to HALLO_PATH (default: "
                           "configs/inference/default.yaml, as scripts/inference.py; for Hallo2 "
                           "configs/inference/long.yaml, as scripts/inference_long.py)")
    keys.add_argument("--digest-out", default=None,
                      help="also write the counts and a sha256 of the sorted key:shape lines to this JSON file")
    keys.set_defaults(run=cmd_keys)
    fixtures = sub.add_parser("fixtures", help="write golden fixtures of Hallo's small modules (tiny, seeded, fp32)")
    fixtures.add_argument("--out", default="tests/fixtures/hallo", help="folder to write (default: %(default)s)")
    fixtures.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (%(default)s)")
    fixtures.set_defaults(run=cmd_fixtures)
    calls = sub.add_parser("calls", help="write whole-model fixtures: the reference bank, one guided denoiser call, "
                                          "two pipeline steps, and the tiny Net as tiny_net.pth")
    calls.add_argument("--out", default="tests/fixtures/hallo", help="folder to write (default: %(default)s)")
    calls.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (%(default)s)")
    calls.set_defaults(run=cmd_calls)
    masks = sub.add_parser("masks", help="write what Hallo's preparation of the reference photo gives (pixels, face "
                                          "box, region masks per level) for a synthetic photo and landmarks")
    masks.add_argument("--out", default="tests/fixtures/hallo", help="folder to write (default: %(default)s)")
    masks.set_defaults(run=cmd_masks)
    audio = sub.add_parser("audio", help="write Hallo's audio features (wav2vec2 at the video rate, windows) for a "
                                          "short wave on a tiny random wav2vec2, and that model")
    audio.add_argument("--out", default="tests/fixtures/hallo", help="folder to write (default: %(default)s)")
    audio.add_argument("--seed", type=int, default=0, help="seed of the random weights and the wave (%(default)s)")
    audio.set_defaults(run=cmd_audio)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ToolError as error:
        print(f"hallo_reference.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
