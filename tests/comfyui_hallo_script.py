"""Hallo's tiny Net in a real ComfyUI: run by tests/test_comfyui.py under COMFYUI_PYTHON (a Python with
ComfyUI's requirements and this project's), it prints as JSON what it measured; the test holds the figures to bounds.

``python comfyui_hallo_script.py COMFYUI_PATH PROJECT_ROOT FOLDER``, FOLDER holding what ``portraittalk convert hallo
--config hallo_tiny`` made of tests/fixtures/hallo/tiny_net.pth:

- hallo_unet.safetensors is loaded by ComfyUI's stock UNet loader (``comfy.sd.load_diffusion_model``, what UNETLoader
  calls); ComfyUI detects SD1.5 only at its own size, so SD1.5's model class at the fixtures' size is registered
  first, and nothing else of the loading differs;
- portraittalk_hallo.safetensors is loaded as the ComfyUI host loads PortraitTalk weights (no base UNet), and the
  MODEL patched with it by the ComfyUI host (comfyui/host.patch_model, comfyui/hallo.py), model sampling included;
- ``unet_call``: the fixture's own conditioning (their float16 banks, tokens, audio tokens, masks, residual), one
  step of ComfyUI's CFG guider and "ddim" sampler from the fixture's noise; the UNet's raw output captured per chunk;
- ``schedule``: the patched MODEL's sigmas as alphas_cumprod, and the "simple" scheduler's timesteps;
- ``two_steps``: the conditioning made by the host from the fixture's raw inputs as a graph makes it
  (comfyui/model.prepare_hallo_model, set_hallo_clip), two steps of the same sampler from the fixture's noise; and,
  for the bound, the second step again from their first step's latents with their conditioning (teacher-forced);
- ``loop``: the whole clip loop of PortraitTalk Hallo Sampler (comfyui/hallo_sampling.sample_hallo) against the
  diffusers host's (``PortraitTalkPipeline`` on the same two files, a tiny random VAE and the fixture's wav2vec2) on
  the same photo, speech and noise (the diffusers host's draws handed to ComfyUI's ``prepare_noise``): the frames,
  the reference rows of each clip, and the frames again with each clip's reference rows the diffusers host's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COMFYUI, ROOT, FOLDER = (Path(arg) for arg in sys.argv[1:4])
sys.path.insert(0, str(COMFYUI))   # first: ComfyUI's `nodes` module, not the pack's `nodes/` package
sys.path.append(str(ROOT))

import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True   # as the ComfyUI tests run it (--cpu); read when comfy.model_management loads

import comfy.model_sampling  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.supported_models  # noqa: E402
import torch  # noqa: E402
from comfy.ldm.modules.attention import optimized_attention  # noqa: E402
from einops import rearrange  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import numpy as np  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402

import portraittalk_core.comfyui.hallo_sampling as hallo_sampling  # noqa: E402
from portraittalk_core.assets import default_reference  # noqa: E402
from portraittalk_core.comfyui.backbone import comfy_vae  # noqa: E402
from portraittalk_core.comfyui.bundle import PortraitTalkBundle  # noqa: E402
from portraittalk_core.comfyui.hallo import (NEGATIVE, POSITIVE, bank_and_prefix, face_conditioning,  # noqa: E402
                                             hallo_run, structure_patch)
from portraittalk_core.comfyui.host import check_model_family, patch_model  # noqa: E402
from portraittalk_core.comfyui.model import prepare_hallo_model, prepare_patched_model, set_hallo_clip  # noqa: E402
from portraittalk_core.config import hallo_tiny  # noqa: E402
from portraittalk_core.errors import InputError  # noqa: E402
from portraittalk_core.face import mediapipe_available  # noqa: E402
from portraittalk_core.generation.settings import GenerationSettings  # noqa: E402
from hallo_fixtures import RawEmbeddingDetector  # noqa: E402  (this script's own folder, tests/)
from portraittalk_core.models.audio_block import REGIONS  # noqa: E402
from portraittalk_core.pipeline import PortraitTalkPipeline  # noqa: E402
from portraittalk_core.weights import load_model  # noqa: E402

# mediapipe (the diffusers host's landmarks in ``loop``) imported here, not first inside main: an optional import that
# fails inside it keeps the frames importing it alive, and with them main's patched models until exit.
mediapipe_available()
FIXTURES = ROOT / "tests" / "fixtures" / "hallo"
SCALE = 3.5
REFS, LEVELS = 3, 4   # the fixtures' reference pass [photo, 2 motion frames]; their UNet's levels
STEPS = 40


class TinyHallo(comfy.supported_models.SD15):
    """SD1.5's model class at the fixtures' size (32 channels, cross-attention width 32, 8 heads)."""

    unet_config = {"context_dim": 32, "model_channels": 32, "use_linear_in_transformer": False,
                   "adm_in_channels": None, "use_temporal_attention": False}


def parts(name: str) -> dict[str, dict[str, torch.Tensor]]:
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(FIXTURES / f"{name}.safetensors").items():
        part, rest = key.split(".", 1)
        found.setdefault(part, {})[rest] = value
    return found


def to_comfy(latents: torch.Tensor) -> torch.Tensor:
    """diffusers' (1, C, F, h, w) -> ComfyUI's frames-as-batch (F, C, h, w)."""
    return rearrange(latents[0], "c f h w -> f c h w")


def to_diffusers(latents: torch.Tensor) -> torch.Tensor:
    return rearrange(latents, "f c h w -> 1 c f h w")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


class RawOutputs:
    """The UNet's raw output (v) of every model call, by chunk, and the timesteps it was given."""

    def __init__(self, patched):
        self.calls: list[dict[int, torch.Tensor]] = []
        self.timesteps: list[float] = []
        self.handle = patched.model.diffusion_model.register_forward_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs, output):
        chunks = kwargs["transformer_options"]["cond_or_uncond"]
        rows = output.detach().float().unflatten(0, (len(chunks), -1))
        call = dict(zip(chunks, rows))
        if self.calls and not set(call) & set(self.calls[-1]):   # the branches in separate batches: one step
            self.calls[-1].update(call)
        else:
            self.calls.append(call)
            self.timesteps.append(float(args[1].flatten()[0]))

    def guided(self, step: int) -> torch.Tensor:
        """The step's guided v in diffusers' layout: uncond + scale (cond - uncond), as their pipeline guides."""
        call = self.calls[step]
        return to_diffusers(call[NEGATIVE] + SCALE * (call[POSITIVE] - call[NEGATIVE]))

    def row(self, step: int, chunk: int) -> torch.Tensor:
        return to_diffusers(self.calls[step][chunk])


def sample(patched, positive, negative, noise, latent, sigmas):
    """ComfyUI's CFG guider and "ddim" sampler (euler) over ``sigmas``: (raw outputs, the latents entering each step
    in ComfyUI's space, the final latents in ComfyUI's space)."""
    guider = comfy.samplers.CFGGuider(patched)
    guider.set_conds(positive, negative)
    guider.set_cfg(SCALE)
    raw, entering = RawOutputs(patched), []
    try:
        samples = guider.sample(noise, latent, comfy.samplers.sampler_object("ddim"), sigmas, disable_pbar=True,
                                seed=0, callback=lambda i, denoised, x, total: entering.append(x.detach().clone()))
    finally:
        raw.handle.remove()
    return raw, entering, patched.model.process_latent_in(samples)


def unscaled(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """ComfyUI's latents at ``sigma`` (x0 + sigma noise) -> diffusers' (sqrt(a) x0 + sqrt(1 - a) noise)."""
    return x / (1 + sigma ** 2) ** 0.5


def fixture_run(found: dict) -> tuple[object, torch.Tensor, list, list]:
    """unet_call's own conditioning: (run, face-locator residual, positive, negative)."""
    inputs = found["in"]
    frames = inputs["sample"].shape[2]
    record = {f"{name}.attn1": rearrange(rows, "(b r) n c -> b (r n) c", r=REFS)
              for name, rows in found["bank"].items()}
    bank, prefix = bank_and_prefix(record, REFS)
    masks = {region: [inputs[f"{region}_mask.{level}"][:frames] for level in range(LEVELS)] for region in REGIONS}
    run = hallo_run(bank, prefix, masks, inputs["audio_embedding"][1], base_attention=optimized_attention)
    residual = rearrange(inputs["mask_cond_fea"][1], "c f h w -> f c h w")
    return (run, residual, *face_conditioning(inputs["encoder_hidden_states"]))


def host_model(model, bundle, inputs: dict):
    """two_steps' raw inputs through what a graph runs (comfyui/model.py): the photo's conditioning (face tokens,
    face locator, masks: one row, as the photo gives them), then the clip's reference pass and audio tokens."""
    masks = {region: [inputs[f"{region}_mask.{level}"][:1] for level in range(LEVELS)] for region in REGIONS}
    hallo = prepare_hallo_model(model, bundle, inputs["face_emb"], inputs["face_region"], masks)
    set_hallo_clip(hallo, bundle, inputs["ref_image_latents"], inputs["audio_windows"][0])
    return hallo


LOOP_SECONDS, LOOP_STEPS, SEED = 0.26, 2, 42   # 7 frames at 25 fps: two clips of 4, the second one padded


def loop(model) -> dict:
    """``loop`` of the module docstring. Frames in uint8 levels (theirs are uint8), rows in [-1, 1]."""
    vae_folder = FOLDER / "vae"
    torch.manual_seed(0)
    AutoencoderKL(**hallo_tiny().vae).save_pretrained(vae_folder, safe_serialization=True)
    pipe = PortraitTalkPipeline.from_pretrained(FOLDER / "portraittalk_hallo.safetensors",
                                                backbone=FOLDER / "hallo_unet.safetensors", vae=vae_folder,
                                                wav2vec2_folder=FIXTURES / "wav2vec2_tiny")
    pipe.detector = RawEmbeddingDetector()
    t = np.arange(int(LOOP_SECONDS * 16_000)) / 16_000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32), 16_000)
    settings = GenerationSettings(steps=LOOP_STEPS, seed=SEED)
    frames, their_rows = [], []
    denoise = pipe.denoise_hallo_clip

    def recording(clip, noise, rows, *args, **kwargs):
        their_rows.append(rows.clone())
        return denoise(clip, noise, rows, *args, **kwargs)

    pipe.denoise_hallo_clip = recording
    pipe([default_reference()], audio, None, settings, progress=False, on_frames=frames.append)
    theirs = torch.from_numpy(np.concatenate(frames)).double()

    bundle = PortraitTalkBundle(load_model(FOLDER / "portraittalk_hallo.safetensors"), None, None, "tiny")
    photo = pipe.prepare_hallo_inputs(default_reference(), hallo_tiny().resolution)
    _, features = pipe.prepare_audio(audio, 25.0)
    vae = comfy_vae(AutoencoderKL.from_pretrained(vae_folder))
    rows_of = hallo_sampling.reference_rows

    def sample(rows) -> torch.Tensor:
        """The Hallo Sampler's frames in uint8 levels, on the diffusers host's noise; ``rows`` makes each clip's
        reference rows."""
        generator = torch.Generator("cpu").manual_seed(SEED)   # their one generator, a clip's noise at a time

        def their_noise(latent, seed):
            noise = torch.randn((1, latent.shape[1], latent.shape[0], *latent.shape[2:]), generator=generator)
            return to_comfy(noise)

        prepare_noise, comfy.sample.prepare_noise = comfy.sample.prepare_noise, their_noise
        hallo_sampling.reference_rows = rows
        try:
            return hallo_sampling.sample_hallo(model, vae, bundle, photo, features, settings, "ddim",
                                               "simple").double() * 255
        finally:
            comfy.sample.prepare_noise, hallo_sampling.reference_rows = prepare_noise, rows_of

    our_rows = []
    free = sample(lambda *args: our_rows.append(rows_of(*args)) or our_rows[-1])
    forced_rows = iter(their_rows)
    forced = sample(lambda *args: next(forced_rows))
    per_frame = lambda ours: (ours - theirs).abs().amax(dim=(1, 2, 3)).tolist()  # noqa: E731
    return {"frames": [len(theirs), len(free)], "clip_frames": hallo_tiny().clip_frames,
            "free": per_frame(free), "forced": per_frame(forced),
            "rows": [max_diff(ours, theirs) for ours, theirs in zip(our_rows, their_rows)]}


def main() -> dict:
    torch.set_num_threads(1)   # as the fixtures were made
    comfy.supported_models.models.insert(0, TinyHallo)
    model = comfy.sd.load_diffusion_model(str(FOLDER / "hallo_unet.safetensors"))
    net = load_model(FOLDER / "portraittalk_hallo.safetensors")
    check_model_family(model, net.config)
    report: dict = {"model_class": type(model.model).__name__}

    def patched_with(run, residual):
        return patch_model(model, net.animate_net, run, structure_patch(residual), 1.0, net.config.schedule)

    call = parts("unet_call")
    run, residual, positive, negative = fixture_run(call)
    theirs = patched_with(run, residual)
    sampling = theirs.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "simple", STEPS).float()
    noise = to_comfy(call["in"]["sample"][:1])
    raw, _, _ = sample(theirs, positive, negative, noise, torch.zeros_like(noise), sigmas[:2])
    report["unet_call"] = {
        "timestep": raw.timesteps[0], "v_prediction": isinstance(sampling, comfy.model_sampling.V_PREDICTION),
        "zsnr": sampling.zsnr,
        "uncond": max_diff(raw.row(0, NEGATIVE), call["out"]["noise_pred"][:1]),
        "cond": max_diff(raw.row(0, POSITIVE), call["out"]["noise_pred"][1:]),
        "guided": max_diff(raw.guided(0), call["out"]["guided"])}

    steps = parts("two_steps")
    alphas = 1 / (1 + sampling.sigmas.double() ** 2)
    their_alphas = steps["sched"]["alphas_cumprod"].double()
    report["schedule"] = {
        "timesteps": [int(t) for t in sampling.timestep(sigmas[:-1])],
        "their_timesteps": steps["sched"]["timesteps"].tolist(),
        "alphas_max_rel": ((alphas[:-1] - their_alphas[:-1]).abs() / their_alphas[:-1]).max().item(),
        "last_alpha": alphas[-1].item(), "their_last_alpha": their_alphas[-1].item(),
        "sigmas": sigmas[:3].tolist()}

    bundle = PortraitTalkBundle(net, None, None, "portraittalk_hallo.safetensors")
    try:   # PortraitTalk's own preparation reads a prompt, which this model has no path for
        prepare_patched_model(model, None, None, bundle, None, {}, 1.0, 1.0, 1.0, 1.0)
    except InputError as err:
        report["refused"] = str(err)
    ours = host_model(model, bundle, steps["in"])
    noise = to_comfy(steps["in"]["latents"])
    free, entering, last = sample(ours.model, ours.positive, ours.negative, noise, torch.zeros_like(noise), sigmas[:3])
    latents = [unscaled(entering[1], sigmas[1].item()), unscaled(last, sigmas[2].item())]
    # the second step again, from their first step's latents, with their conditioning
    start = steps["step0"]["latents"]
    forced, _, forced_last = sample(theirs, positive, negative, torch.zeros_like(noise),
                                    theirs.model.process_latent_out(to_comfy(start) * (1 + sigmas[1] ** 2) ** 0.5),
                                    sigmas[1:3])
    guided_theirs = [raw.guided(0), forced.guided(0)]
    report["two_steps"] = [{
        "sigma_in": sigmas[i].item(), "sigma_out": sigmas[i + 1].item(),
        "a_in": their_alphas[int(steps["sched"]["timesteps"][i])].item(),
        "a_out": their_alphas[int(steps["sched"]["timesteps"][i + 1])].item(),
        "guided": max_diff(free.guided(i), steps[f"step{i}"]["guided"]),
        "guided_their_conditioning": max_diff(guided_theirs[i], steps[f"step{i}"]["guided"]),
        "own_effect": max_diff(free.guided(i), guided_theirs[i]),
        "latents": max_diff(to_diffusers(latents[i]), steps[f"step{i}"]["latents"]),
        "max_latents_in": (steps["in"]["latents"] if i == 0 else start).abs().max().item(),
        "max_latents_out": steps[f"step{i}"]["latents"].abs().max().item(),
        "max_guided": steps[f"step{i}"]["guided"].abs().max().item(),
        "timestep": free.timesteps[i]} for i in range(2)]
    report["two_steps"][1]["latents_their_start"] = max_diff(
        to_diffusers(unscaled(forced_last, sigmas[2].item())), steps["step1"]["latents"])
    report["loop"] = loop(model)
    return report


if __name__ == "__main__":
    with torch.inference_mode():   # as ComfyUI runs its nodes
        print(json.dumps(main()))
