"""The diffusers host: photos + speech (+ prompt) -> a talking-face mp4 with the speech.

The networks run as diffusers modules (models/); the clip loop is generation/loop.py's, which the ComfyUI host
(comfyui/sampling.py) drives too. Reads like the method:

1. audio  -> mono 16 kHz -> features -> per-frame windows -> audio tokens;
2. photos -> detected, aligned faces -> identity embeddings -> identity tokens; structure maps;
3. prompt -> CLIP text embeddings (and the negative prompt's);
4. IdentityNet reads the reference latents once -> reference bank;
5. for each clip of frames (motion frames from the previous clip first): denoise with AnimateNet,
   classifier-free guidance over text, identity and audio in one batched call per step;
6. decode the clip's new frames in chunks and stream them into the video file.

Only one clip's latents and one chunk of frames are alive at a time, so memory does not grow with
the audio's length.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from einops import rearrange, repeat
from tqdm.auto import tqdm

from . import audio as audio_io
from . import face as face_io
from .assets import demo_weights
from .audio.stand_in import RandomWav2Vec2FrontEnd
from .backbone import Backbone, load_backbone, load_unet_backbone, random_backbone
from .checks import check_generation_settings, check_hallo_settings, check_output_video
from .clips import Clip, plan_clips
from .conditioning import (HalloInputs, References, embed_faces, faces_structure, prepare_audio, prepare_hallo_inputs,
                           prepare_references)
from .config import PortraitTalkConfig, preset
from .errors import InputError, PortraitTalkWarning, WeightsError
from .generation.compositing import PhotoFrames, face_mask, kept_outside_mouth, paste_weights
from .generation.guidance import BRANCHES, guidance_weights, known_latents, start_latents, start_timesteps
from .generation.loop import check_cancel, sample_clips
from .generation.reference_rows import decoded_as_motion, frames_of_the_audio, reference_rows
from .generation.restyle import restyle_latents
from .generation.settings import GenerationSettings, resolved
from .generation.timing import StageTimer, timed_iter
from .head_motion import HeadMotion, motion_from_speech, moved_face, read_head_motion, retime
from .io.safetensors import read_metadata
from .io.video import VideoWriter
from .models import AttentionContext, FaceEncoder, PortraitTalkModel
from .schedulers import make_scheduler, model_schedule
from .weights import load_model, read_config


@dataclass
class GenerationResult:
    path: Path | None
    frames: int
    fps: float
    duration: float
    timings: dict[str, float] = field(default_factory=dict)


class PortraitTalkPipeline:
    def __init__(self, model: PortraitTalkModel, backbone: Backbone, detector=None, audio_front_end=None,
                 device="cpu", dtype=torch.float32):
        self.model = model.to(device=device, dtype=dtype).eval()
        # AnimateNet holds its own copy of the backbone's UNet; keeping both would double the memory.
        backbone.unet = None
        self.backbone = backbone.to(device, dtype)
        self.config: PortraitTalkConfig = model.config
        self.device = torch.device(device)
        self.dtype = dtype
        self._detector = detector
        self.audio_front_end = audio_front_end or self._default_audio_front_end()

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, weights, backbone=None, tokenizer=None, insightface_root=None,
                        wav2vec2_folder=None, device="cpu", dtype=torch.float32, vae=None) -> "PortraitTalkPipeline":
        """PortraitTalk weights (.safetensors) + an SD1.5 backbone (diffusers folder or single file); for a model with
        no text path (config context "identity", Hallo's converted weights) the UNet file alone and ``vae``."""
        config = read_config(weights)  # checks the file before anything slow is loaded
        if backbone is None and read_metadata(weights).get("backbone"):
            backbone = weights  # a small model of ours carries its backbone
        if backbone is None:
            raise WeightsError("no backbone given: PortraitTalk runs on a Stable Diffusion 1.5 checkpoint",
                               "pass --backbone with an SD1.5 diffusers folder or .safetensors checkpoint")
        front_end = None
        if config.audio_front_end == "wav2vec2":
            if wav2vec2_folder is None:
                raise WeightsError("this model needs wav2vec2 audio features but no wav2vec2 folder was given",
                                   "pass --wav2vec2 with a local folder holding config.json and model.safetensors")
            front_end = audio_io.Wav2Vec2FrontEnd(wav2vec2_folder, device=device)
        detector = cls._detector_for(insightface_root)
        sd = (load_unet_backbone(backbone, vae, config, dtype) if config.context == "identity"
              else load_backbone(backbone, tokenizer, dtype))
        model = load_model(weights, sd.unet, device, dtype)
        return cls(model, sd, detector, front_end, device, dtype)

    @classmethod
    def demo(cls, device="cpu", dtype=torch.float32) -> "PortraitTalkPipeline":
        """The embedded demo model (assets/portraittalk_demo.safetensors): small, trained here on procedural
        faces by ``portraittalk train-demo``; it animates faces like ``assets/demo_face.png``."""
        return cls.from_pretrained(demo_weights(), device=device, dtype=dtype)

    @classmethod
    def random(cls, config: str | PortraitTalkConfig = "tiny", seed: int = 0, device="cpu",
               dtype=torch.float32, insightface_root=None, wav2vec2_folder=None) -> "PortraitTalkPipeline":
        """Random weights: for tests and benchmarks only. The output is noise-like, not a face video."""
        config = preset(config) if isinstance(config, str) else config
        backbone = random_backbone(config, seed)
        torch.manual_seed(seed)
        model = PortraitTalkModel(config, backbone.unet)
        model.animate_net.randomise_zero_outputs()  # a fresh model would start as the base model
        if config.face_encoder == "arcface" and insightface_root is None:
            # Random weights mean random identity features anyway: a builtin encoder stands in for
            # ArcFace so that the run needs no insightface models.
            model.face_encoder = FaceEncoder(config.face_embed_dim, config.face_encoder_size)
        front_end = None
        if config.audio_front_end == "wav2vec2" and wav2vec2_folder is not None:
            front_end = audio_io.Wav2Vec2FrontEnd(wav2vec2_folder, device=device)
        elif config.audio_front_end == "wav2vec2":
            front_end = RandomWav2Vec2FrontEnd(config)
        return cls(model, backbone, cls._detector_for(insightface_root), front_end, device, dtype)

    @staticmethod
    def _detector_for(insightface_root):
        """insightface from the given root; otherwise chosen lazily (face_io.default_detector) on first use."""
        return face_io.InsightFaceDetector(insightface_root) if insightface_root is not None else None

    def _default_audio_front_end(self):
        if self.config.audio_front_end == "logmel":
            return audio_io.LogMelFrontEnd(n_mels=self.config.audio_dim)
        raise WeightsError("this model needs a wav2vec2 audio front end",
                           "pass wav2vec2_folder / --wav2vec2 with a local wav2vec2 folder")

    @property
    def detector(self):
        if self._detector is None:
            self._detector = face_io.default_detector()
        return self._detector

    @detector.setter
    def detector(self, detector) -> None:
        self._detector = detector

    # -- stages 1 and 2: audio and faces (conditioning.py, shared with the ComfyUI nodes) ----------
    def prepare_audio(self, source, fps: float, clip_frames: int | None = None):
        return prepare_audio(source, self.audio_front_end, self.config, fps, clip_frames)

    def prepare_references(self, images: Sequence, resolution: int, labels=None) -> References:
        return prepare_references(images, self.model, self.detector, resolution, labels, backbone=self.backbone)

    # -- stages 3 and 4: prompt and reference bank ----------------------------------------------
    def encode_prompts(self, prompt: str, negative_prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        limit = self.backbone.text_encoder.config.max_position_embeddings
        for name, text in (("prompt", prompt), ("negative prompt", negative_prompt)):
            tokens = len(self.backbone.tokenizer(text).input_ids)  # with its start and end tokens
            if tokens > limit:
                warnings.warn(f"the {name} is {tokens - 2} tokens long; the text encoder reads the first "
                              f"{limit - 2} and drops the rest. Shorten it, most important words first",
                              PortraitTalkWarning, stacklevel=2)
        embeds = self.backbone.encode_text([prompt, negative_prompt]).to(self.dtype)
        return embeds[:1], embeds[1:]

    @torch.inference_mode()
    def reference_bank(self, refs: References, text_embeds: torch.Tensor, identity_tokens: torch.Tensor,
                       strength: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """IdentityNet's attention bank over the references, and the first reference's latent (1, C, h, w)."""
        ref_latents = self.backbone.encode_images(refs.pixels)[None]  # (1, R, C, h, w)
        scale = torch.full((1,), strength, device=self.device, dtype=self.dtype)
        _, bank = self.model.identity_net(ref_latents, text_embeds, identity_tokens, scale)
        return bank, ref_latents[:, 0]

    @torch.inference_mode()
    def restyle(self, refs: References, text: torch.Tensor, negative: torch.Tensor, settings: GenerationSettings,
                cancel=None) -> References:
        """The references redrawn outside their faces from the prompt (``GenerationSettings.restyle``) by the base
        UNet: AnimateNet with every added path and the temporal modules off, which is the base exactly."""
        net, vae_scale = self.model.animate_net, self.config.vae_scale
        scale = resolved(settings, self.config).restyle_scale
        prompts = torch.cat([text, negative])
        generator = torch.Generator("cpu").manual_seed(settings.seed)

        def predict_noise(latents, t):
            check_cancel(cancel)
            eps = net(repeat(latents, "1 c h w -> b c 1 h w", b=2), t, prompts)[:, :, 0]
            return eps[1:] + scale * (eps[:1] - eps[1:])

        faces, pixels = [], []
        motion_scale, net.motion_scale = net.motion_scale, 0.0
        try:
            for face, photo in zip(refs.faces, refs.pixels):
                inside = face_mask(face)
                keep = torch.from_numpy(inside)[None, None].to(self.device, self.dtype)
                keep = (torch.nn.functional.avg_pool2d(keep, vae_scale) == 1).to(self.dtype)  # cells wholly inside
                latent = self.backbone.encode_images(photo[None].to(self.device, self.dtype))
                noise = torch.randn(latent.shape, generator=generator).to(self.device, self.dtype)
                scheduler = make_scheduler(settings.sampler, model_schedule(self.backbone.schedule, self.config))
                drawn = next(self.decode(restyle_latents(predict_noise, latent, keep, noise, scheduler,
                                                         settings.steps), 1))[0].numpy()
                # the face's own pixels back over the redrawn photo, the seam feathered over one latent cell inside
                # the face's edge: deeper than that the face is the photo's, pixel for pixel
                depth = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
                weight = np.clip(depth / vae_scale, 0.0, 1.0)[..., None]
                image = np.round(face.image * weight + drawn * (1.0 - weight)).astype(np.uint8)
                faces.append(replace(face, image=image))
                pixels.append(torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1)
        finally:
            net.motion_scale = motion_scale
        pixels = torch.stack(pixels)
        return References(faces, pixels, refs.structure, embed_faces(faces, pixels, self.model))

    # -- stage 5: denoising --------------------------------------------------------------------
    @torch.inference_mode()
    def audio_tokens(self, windows: torch.Tensor) -> torch.Tensor:
        return self.model.audio_projection(windows.to(self.device, self.dtype))

    @torch.inference_mode()
    def photo_frames(self, face, region: str, paste: bool, motion: np.ndarray | None = None,
                     latent: torch.Tensor | None = None) -> PhotoFrames:
        """What frames take from the aligned ``face`` (face.AlignedFace): as it is (``latent``, its (1, C, h, w)
        latents, saves encoding it again), or moved by each of the ``motion`` transforms (F, 2, 3), one a frame."""
        faces = [face] if motion is None else [moved_face(face, transform) for transform in motion]
        if latent is None:
            pixels = torch.from_numpy(np.stack([f.image for f in faces])).permute(0, 3, 1, 2).float() / 127.5 - 1
            latent = self.backbone.encode_images(pixels.to(self.device, self.dtype))
        structure = rearrange(torch.from_numpy(faces_structure(faces)), "f c h w -> 1 c f h w")
        frames = PhotoFrames(rearrange(latent, "f c h w -> 1 c f h w"), structure.to(self.device, self.dtype))
        if region == "mouth":
            vae_scale = self.config.vae_scale
            keeps = [kept_outside_mouth(f, vae_scale) for f in faces]
            frames.keep = torch.cat(keeps, dim=2).to(self.device, self.dtype)
            if paste:
                frames.images = np.stack([f.image for f in faces])
                frames.weights = np.stack([paste_weights(keep, vae_scale) for keep in keeps])
        return frames

    def moves_head_from_speech(self, settings: GenerationSettings) -> bool:
        """Whether, without a driving video, the photo's head moves as the model predicts from the speech."""
        return settings.head_motion_from_speech and self.model.head_motion is not None

    def head_motion(self, source, fps: float, n_frames: int, resolution: int) -> np.ndarray:
        """(n_frames, 2, 3) transforms of the photo from ``source``: a driving video's path or a ``HeadMotion``
        (head_motion.py), or transforms in the pixels of the ``resolution`` crop, retimed (played back and forth)
        to fit."""
        if isinstance(source, (str, Path)):
            source = read_head_motion(source, self.detector, resolution, self.config.face_fraction,
                                      seconds=n_frames / fps, max_fps=fps)
        if isinstance(source, HeadMotion):
            return source.at(fps, n_frames, resolution)
        motion = np.asarray(source, dtype=np.float32)
        if motion.ndim != 3 or motion.shape[1:] != (2, 3) or not len(motion) or not np.isfinite(motion).all():
            raise InputError(f"head motion must be finite (F, 2, 3) affine transforms, got shape {motion.shape}",
                             "pass a driving video's path, or one 2x3 transform per frame")
        return motion if len(motion) >= n_frames else retime(motion, fps, fps, n_frames)

    @torch.inference_mode()
    def denoise_clip(self, clip: Clip, noise: torch.Tensor, motion_latents: torch.Tensor | None,
                     cond: dict, settings: GenerationSettings, scheduler, on_step=None, cancel=None
                     ) -> torch.Tensor:
        """Denoise one clip; returns its latents (1, C, F, h, w), the first ``clip.context`` frames being exactly
        ``motion_latents``. ``cond["photo"]`` holds the clip's ``PhotoFrames``.

        What is known (``known_latents``: the motion frames, and for region "mouth" the photo outside the
        mouth) is put back at the current noise level before every step, so the rest is denoised in attention
        with it: inpainting in time and in space.
        """
        audio_scale = resolved(settings, self.config).audio_scale
        weights = guidance_weights(settings.text_scale, settings.identity_scale, audio_scale)
        names = list(weights)
        branches = [BRANCHES[n] for n in names]
        count = len(names)
        text = torch.cat([cond["text"] if b[0] else cond["negative"] for b in branches])
        on = lambda flags, value: torch.tensor([value if f else 0.0 for f in flags], device=self.device)  # noqa: E731
        ctx = AttentionContext(
            identity_tokens=repeat(cond["identity_tokens"], "1 k d -> b k d", b=count),
            identity_scale=on([b[1] for b in branches], settings.identity_strength),
            audio_tokens=repeat(self.audio_tokens(cond["audio_windows"][clip.first:clip.end]),
                                "f m d -> (b f) m d", b=count),
            audio_scale=on([b[2] for b in branches], settings.audio_strength),
            bank=cond["bank"],
            bank_scale=on([b[1] for b in branches], settings.reference_strength),
        )
        frames = cond["photo"]
        # one structure map for the whole clip is encoded once, not once a frame
        still = frames.structure.shape[2] == 1
        structure = repeat(frames.structure[:, :, 0] if still else frames.structure, "1 ... -> b ...", b=count)
        branch_weights = torch.tensor([weights[n] for n in names], device=self.device, dtype=self.dtype)

        photo = frames.latents.expand(-1, -1, noise.shape[2], -1, -1)
        timesteps = start_timesteps(scheduler, settings.steps, settings.denoise, self.device)
        # Partial runs start from the photo; so does region mouth at denoise 1, as ComfyUI's KSampler adds its
        # noise to the latent image it is given.
        latents = start_latents(scheduler, photo, noise, timesteps[0],
                                from_photo=settings.denoise < 1.0 or frames.keep is not None)
        known, known_mask = known_latents(photo, frames.keep, motion_latents, clip.context)
        for t in timesteps:
            check_cancel(cancel)
            if known is not None:  # what is known goes back in at the current noise level: inpainting
                latents = torch.lerp(latents, scheduler.add_noise(known, noise, t[None]), known_mask)
            model_in = repeat(scheduler.scale_model_input(latents, t), "1 c f h w -> b c f h w", b=count)
            eps = self.model.animate_net(model_in, t, text, ctx, structure)
            eps = torch.einsum("b,bcfhw->cfhw", branch_weights, eps)[None]
            latents = scheduler.step(eps, t, latents).prev_sample
            if on_step is not None:
                on_step()
        if known is not None:  # exactly the known latents, the motion frames among them (lerp at 1 is its end)
            latents = torch.lerp(latents, known, known_mask)
        return latents

    # -- Hallo's computation (config reference_inputs "hallo", uncond_inputs "zero": docs/hallo.md) ----------------
    def prepare_hallo_inputs(self, image, resolution: int, label: str = "the reference photo") -> HalloInputs:
        """Their masks come from mediapipe's face mesh; the embedding from the pipeline's detector (insightface)."""
        with face_io.MediaPipeDetector() as landmarks:
            return prepare_hallo_inputs(image, landmarks, self.model, resolution, self.detector, label)

    @torch.inference_mode()
    def hallo_conditioning(self, inputs: HalloInputs, clip_frames: int) -> dict:
        """What their pipeline derives once from the photo, as [uncond, cond] rows (face_animate.py:291-298,
        339-359): the face tokens, with the projection of a zero embedding as uncond; the face locator's residual
        for every frame, zeros as uncond; the region masks for every frame of both rows."""
        embedding = inputs.embedding.to(self.device, self.dtype)
        face_tokens = self.model.zero_uncond_face_tokens(embedding)
        located = self.model.animate_net.structure_encoder(inputs.face_box.to(self.device, self.dtype))
        structure = repeat(located, "1 c h w -> 1 c f h w", f=clip_frames)
        masks = {region: [repeat(mask.to(self.device, self.dtype), "1 n -> (v f) n", v=2, f=clip_frames)
                          for mask in levels] for region, levels in inputs.masks.items()}
        return dict(face_tokens=face_tokens, structure=torch.cat([torch.zeros_like(structure), structure]),
                    masks=masks, pixels=inputs.pixels.to(self.device, self.dtype),
                    face_box=inputs.face_box.to(self.device, self.dtype))

    @torch.inference_mode()
    def motion_pixels(self, latents: torch.Tensor) -> torch.Tensor:
        """The previous clip's last frames, decoded one at a time in float as theirs, read as motion frames."""
        vae = self.backbone.vae
        return decoded_as_motion(torch.cat([vae.decode(latent[None] / vae.config.scaling_factor).sample
                                            for latent in latents]))

    @torch.inference_mode()
    def hallo_clip_context(self, reference_latents: torch.Tensor, cond: dict, audio_windows: torch.Tensor
                           ) -> AttentionContext:
        """A clip's attention context as their pipeline makes it (face_animate.py:332-336,377-395): the reference
        pass at t=0 over ``reference_latents`` (R, C, h, w), [photo, motion frames], for both rows, its banks read
        by attn1 (uncond rows see none) and its motion-frame rows prefixed to the motion modules; the clip's audio
        tokens, zeros as uncond; the region masks."""
        bank, prefix = self.model.reference_pass(reference_latents, cond["face_tokens"])
        audio = self.audio_tokens(audio_windows)
        return AttentionContext(bank=bank, bank_scale=torch.tensor([0.0, 1.0], device=self.device),
                                motion_prefix=prefix, audio_tokens=torch.cat([torch.zeros_like(audio), audio]),
                                region_masks=cond["masks"])

    @torch.inference_mode()
    def hallo_step(self, latents: torch.Tensor, t, cond: dict, ctx: AttentionContext, scale: float, scheduler
                   ) -> torch.Tensor:
        """One step (face_animate.py:397-420): the denoiser on [uncond, cond] rows, one guidance scale."""
        model_in = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        prediction = self.model.animate_net(model_in, t, cond["face_tokens"], ctx, structure_residual=cond["structure"])
        uncond, conditional = prediction.chunk(2)
        return scheduler.step(uncond + scale * (conditional - uncond), t, latents).prev_sample

    @torch.inference_mode()
    def denoise_hallo_clip(self, clip: Clip, noise: torch.Tensor, rows: torch.Tensor, cond: dict,
                           audio_windows: torch.Tensor, scale: float, scheduler, steps: int, on_step=None,
                           cancel=None) -> torch.Tensor:
        """One clip from ``noise`` (1, C, F, h, w), its reference pass over ``rows`` (generation.reference_rows);
        returns its latents (1, C, F, h, w)."""
        ctx = self.hallo_clip_context(self.backbone.encode_images(rows), cond, audio_windows[clip.start:clip.end])
        latents = noise
        for t in start_timesteps(scheduler, steps, 1.0, self.device):
            check_cancel(cancel)
            latents = self.hallo_step(latents, t, cond, ctx, scale, scheduler)
            if on_step is not None:
                on_step()
        return latents

    def _generate_hallo(self, references, audio, out, settings: GenerationSettings, progress, cancel,
                        on_progress, on_clip, on_frames, reference_labels) -> GenerationResult:
        """Hallo's clip loop (scripts/inference.py:285-343): the audio padded to whole clips of new frames, the
        first clip continuing from the photo itself, each next one from the last frames decoded before; the frames
        past the audio are dropped."""
        config = self.config
        fps, resolution, clip_frames = float(settings.fps), int(settings.resolution), settings.clip_frames
        timer = StageTimer(self.device)
        self.model.animate_net.motion_scale = settings.motion_scale
        with timer("audio"):
            wave, features = self.prepare_audio(audio, fps, clip_frames)
        with timer("face"):
            label = reference_labels[0] if reference_labels else "the reference photo"
            inputs = self.prepare_hallo_inputs(references[0], resolution, label)
        with timer("reference"):
            cond = self.hallo_conditioning(inputs, clip_frames)
        n_frames = features.n_frames
        clips = plan_clips(len(features.frames), clip_frames, 0)
        scheduler = make_scheduler(settings.sampler, model_schedule(self.backbone.schedule, config))
        generator = torch.Generator("cpu").manual_seed(settings.seed)
        latent_size = resolution // config.vae_scale
        bar, on_step = _step_progress(len(clips) * settings.steps, "PortraitTalk (Hallo)", progress, on_progress)

        def denoise(clip: Clip, previous: torch.Tensor | None) -> torch.Tensor:
            with timer("reference"):
                motion = None if previous is None else self.motion_pixels(previous)
                rows = reference_rows(cond["pixels"], motion, settings.motion_frames, config.motion_frame_drop,
                                      cond["face_box"], generator)
            noise = torch.randn((1, config.latent_channels, clip.length, latent_size, latent_size),
                                generator=generator).to(self.device, self.dtype)
            with timer("denoise"):
                latents = self.denoise_hallo_clip(clip, noise, rows, cond, features.frames, settings.audio_scale,
                                                  scheduler, settings.steps, on_step, cancel)
            return rearrange(latents, "1 c f h w -> f c h w")

        def decode(clip: Clip, latents: torch.Tensor) -> Iterator[np.ndarray]:
            kept = frames_of_the_audio(clip, n_frames)
            for frames in timed_iter(self.decode(latents[:kept], settings.decode_chunk), timer, "decode"):
                yield frames.numpy()

        path = _write_video(sample_clips(clips, settings.motion_frames, denoise, decode, on_clip), out, fps, wave,
                            timer, bar, on_frames)
        return GenerationResult(path, n_frames, fps, wave.duration, timer.seconds)

    # -- stage 6: decoding -----------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, frames: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
        """(F, C, h, w) latents -> uint8 frames (n, H, W, 3) on the CPU, `chunk` frames at a time."""
        vae = self.backbone.vae
        for start in range(0, frames.shape[0], chunk):
            images = vae.decode(frames[start:start + chunk] / vae.config.scaling_factor).sample
            images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            yield rearrange(images, "f c h w -> f h w c").cpu()

    # -- the whole job ---------------------------------------------------------------------------
    def __call__(self, references: Sequence, audio, out, settings: GenerationSettings | None = None,
                 progress: bool = True, cancel=None, on_progress: Callable[[int, int], None] | None = None,
                 on_clip: Callable[[Clip], None] | None = None, reference_labels=None,
                 on_frames: Callable[[np.ndarray], None] | None = None, head_motion=None) -> GenerationResult:
        """Frames for ``audio`` in the likeness of ``references``, written with the audio to ``out`` (an mp4;
        None writes nothing). ``on_frames`` gets every decoded chunk, uint8 (n, H, W, 3), as it is made.
        ``head_motion``: a driving video whose head's movement the photo follows, or the transforms themselves
        (see ``head_motion``); None: the movement the model predicts from the speech (head_motion.motion_from_speech), or
        with ``settings.head_motion_from_speech`` False or a model without that module, the photo where it is."""
        settings = settings or GenerationSettings()
        config = self.config
        check_generation_settings(settings, config)
        if out is not None:
            out = check_output_video(out, [p for p in (*references, audio, head_motion) if _is_path(p)])
        settings = resolved(settings, config)  # the model's own values where the settings leave them to it
        if config.reference_inputs == "hallo":
            check_hallo_settings(settings, config, head_motion)
            return self._generate_hallo(references, audio, out, settings, progress, cancel, on_progress, on_clip,
                                        on_frames, reference_labels)
        fps, resolution = float(settings.fps), int(settings.resolution)
        region, clip_frames, motion_frames = settings.region, settings.clip_frames, settings.motion_frames
        timer = StageTimer(self.device)
        self.model.animate_net.motion_scale = settings.motion_scale
        self.model.animate_net.structure_strength = settings.structure_strength

        with timer("audio"):
            wave, features = self.prepare_audio(audio, fps)
        n_frames = features.n_frames
        with timer("face"):
            refs = self.prepare_references(list(references), resolution, reference_labels)
            motion = None if head_motion is None else self.head_motion(head_motion, fps, n_frames, resolution)
            if motion is None and self.moves_head_from_speech(settings):
                motion = motion_from_speech(self.model, features.frames, fps, resolution).transforms
        with timer("reference"):
            text, negative = self.encode_prompts(settings.prompt, settings.negative_prompt)
        if settings.restyle:
            with timer("restyle"):
                refs = self.restyle(refs, text, negative, settings, cancel)
        with timer("reference"):
            with torch.inference_mode():
                identity_tokens = self.model.identity_projection(
                    refs.embeddings.to(self.device, self.dtype)[None])
            bank, reference_latent = self.reference_bank(refs, text, identity_tokens, settings.identity_strength)
        cond = dict(text=text, negative=negative, identity_tokens=identity_tokens, audio_windows=features.frames,
                    bank=bank)
        face = refs.faces[0]
        still = self.photo_frames(face, region, settings.paste_photo, latent=reference_latent)

        clips = plan_clips(n_frames, clip_frames, motion_frames)
        scheduler = make_scheduler(settings.sampler, model_schedule(self.backbone.schedule, self.config))
        generator = torch.Generator("cpu").manual_seed(settings.seed)
        latent_size = resolution // config.vae_scale
        bar, on_step = _step_progress(len(clips) * settings.steps, "PortraitTalk", progress, on_progress)

        photos: dict[Clip, PhotoFrames] = {}   # each clip's, from its denoising to its decoding

        def denoise(clip: Clip, motion_latents: torch.Tensor | None) -> torch.Tensor:
            noise = torch.randn((1, config.latent_channels, clip.length, latent_size, latent_size),
                                generator=generator).to(self.device, self.dtype)
            with timer("face"):  # with head motion, the photo moved for each frame of this clip only
                photos[clip] = still if motion is None else self.photo_frames(
                    face, region, settings.paste_photo, motion[clip.first:clip.end])
            known = None if motion_latents is None else rearrange(motion_latents, "f c h w -> 1 c f h w")
            with timer("denoise"):
                latents = self.denoise_clip(clip, noise, known, dict(cond, photo=photos[clip]), settings, scheduler,
                                            on_step, cancel)
            return rearrange(latents, "1 c f h w -> f c h w")

        def decode(clip: Clip, latents: torch.Tensor) -> Iterator[np.ndarray]:
            photo, first = photos.pop(clip), clip.context  # the new frames' place in the clip
            for frames in timed_iter(self.decode(latents, settings.decode_chunk), timer, "decode"):
                # in the photo's own exposure and colour (face.PhotoLook: the model saw it normalised)
                frames = face.look.restore(photo.paste(frames.numpy(), first))
                first += len(frames)
                yield frames

        path = _write_video(sample_clips(clips, motion_frames, denoise, decode, on_clip), out, fps, wave, timer, bar,
                            on_frames)
        return GenerationResult(path, n_frames, fps, wave.duration, timer.seconds)


def _step_progress(total_steps: int, desc: str, progress: bool, on_progress) -> tuple[tqdm, Callable[[], None]]:
    """A progress bar over the denoising steps, and the callback each step makes (it also tells ``on_progress``)."""
    bar = tqdm(total=total_steps, desc=desc, unit="step", disable=not progress)
    done = 0

    def on_step():
        nonlocal done
        done += 1
        bar.update(1)
        if on_progress is not None:
            on_progress(done, total_steps)

    return bar, on_step


def _write_video(frames_of_clips: Iterator[np.ndarray], out, fps: float, wave, timer: StageTimer, bar: tqdm,
                 on_frames) -> Path | None:
    """Every chunk of frames as the clips give it, into ``out`` (an mp4 with ``wave``; None writes nothing) and to
    ``on_frames``; returns the video's path. The writer opens inside: an unwritable path closes the progress bar
    before the error prints."""
    try:
        writer = VideoWriter(out, fps, audio=wave) if out is not None else None
        with writer if writer is not None else nullcontext():
            for frames in frames_of_clips:
                with timer("write"):
                    if writer is not None:
                        writer.write(frames)
                if on_frames is not None:
                    on_frames(frames)
    finally:
        bar.close()
    return writer.path if writer is not None else None


def _is_path(value) -> bool:
    return isinstance(value, (str, Path))

