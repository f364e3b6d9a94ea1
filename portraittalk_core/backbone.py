"""The Stable Diffusion backbone: VAE, CLIP text encoder and tokenizer, base UNet, noise schedule.

Loaded from a local diffusers folder or a single-file SD1.5 checkpoint (.safetensors), never from a
hub, and never by unpickling. ``random_backbone`` builds one from a config with random weights, for
the tiny test model and for benchmarks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .config import PortraitTalkConfig, sd15
from .errors import WeightsError
from .io.safetensors import check_state_dict, read_metadata, read_state_dict
from .tokenizers import make_tokenizer

# Stable Diffusion 1.5's training noise schedule (scheduler_config.json of the original release).
SD15_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                     beta_schedule="scaled_linear", steps_offset=1, clip_sample=False,
                     set_alpha_to_one=False, prediction_type="epsilon")


@dataclass
class Backbone:
    vae: AutoencoderKL
    text_encoder: CLIPTextModel | None   # None for a text-free model (config context "identity": Hallo's)
    tokenizer: CLIPTokenizer | None
    unet: UNet2DConditionModel
    schedule: dict = field(default_factory=lambda: dict(SD15_SCHEDULE))

    def to(self, device, dtype=None) -> "Backbone":
        for module in (self.vae, self.text_encoder, self.unet):
            if module is not None:
                module.to(device=device, dtype=dtype)
        return self

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> padded token ids on the text encoder's device. Over-long prompts are cut, as SD1.5 does."""
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.text_encoder.config.max_position_embeddings,
                             truncation=True, return_tensors="pt").input_ids
        return ids.to(self.text_encoder.device)

    @torch.no_grad()  # not inference_mode: training uses the embeddings in autograd graphs
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> CLIP last hidden states (N, 77, D)."""
        return self.text_encoder(self.token_ids(prompts))[0]

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pixels in [-1, 1] -> scaled latents (the posterior's mean, as SD pipelines do)."""
        vae = self.vae
        latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean
        return latents * vae.config.scaling_factor

    def save_folder(self, folder) -> Path:
        """Write the backbone as a diffusers folder (unet/, vae/, text_encoder/, tokenizer/), safetensors only."""
        folder = Path(folder)
        for part in ("vae", "text_encoder", "unet"):
            getattr(self, part).save_pretrained(folder / part, safe_serialization=True)
        self.tokenizer.save_pretrained(folder / "tokenizer")
        return folder


def random_backbone(config: PortraitTalkConfig, seed: int = 0) -> Backbone:
    """A backbone of the config's shapes with random weights (tests, benchmarks)."""
    torch.manual_seed(seed)
    tokenizer = make_tokenizer(config.tokenizer) if config.name != "sd15" else None
    text_config = dict(config.text_encoder)
    if tokenizer is not None:
        text_config["vocab_size"] = max(text_config["vocab_size"], len(tokenizer))
        text_config.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    else:
        # SD1.5's real vocabulary is not shipped; random weights only need token ids in range.
        tokenizer = make_tokenizer("byte_level")
    return Backbone(
        vae=AutoencoderKL(**config.vae).eval(),
        text_encoder=CLIPTextModel(CLIPTextConfig(**text_config)).eval(),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**config.unet).eval(),
    )


BACKBONE_PARTS = ("vae", "text_encoder", "unet")


def backbone_tensors(backbone: Backbone, prefix: str = "") -> dict[str, torch.Tensor]:
    """The backbone's weights under ``<prefix><part>.``, for a safetensors file of our own."""
    return {f"{prefix}{part}.{k}": v for part in BACKBONE_PARTS
            for k, v in getattr(backbone, part).state_dict().items()}


def backbone_from_tensors(config: PortraitTalkConfig, tensors: dict[str, torch.Tensor], prefix: str = "",
                          dtype=torch.float32) -> Backbone:
    """A backbone of ``config``'s shapes (and tokenizer) with the given weights: our own small backbones
    (the embedded demo model), trained from scratch by ``portraittalk train --stage vae|base``."""
    backbone = random_backbone(config)
    for part in BACKBONE_PARTS:
        module = getattr(backbone, part)
        found = {k[len(prefix) + len(part) + 1:]: v for k, v in tensors.items() if k.startswith(f"{prefix}{part}.")}
        check_state_dict(module.state_dict(), found, f"the embedded backbone's {part}")
        module.load_state_dict(found)
        module.to(dtype)
    return backbone


def save_backbone(backbone: Backbone, config: PortraitTalkConfig, path) -> Path:
    """A backbone-only safetensors file (format portraittalk-backbone), e.g. the output of stages vae/base."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in backbone_tensors(backbone).items()}
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={"format": "portraittalk-backbone", "config": config.to_json(),
                                               "tokenizer": config.tokenizer})
    partial.replace(path)
    return path


def _require(path: Path, what: str, fix: str) -> Path:
    if not path.exists():
        raise WeightsError(f"{what} not found: looked for '{path.name}' in '{path.parent}'", fix)
    return path


def load_backbone(path, tokenizer_folder=None, dtype=torch.float32) -> Backbone:
    """A Stable Diffusion 1.5 backbone from a diffusers folder or a single-file .safetensors checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _load_diffusers_folder(path, dtype)
    own = _own_backbone(path, dtype)
    if own is not None:
        return own
    if path.suffix.lower() != ".safetensors":
        if path.exists():
            raise WeightsError(f"'{path}' is not a .safetensors checkpoint; pickled checkpoints (.ckpt, .pt, "
                               ".bin) are never loaded", "convert it to .safetensors or use a diffusers folder")
    _require(path, "SD1.5 checkpoint", "pass --backbone pointing at an SD1.5 .safetensors file or diffusers folder")
    return _load_single_file(path, tokenizer_folder, dtype)


def _own_backbone(path: Path, dtype) -> Backbone | None:
    """A backbone file of ours, or a PortraitTalk weights file with a backbone inside; None otherwise."""
    if path.suffix.lower() != ".safetensors" or not path.exists():
        return None
    meta = read_metadata(path)
    if meta.get("format") == "portraittalk-backbone":
        return backbone_from_tensors(PortraitTalkConfig.from_json(meta["config"]), read_state_dict(path), "", dtype)
    if meta.get("format") == "portraittalk" and meta.get("backbone"):
        return backbone_from_tensors(PortraitTalkConfig.from_json(meta["config"]), read_state_dict(path),
                                     "backbone.", dtype)
    return None


def _load_diffusers_folder(folder: Path, dtype) -> Backbone:
    fix = (f"'{folder}' must be a diffusers Stable Diffusion 1.5 folder (unet/, vae/, text_encoder/, "
           "tokenizer/, scheduler/) with .safetensors weights")
    for sub, weights in [("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
                         ("text_encoder", "model.safetensors")]:
        _require(folder / sub / "config.json", f"{sub} config", fix)
        candidates = [folder / sub / weights, folder / sub / weights.replace(".safetensors", ".fp16.safetensors")]
        if not any(c.exists() for c in candidates):
            _require(candidates[0], f"{sub} weights", fix)
    if not (folder / "tokenizer" / "tokenizer.json").exists():
        _require(folder / "tokenizer" / "vocab.json", "tokenizer vocabulary", fix)
    variant = None if (folder / "unet" / "diffusion_pytorch_model.safetensors").exists() else "fp16"
    kw = dict(local_files_only=True, use_safetensors=True, torch_dtype=dtype, variant=variant)
    schedule = dict(SD15_SCHEDULE)
    sched_file = folder / "scheduler" / "scheduler_config.json"
    if sched_file.exists():
        saved = json.loads(sched_file.read_text())
        schedule.update({k: v for k, v in saved.items() if k in SD15_SCHEDULE})
    try:
        return Backbone(
            vae=AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw).eval(),
            text_encoder=CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw).eval(),
            tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True),
            unet=UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw).eval(),
            schedule=schedule,
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise WeightsError(f"could not load the backbone from '{folder}': {err}", fix) from err


def _load_single_file(path: Path, tokenizer_folder, dtype) -> Backbone:
    """Convert an original-layout (LDM) SD1.5 checkpoint with diffusers' own converters."""
    from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint)
    from safetensors.torch import load_file

    try:
        checkpoint = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"'{path}' is not a readable safetensors file ({err})",
                           "re-download or re-convert the checkpoint") from err
    if "model.diffusion_model.input_blocks.0.0.weight" not in checkpoint:
        raise WeightsError(f"'{path}' is not a Stable Diffusion 1.x checkpoint (no model.diffusion_model.* keys)",
                           "use an SD1.5 checkpoint, or a diffusers folder")
    width = checkpoint["model.diffusion_model.input_blocks.0.0.weight"].shape[0]
    context = checkpoint.get("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")
    if width != 320 or context is None or context.shape[1] != 768:
        raise WeightsError(f"'{path}' is not an SD1.5-family checkpoint (UNet width {width}, "
                           f"text width {None if context is None else context.shape[1]})",
                           "PortraitTalk needs an SD1.5 checkpoint; SDXL, SD2 and Flux are not supported")
    tokenizer_folder = Path(tokenizer_folder) if tokenizer_folder else None
    if tokenizer_folder is None:
        raise WeightsError(f"a single-file checkpoint ('{path.name}') carries no CLIP tokenizer",
                           "pass --tokenizer with a folder holding SD1.5's vocab.json and merges.txt "
                           "(e.g. ComfyUI's comfy/sd1_tokenizer)")
    _require(tokenizer_folder / "vocab.json", "CLIP tokenizer vocabulary",
             "pass --tokenizer with a folder holding vocab.json and merges.txt")
    config = sd15()
    unet = UNet2DConditionModel(**config.unet)
    unet.load_state_dict(convert_ldm_unet_checkpoint(checkpoint, unet.config))
    vae = AutoencoderKL(**config.vae)
    vae.load_state_dict(convert_ldm_vae_checkpoint(checkpoint, vae.config))
    text_encoder = CLIPTextModel(CLIPTextConfig(**config.text_encoder))
    text_state = convert_ldm_clip_checkpoint(checkpoint)
    text_encoder.load_state_dict(text_state, strict=False)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_folder), local_files_only=True)
    return Backbone(vae=vae.to(dtype).eval(), text_encoder=text_encoder.to(dtype).eval(), tokenizer=tokenizer,
                    unet=unet.to(dtype).eval())


# -- a text-free model's backbone: a UNet file and a VAE (Hallo's, converted) ---------------------------------------
def load_unet_backbone(unet_path, vae_path, config: PortraitTalkConfig, dtype=torch.float32) -> Backbone:
    """The backbone of a model with no text path (config ``context`` "identity"): the UNet from a single-file UNet
    in LDM names (``portraittalk convert hallo`` writes ``hallo_unet.safetensors``; a whole SD1.5 checkpoint serves
    too) at ``config``'s shapes, the VAE from ``vae_path``, and no text encoder."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet_path = _require(Path(unet_path).expanduser(), "UNet file",
                         "pass --backbone with the hallo_unet.safetensors that portraittalk convert hallo wrote")
    checkpoint = read_state_dict(unet_path)
    if "model.diffusion_model.input_blocks.0.0.weight" not in checkpoint:
        raise WeightsError(f"'{unet_path}' holds no UNet in single-file names (no model.diffusion_model.* keys)",
                           "pass the hallo_unet.safetensors that portraittalk convert hallo wrote")
    unet = UNet2DConditionModel(**config.unet)
    state = convert_ldm_unet_checkpoint(checkpoint, dict(config.unet))
    check_state_dict(unet.state_dict(), state, f"'{unet_path}'")
    unet.load_state_dict(state)
    return Backbone(vae=load_vae(vae_path, config, dtype), text_encoder=None, tokenizer=None,
                    unet=unet.to(dtype).eval())


def load_vae(path, config: PortraitTalkConfig, dtype=torch.float32) -> AutoencoderKL:
    """A VAE from a diffusers folder (config.json, diffusion_pytorch_model.safetensors: stabilityai/sd-vae-ft-mse)
    or one .safetensors file in diffusers' or the original (LDM) names."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    fix = ("pass --vae with Stable Diffusion's VAE: a diffusers folder or its diffusion_pytorch_model.safetensors "
           "(stabilityai/sd-vae-ft-mse for Hallo)")
    if path is None:
        raise WeightsError("this model's backbone is a UNet file alone, and no VAE was given", fix)
    path = Path(path).expanduser()
    if path.is_dir():
        path = _require(path / "diffusion_pytorch_model.safetensors", "VAE weights", fix)
    state = read_state_dict(_require(path, "VAE file", fix))
    vae = AutoencoderKL(**config.vae)
    if "decoder.up.0.block.0.norm1.weight" in {k.split("first_stage_model.")[-1] for k in state}:  # LDM names
        state = convert_ldm_vae_checkpoint(state, vae.config)
    check_state_dict(vae.state_dict(), state, f"'{path}'")
    vae.load_state_dict(state)
    return vae.to(dtype).eval()
