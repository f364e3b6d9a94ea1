"""From the user's inputs to what the networks condition on: audio features, aligned references.

Shared by the diffusers pipeline and the ComfyUI nodes, so both hosts see the same inputs.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import audio as audio_io
from . import face as face_io
from .config import PortraitTalkConfig
from .errors import InputError, PortraitTalkWarning, WeightsError
from .io.safetensors import read_metadata
from .backbone import load_backbone
from .schedulers import make_scheduler
from .weights import load_model, read_config


@dataclass
class References:
    faces: list                        # face.AlignedFace, one per photo
    pixels: torch.Tensor               # (R, 3, H, W) in [-1, 1]
    structure: torch.Tensor            # (1, 4, H, W) structure_maps of the first reference
    embeddings: torch.Tensor           # (R, E) face embeddings


def load_checked_audio(source, fps: float) -> audio_io.Waveform:
    """Any audio source -> 16 kHz mono waveform with sound in it, at least one frame at ``fps`` long."""
    if isinstance(source, tuple):  # (samples, sample_rate)
        wave = audio_io.load_audio(source[0], source_rate=source[1])
    else:
        wave = audio_io.load_audio(source)
    audio_io.check_not_silent(wave)
    audio_io.check_long_enough(wave, fps)
    return wave


def prepare_audio(source, front_end, config: PortraitTalkConfig, fps: float, clip_frames: int | None = None
                  ) -> tuple[audio_io.Waveform, audio_io.AudioFeatures]:
    """Any audio source -> checked 16 kHz mono waveform and per-frame feature windows at ``fps`` (for a model whose
    audio is read in whole clips, config ``audio_frames`` "encoder_input", padded to clips of ``clip_frames``, by
    default the model's)."""
    wave = load_checked_audio(source, fps)
    if config.audio_frames == "encoder_input":
        features = audio_io.encode_audio_in_whole_clips(wave, front_end, fps, clip_frames or config.clip_frames,
                                                        config.audio_window, config.audio_segment_seconds)
    else:
        features = audio_io.encode_audio(wave, front_end, fps, window=config.audio_window)
    check_audio_features(features, config)
    return wave, features


def prepare_encoded_audio(output, source, config: PortraitTalkConfig, fps: float
                          ) -> tuple[audio_io.Waveform, audio_io.AudioFeatures]:
    """Like ``prepare_audio``, from hidden states another host's wav2vec2 encoder computed (ComfyUI's Audio Encoder
    Encode output, ``audio.features_from_comfy_encoder``). A model whose audio is read in whole clips (config
    ``audio_frames`` "encoder_input", Hallo's) is refused: it reads wav2vec2's CNN features interpolated to the
    video's frames *before* the encoder, which hidden states at wav2vec2's own 50 a second no longer hold."""
    if config.audio_frames == "encoder_input":
        raise InputError(f"a ready-made audio encoding cannot drive this model ({config.name}): it reads wav2vec2's "
                         "features interpolated to the video's frames before the encoder (Hallo's audio), which "
                         "hidden states at wav2vec2's own rate no longer hold",
                         "disconnect audio_encoder_output from PortraitTalk Audio Encode, and pick the wav2vec2 "
                         "folder (wav2vec2-base-960h) or auto in PortraitTalk Loader's audio_encoder")
    wave = load_checked_audio(source, fps)
    features = audio_io.features_from_comfy_encoder(output, wave.duration, fps, config.audio_window)
    check_audio_features(features, config)
    return wave, features


def wav2vec2_folder_for(config: PortraitTalkConfig, root) -> str:
    """The name of the first folder in ``root`` (by name) whose config.json describes a wav2vec2 of the width and
    layer count ``config``'s model reads: ``audio_layers`` hidden states (the embeddings' output included, except
    for audio read at the encoder's input, config ``audio_frames`` "encoder_input") of ``audio_dim`` channels."""
    layers = config.audio_layers - (0 if config.audio_frames == "encoder_input" else 1)
    root = Path(root)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            encoder = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # no config.json, or not JSON: not a wav2vec2 folder
            continue
        if isinstance(encoder, dict) and encoder.get("model_type") == "wav2vec2" and \
                encoder.get("hidden_size") == config.audio_dim and encoder.get("num_hidden_layers") == layers:
            return folder.name
    raise WeightsError(f"this PortraitTalk model ({config.name}) reads a wav2vec2 audio encoder of {layers} layers "
                       f"of {config.audio_dim} channels, and no folder in '{root}' holds one",
                       f"put one's config.json and model.safetensors (facebook/wav2vec2-base-960h for SD1.5-size and "
                       f"Hallo models) in a folder of '{root}', e.g. '{root / 'wav2vec2-base-960h'}'")


def check_audio_features(features: audio_io.AudioFeatures, config: PortraitTalkConfig) -> None:
    layers, dim = features.frames.shape[-2:]
    if (layers, dim) != (config.audio_layers, config.audio_dim):
        raise WeightsError(f"the audio features have {layers} layers x {dim} channels but the model expects "
                           f"{config.audio_layers} x {config.audio_dim}",
                           "use the audio encoder the model was trained with")


def prepare_references(images: Sequence, model, detector, resolution: int, labels=None, backbone=None
                       ) -> References:
    """Photos -> aligned faces at ``resolution``, their embeddings, and the first one's structure maps.

    Each face's exposure is normalised for the model, and its ``look`` gives frames the photo's look back
    (face.normalise_look). With the model's ``backbone``, a reference far from the faces a narrow model knows gets
    a PortraitTalkWarning (``warn_unknown_faces``)."""
    faces = face_io.prepare_references(images, size=resolution, detector=detector, labels=labels,
                                       face_fraction=model.config.face_fraction)
    pixels = torch.stack([torch.from_numpy(f.image).permute(2, 0, 1) for f in faces]).float() / 127.5 - 1
    if backbone is not None:
        warn_unknown_faces(faces, pixels, model, backbone)
    structure = faces_structure(faces[:1])
    return References(faces, pixels, torch.from_numpy(structure), embed_faces(faces, pixels, model))


@dataclass
class HalloInputs:
    """What Hallo's pipeline takes from the photo (config ``reference_inputs`` "hallo"), for one video row."""

    pixels: torch.Tensor          # (1, 3, R, R) the whole photo resized, in [-1, 1]
    face_box: torch.Tensor        # (1, 3, R, R) the face locator's input, in [0, 1]
    masks: dict[str, list[torch.Tensor]]  # region -> one (1, h*w) mask per UNet level (models/audio_block.REGIONS)
    embedding: torch.Tensor       # (1, E) the raw ArcFace embedding (zeros where no face was found, as theirs)


def prepare_hallo_inputs(image, landmark_detector, model, resolution: int, identity_detector=None,
                         label: str = "the reference photo") -> HalloInputs:
    """One photo -> ``HalloInputs``. ``landmark_detector`` gives the face mesh their masks are built from
    (mediapipe's 468 points, face/hallo_regions.py); ``identity_detector`` (insightface) the raw embedding of the
    largest face in the whole photo (hallo/datasets/image_processor.py:125-138). A model with the builtin face
    encoder (random weights, tests) embeds the resized photo instead."""
    image = face_io.to_rgb_uint8(image)
    mesh = face_io.select_face(face_io.detect_faces(image, landmark_detector), label)
    regions = face_io.hallo_reference(image, mesh.landmarks, resolution)
    if model.face_encoder is not None:
        with torch.inference_mode():
            embedding = model.face_encoder(regions.pixels[None].to(next(model.face_encoder.parameters())))
    else:
        embedding = raw_arcface_embedding(image, identity_detector, model.config.face_embed_dim, label)
    return HalloInputs(regions.pixels[None], regions.face_box[None], regions.masks, embedding.float())


def raw_arcface_embedding(image: np.ndarray, detector, size: int, label: str) -> torch.Tensor:
    """(1, size): the raw ArcFace embedding of the largest face ``detector`` (insightface) finds in the whole photo;
    zeros, with a warning, where it finds none, as theirs (hallo/datasets/image_processor.py:125-138)."""
    fix = "pass --insightface with the folder holding models/antelopev2 (the ArcFace model it was trained with)"
    if detector is None:
        raise WeightsError("this model reads raw ArcFace embeddings, and no insightface detector was given", fix)
    faces = face_io.detect_faces(image, detector)
    if not faces:
        warnings.warn(f"insightface found no face in {label}: the identity input is zeros, the unconditional one, "
                      "as in Hallo's own pipeline", PortraitTalkWarning, stacklevel=3)
        return torch.zeros(1, size)
    largest = max(faces, key=face_io.bbox_area)
    if largest.raw_embedding is None:
        raise WeightsError(f"the face detector '{detector.name}' gives no raw ArcFace embedding", fix)
    return torch.from_numpy(largest.raw_embedding)[None]


# -- references far from what the model knows ----------------------------------------------------------------------
@dataclass(frozen=True)
class KnownFaces:
    """What a model trained on a narrow kind of face declares about it (in its config's ``extra["known_faces"]``,
    as these fields): the faces it knows, and the ``denoising_error`` above which a reference is unlike them."""

    what: str          # "procedural faces", as the warning names them
    max_error: float   # above the highest its own kind of face reaches, below what a photo unlike them gives
    fix: str = "use a reference photo like the ones the model was trained on"
    model: str = "this model"  # as the warning names the model


# The embedded demo model learned only drawn, flat-coloured procedural faces (synth/), and says so by its name: its
# weights file predates ``known_faces``. Its denoising_error on the 64 px crops that prepare_references makes: 0.08-0.24
# (median 0.13) on 199 faces of the synth renderer in random expressions and poses, 0.13 on assets/demo_face.png,
# 0.11-0.23 on 20 of them darkened to a fifth (normalised); 0.36-0.42 on the astronaut photo (assets/reference.jpg is a
# crop of it) cropped, turned and mirrored 35 ways, 0.39-0.53 on reference.jpg blurred, upscaled from 96 px, darkened,
# washed out or gray. The threshold sits between the two groups.
DEMO_KNOWN_FACES = KnownFaces(
    what="procedural (drawn, flat-coloured) faces",
    max_error=0.30,
    model="the embedded demo model",
    fix="for real photos, load real SD1.5-sized PortraitTalk weights (--weights on the command line, the Loader's "
        "weights in ComfyUI); to try the demo model, use a procedural face such as its demo face "
        "(portraittalk_core/assets/demo_face.png)",
)


def known_faces(config: PortraitTalkConfig) -> KnownFaces | None:
    """The narrow kind of face ``config``'s model knows, or None for a model meant for any photo."""
    declared = config.extra.get("known_faces")
    if declared:
        try:
            return KnownFaces(**declared)
        except TypeError as err:
            raise WeightsError(f"the model config's extra.known_faces is malformed ({err})",
                               "give it 'what' (text) and 'max_error' (a number), optionally 'fix' and 'model', "
                               "or remove it") from None
    return DEMO_KNOWN_FACES if config.name == "demo" else None


# Noise levels of the probe: low enough that the prediction depends on the image's details (skin texture, hair,
# shading), not only on its layout; at t >= 600 procedural faces and photos score alike.
PROBE_TIMESTEPS = (100, 200, 300)
PROBE_NOISES = 4


@torch.inference_mode()
def denoising_error(model, backbone, pixels: torch.Tensor) -> torch.Tensor:
    """(R,) how unlike what the model learned each reference (R, 3, H, W) in [-1, 1] is: the mean squared error of
    its base UNet's noise prediction (empty prompt) on the reference's latents, over fixed noise draws and noise
    levels, so a photo always gets the same number. This is the loss the model was trained to make small: low on
    the kind of image it learned, high on others (a likelihood bound in all but name). The VAE's round trip is no
    measure: the demo's reconstructs a real photo's 64 px crop (PSNR 22.7 dB) as well as many procedural faces
    (21.6-30.6 dB)."""
    net = model.animate_net
    weight = next(net.parameters())
    latents = backbone.encode_images(pixels.to(weight.device, weight.dtype)).float().cpu()
    scheduler = make_scheduler("ddim", backbone.schedule)
    noise = torch.randn((PROBE_NOISES, *latents.shape[1:]), generator=torch.Generator("cpu").manual_seed(0))
    timesteps = torch.tensor(PROBE_TIMESTEPS).repeat_interleave(PROBE_NOISES)
    noise = noise.repeat(len(PROBE_TIMESTEPS), 1, 1, 1)
    text = backbone.encode_text([""]).to(weight.device, weight.dtype)
    errors = []
    motion_scale, net.motion_scale = net.motion_scale, 0.0  # the base UNet alone, as restyle uses it
    try:
        for latent in latents:
            noisy = scheduler.add_noise(latent.expand_as(noise), noise, timesteps)
            eps = net(noisy[:, :, None].to(weight.device, weight.dtype), timesteps.to(weight.device),
                      text.expand(len(noisy), -1, -1))[:, :, 0]
            errors.append(((eps.float().cpu() - noise) ** 2).mean())
    finally:
        net.motion_scale = motion_scale
    return torch.stack(errors)


def own_backbone_probe(weights_path) -> tuple | None:
    """For a narrow model (``known_faces``) whose file carries its own backbone (the demo model): that model on
    that backbone, (model, backbone), for ``warn_unknown_faces`` in a host that runs the user's MODEL instead
    (ComfyUI). None for any other model, which is not probed."""
    if known_faces(read_config(weights_path)) is None or not read_metadata(weights_path).get("backbone"):
        return None
    backbone = load_backbone(weights_path)
    return load_model(weights_path, backbone.unet), backbone


def warn_unknown_faces(faces, pixels: torch.Tensor, model, backbone) -> None:
    """A PortraitTalkWarning for each reference unlike the faces a narrow model knows (``known_faces``): such a
    model redraws their mouth region as a smear. Models meant for any photo are not probed."""
    known = known_faces(model.config)
    if known is None:
        return
    for face, error in zip(faces, denoising_error(model, backbone, pixels).tolist()):
        if error > known.max_error:
            name = face.label or f"reference {face.source_index + 1}"
            warnings.warn(f"{name} is unlike the {known.what} that {known.model} knows, and only those (its "
                          f"denoising error is {error:.2f}; theirs stays under {known.max_error:.2f}): expect a "
                          f"smeared, flickering lower face. Fix: {known.fix}", PortraitTalkWarning, stacklevel=3)


def mouth_boxes(landmarks: np.ndarray, mouth: np.ndarray, size: int, margin: float = 0.25) -> np.ndarray:
    """(F, 1, S, S) float masks, 1 inside each frame's mouth box (the mouth landmarks' bounds, grown by
    ``margin`` of their size on every side)."""
    masks = np.zeros((len(landmarks), 1, size, size), np.float32)
    for mask, points in zip(masks, landmarks[:, mouth]):
        low, high = points.min(0), points.max(0)
        pad = margin * (high - low) + 1
        (x0, y0), (x1, y1) = np.floor(low - pad).astype(int).clip(0, size), np.ceil(high + pad).astype(int).clip(0, size)
        mask[0, y0:y1, x0:x1] = 1.0
    return masks


# Region="mouth" generation redraws the mouth box grown by this share of its size on every side: an open jaw
# moves the lips well past the closed mouth's bounds.
MOUTH_REGION_MARGIN = 0.6


def structure_maps(head_mask: np.ndarray, landmarks: np.ndarray, regions: dict) -> np.ndarray:
    """What AnimateNet's structure encoder reads, (4, S, S) float32 in [0, 1]: the head placement mask and the
    landmark map without the mouth (its shape is the audio's to decide). Training and inference both call this."""
    size = head_mask.shape[-1]
    landmark_map = face_io.rasterize_landmarks(landmarks, regions, size, include=("outline", "brows", "eyes", "nose"))
    return np.concatenate([head_mask[None].astype(np.float32), landmark_map.astype(np.float32)])


def faces_structure(faces) -> np.ndarray:
    """(F, 4, S, S) ``structure_maps`` of aligned faces (face.AlignedFace), one a face."""
    return np.stack([structure_maps(f.head_mask, f.landmarks, f.regions) for f in faces])


def embed_faces(faces, pixels: torch.Tensor, model) -> torch.Tensor:
    """Face embeddings: the model's builtin encoder, or the ArcFace embeddings insightface gave."""
    if model.face_encoder is not None:
        weight = next(model.face_encoder.parameters())  # wherever the host put it (ComfyUI may have moved it)
        with torch.inference_mode():
            return model.face_encoder(pixels.to(weight.device, weight.dtype)).float().cpu()
    if any(f.embedding is None for f in faces):
        raise WeightsError("this model needs ArcFace embeddings, which the current face detector does not give "
                           "(insightface models not found)",
                           "put insightface's antelopev2 models in models/insightface/models/antelopev2 and use them "
                           "(--insightface with the models/insightface folder, or the loader's face_detector)")
    return torch.stack([torch.as_tensor(f.embedding) for f in faces]).float()
