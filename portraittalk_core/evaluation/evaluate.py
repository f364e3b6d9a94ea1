"""``portraittalk eval``: a PortraitTalk model measured on held-out synthetic clips.

The clips are the test split of the demo recipe's procedural dataset: identities and sentences that the
training split never shows (synth/dataset.py). For each test clip the model gets the clip's first frame as
the reference photo, the clip's speech and its caption as the prompt, and its frames are compared with the
clip's real frames, aligned by the same transform (the exact landmarks give both):

- lip sync: Pearson correlation of the generated mouth opening with the ground truth's, per clip. The
  generated opening is measured by a landmark regressor trained on the train and val splits (evaluation/landmarks.py);
  the same regressor on the ground-truth frames gives the ceiling it can measure.
- identity: SSIM of the face outside the mouth (head placement mask minus every frame's mouth box).
- temporal stability: mean frame-to-frame change (flicker) of the output against the ground truth's.
- LMD: landmark distance to the ground truth in inter-ocular units, all points and mouth points.
- ADFD (evaluation/adfd.py), with the ground-truth opening; and the SPEC ordering test (in sync > shifted
  0.5 s > still > jittered) on every test clip's exact landmarks.
- prompt customisation: the caption's background replaced by another colour of the palette, generated with the
  restyle step on (GenerationSettings.restyle: the photo redrawn outside the face from the prompt); the output's
  background colour (the palette colour most of the pixels that show the photo's background are nearest to:
  outside the head mask, in the top third, of the background's own colours, so not long hair) counts if it
  is the prompted one. Chance is 1 in 11. One colour a clip is a small sample, and which colours it draws is
  luck; so each prompt clip's photo is also restyled alone (no animation) with every palette colour it does not
  have, and read the same way: the prompt figure over the whole palette, and per colour. Each clip's restyles draw
  noise of their own (``clip_seed``): a person's two clips share their photo. With region mouth and the photo
  pasted (the demo model's default) the output's background is that restyled photo. Beside the palette figure,
  its ceiling: the photo's own background painted by hand in each asked colour, through the VAE alone.

With ``head_motion`` (``eval --head-motion``) the lip sync and identity clips are generated following the ground
truth's head motion, fitted to its brow and nose landmarks as a driving video's would be (head_motion.py):
the self-reenactment setting, in which the identity figure measures the face and not where the head went.
Without it, a model that predicts head motion from the speech (models/head_pose.py; the demo model) moves the head
as it predicts, as ``generate`` does (``head_motion_from_speech``; False holds the photo still).

Baselines computed the same way sit next to the model's figures: the ground truth itself, the ground truth
through the model's own VAE (the best its outputs can look), a still face (the reference frame held) and
the still face moved as the ground truth's head moves (``posed_still``: what a model that followed the head's
motion could score at best without redrawing anything), so that a figure can be read against what the
instrument, the autoencoder, doing nothing and knowing the head's motion score.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from ..audio import SAMPLE_RATE
from ..conditioning import mouth_boxes
from ..data.demo_dataset import DEMO_DATASET
from ..data.landmarks68 import synthetic_detection
from ..data.prepare import prepare_folder, read_video, sidecar_landmarks
from ..data.shards import Shard
from ..errors import InputError
from ..head_motion import motion_from_landmarks
from ..synth.dataset import synth_dataset
from ..synth.identity import BACKGROUND_COLOURS
from .adfd import adfd, face_scale, mouth_opening, ordering_test
from .landmarks import load_regressor, save_regressor, train_landmark_regressor
from .metrics import flicker, landmark_distance, lip_sync_correlation, psnr, ssim

TARGETS = {"lip_sync": 0.6, "identity_ssim": 0.8, "prompt_accuracy": 0.8}


@dataclass
class EvalSettings:
    weights: str | None = None      # None: the embedded demo model
    data: str | None = None         # a synth dataset folder (val/, test/); None: made in out/synth
    out: str = "runs/eval"
    # The defaults measure the demo model in about 15 minutes on 2 CPU cores.
    clips: int = 12                 # test clips generated (the demo recipe's test split has 36, 6 identities)
    prompt_clips: int = 12          # test clips generated again with a recoloured background prompt
    seconds: float | None = 3.0     # evaluate the first seconds of each clip (None: all of it)
    prompt_seconds: float = 1.0     # audio used for the prompt test
    steps: int = 10
    sampler: str = "ddim"
    denoise: float = 1.0
    region: str | None = None       # None: the model's default
    paste_photo: bool = True        # region mouth: the photo's own pixels outside the mouth (GenerationSettings)
    # The lip sync and identity clips follow the ground truth's head motion (head_motion.py, from its exact brow and
    # nose landmarks: the mouth and jaw stay the audio's to move), as a driving video would give it.
    head_motion: bool = False
    # Otherwise the head moves as the model predicts from the speech (models with a head-motion module, such as the
    # demo: models/head_pose.py); False keeps the photo's head still.
    head_motion_from_speech: bool = True
    restyle_scale: float | None = None  # the prompt test's restyle guidance; None: the model's default
    prompt_palette: bool = True     # the prompt clips' photos also restyled with every other background colour
    seed: int = 0
    split: str = "test"             # "val" to tune generation settings without touching the test split
    text_scale: float = 5.0
    identity_scale: float = 2.0
    audio_scale: float | None = None  # None: the model's default
    regressor_steps: int = 1500
    workers: int = 1


class KnownFace:
    """A face 'detector' that returns the synthetic clip's exact landmarks (see data/landmarks68.synthetic_detection),
    so that the generated frames are aligned exactly as the ground-truth crops are."""

    name = "exact synthetic landmarks"

    def __init__(self, landmarks: np.ndarray):
        self.detection = synthetic_detection(landmarks)

    def detect(self, image: np.ndarray):
        return [self.detection]


# -- data ---------------------------------------------------------------------------------------------

SPLITS = ("train", "val", "test")


def eval_data(settings: EvalSettings, resolution: int, face_fraction: float) -> tuple[Path, dict[str, Path]]:
    """(synth folder, {split: shards}): the recipe's splits, synthesised if needed and prepared (aligned crops,
    exact landmarks) at the model's resolution and face framing. Train and val teach the measuring regressor;
    test (or val, for tuning) is measured."""
    out = Path(settings.out)
    data = Path(settings.data) if settings.data else out / "synth"
    if settings.data is None:
        synth_dataset(data, DEMO_DATASET.identities, DEMO_DATASET.clips_per_identity, DEMO_DATASET.size,
                      seed=DEMO_DATASET.seed, workers=settings.workers)
    for split in SPLITS:
        if not any((data / split).glob("*.mp4")):
            raise InputError(f"no {split} clips (*.mp4) in '{data / split}'",
                             "point --data at a folder made by `portraittalk synth` (or leave it out)")
    shards = {}
    for split in SPLITS:
        shards[split] = out / f"shards_{resolution}" / split
        prepare_folder(data / split, shards[split], resolution, face_fraction=face_fraction, workers=settings.workers)
    return data, shards


def measuring_regressor(folders: list[Path], out: Path, steps: int, seed: int, progress=print):
    """The landmark regressor, trained once on the shards in ``folders`` and kept in ``out``; and those shards."""
    paths = sorted(p for folder in folders for p in folder.glob("*.npz"))
    fingerprint = shards_fingerprint(paths, steps, seed)
    file = out / "landmark_regressor.safetensors"
    if file.exists():
        model = load_regressor(file, fingerprint)
        if model is not None:
            return model, paths
    progress(f"training the measuring landmark regressor on {len(paths)} train and val clips (kept in {file})")
    shards = [Shard.load(p) for p in paths]
    frames = np.concatenate([s.arrays["frames"] for s in shards])
    landmarks = np.concatenate([s.arrays["landmarks"] for s in shards])
    model = train_landmark_regressor(frames, landmarks, steps=steps, seed=seed)
    save_regressor(model, file, fingerprint)
    return model, paths


def shards_fingerprint(paths: list[Path], steps: int, seed: int) -> str:
    """What the regressor was trained on: each shard's split, name and bytes, so that a moved data folder keeps
    its regressor and a re-prepared one does not."""
    digest = hashlib.sha256(json.dumps([steps, seed]).encode())
    for path in paths:
        digest.update(f"{path.parent.name}/{path.name}".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


# -- measuring one clip ----------------------------------------------------------------------------------

def face_outside_mouth(shard: Shard, landmarks: np.ndarray) -> np.ndarray:
    """(S, S) mask: the head placement mask without the union of every frame's mouth box."""
    size = shard.arrays["frames"].shape[1]
    mouth = mouth_boxes(landmarks, np.asarray(shard.meta["regions"]["mouth"]), size).max(0)[0]
    return shard.arrays["head_masks"].astype(np.float64) * (1 - mouth)


def clip_metrics(generated: np.ndarray, shard: Shard, regressor) -> dict:
    """Every per-clip figure for uint8 ``generated`` (F, S, S, 3) against the shard's ground truth."""
    n = min(len(generated), int(shard.meta["n_frames"]))
    made, real = generated[:n], shard.arrays["frames"][:n]
    truth = shard.arrays["landmarks"][:n]
    regions = {k: np.asarray(v) for k, v in shard.meta["regions"].items()}
    mouth = regions["mouth"]
    measured = regressor.landmarks(made)
    opening, true_opening = mouth_opening(measured, regions), mouth_opening(truth, regions)
    scale = face_scale(truth, regions)
    mask = face_outside_mouth(shard, truth)
    samples, fps = shard.arrays["audio"].astype(np.float32), float(shard.meta["fps"])
    return {
        "lip_sync": lip_sync_correlation(opening, true_opening),
        "identity_ssim": ssim(made / 255.0, real / 255.0, mask),
        "psnr": psnr(made / 255.0, real / 255.0),
        "flicker": flicker(made / 255.0),
        "flicker_ground_truth": flicker(real / 255.0),
        "lmd": landmark_distance(measured, truth, scale),
        "lmd_mouth": landmark_distance(measured[:, mouth], truth[:, mouth], scale),
        "adfd": asdict(adfd(measured, regions, samples, SAMPLE_RATE, fps, ground_truth_opening=true_opening)),
    }


def autoencoded(frames: np.ndarray, pipeline, chunk: int = 32) -> np.ndarray:
    """uint8 frames through the model's VAE and back, decoded as the pipeline decodes its outputs: the best any
    output of this model can look."""
    import torch
    from einops import rearrange

    with torch.inference_mode():
        pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
        latents = torch.cat([pipeline.backbone.encode_images(pixels[i:i + chunk]) for i in range(0, len(pixels), chunk)])
    return np.concatenate([f.numpy() for f in pipeline.decode(rearrange(latents, "f c h w -> 1 c f h w"), chunk)])


def posed_still(frames: np.ndarray, landmarks: np.ndarray, regions: dict) -> np.ndarray:
    """The first frame moved, frame by frame, as the head moves: the similarity transform that takes the first
    frame's brow and nose landmarks onto each frame's (head_motion.RIGID_REGIONS: the mouth, jaw and eyes move on
    their own)."""
    size = frames.shape[2], frames.shape[1]
    return np.stack([cv2.warpAffine(frames[0], transform, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                     for transform in motion_from_landmarks(landmarks[:len(frames)], regions)])


def baseline_metrics(shard: Shard, regressor, pipeline=None, window: int | None = None) -> dict:
    """The instrument's ceiling (the ground truth measured as the output is), a still face's figures, the still
    face moved with the ground truth's head (its identity SSIM) and, with the model's pipeline, the ground truth
    through its VAE (the ceiling of image fidelity). The still faces and the VAE round trip cover the first
    ``window`` frames (None: all), the span the model's output covers: the head drifts further from the first
    frame the longer a clip runs."""
    real = shard.arrays["frames"]
    truth = shard.arrays["landmarks"]
    regions = {k: np.asarray(v) for k, v in shard.meta["regions"].items()}
    measured = regressor.landmarks(real)
    samples, fps = shard.arrays["audio"].astype(np.float32), float(shard.meta["fps"])
    span = len(real) if window is None else min(window, len(real))
    still = clip_metrics(np.repeat(real[:1], span, 0), shard, regressor)
    posed = posed_still(real[:span], truth, regions)
    posed_identity = ssim(posed / 255.0, real[:span] / 255.0, face_outside_mouth(shard, truth[:span]))
    scores, ordered = ordering_test(truth, regions, samples, SAMPLE_RATE, fps)
    true_opening = mouth_opening(truth, regions)
    extra = {}
    if pipeline is not None:
        roundtrip = clip_metrics(autoencoded(real[:span], pipeline), shard, regressor)
        extra = {"vae_identity_ssim": roundtrip["identity_ssim"], "vae_lip_sync": roundtrip["lip_sync"]}
    return {
        **extra,
        "ceiling_lip_sync": lip_sync_correlation(mouth_opening(measured, regions), true_opening),
        "ceiling_lmd": landmark_distance(measured, truth, face_scale(truth, regions)),
        "ceiling_adfd": adfd(measured, regions, samples, SAMPLE_RATE, fps, ground_truth_opening=true_opening).score,
        "still_lip_sync": still["lip_sync"], "still_identity_ssim": still["identity_ssim"],
        "still_adfd": still["adfd"]["score"], "posed_still_identity_ssim": posed_identity,
        "ordering_scores": scores, "ordering_holds": ordered,
    }


def own_background(photo: np.ndarray, head_mask: np.ndarray, colours: list[str], tolerance: float = 40.0
                   ) -> np.ndarray:
    """(S, S) bool: the photo's background pixels, outside the head mask. The head mask does not cover long hair,
    so a pixel counts only if its colour lies within ``tolerance`` (RGB levels) of the background's own colours
    (of the segment between them: gradients blend the two)."""
    a, b = (np.asarray(BACKGROUND_COLOURS[c], np.float64) for c in (colours[0], colours[-1]))
    pixels = photo.astype(np.float64)
    along = np.clip(((pixels - a) @ (b - a)) / max(float((b - a) @ (b - a)), 1e-9), 0.0, 1.0)
    distance = np.linalg.norm(pixels - (a + along[..., None] * (b - a)), axis=-1)
    return (head_mask == 0) & (distance <= tolerance)


def background_pixels(background: np.ndarray, head_mask: np.ndarray) -> np.ndarray:
    """(S, S) bool: where the prompt test reads the background: the photo's own ``background`` (``own_background``)
    in the top third."""
    outside = head_mask == 0
    outside[len(outside) // 3:] = False
    region = outside & background
    return region if region.any() else outside   # no pixel of those colours: the whole area, hair and all


def background_colour(frames: np.ndarray, region: np.ndarray) -> str:
    """The palette background colour most of the frames' pixels in ``region`` (S, S) bool are nearest to. A vote,
    not the mean: the mean of teal and beige stripes is grey, a colour nobody drew."""
    names = list(BACKGROUND_COLOURS)
    palette = np.asarray([BACKGROUND_COLOURS[n] for n in names], np.float64)
    pixels = frames[:, region].reshape(-1, 3).astype(np.float64)
    nearest = np.linalg.norm(pixels[:, None] - palette[None], axis=-1).argmin(1)
    return names[int(np.bincount(nearest, minlength=len(names)).argmax())]


def recoloured_prompt(caption: str, clip_id: str, avoid: set[str]) -> tuple[str, str]:
    """The caption with its background replaced by a palette colour the identity does not have (chosen
    from the clip's name, so the same every run)."""
    choices = [c for c in BACKGROUND_COLOURS if c not in avoid]
    colour = choices[int(hashlib.sha256(clip_id.encode()).hexdigest(), 16) % len(choices)]
    return with_background(caption, colour), colour


def with_background(caption: str, colour: str) -> str:
    """The caption's person in front of a solid ``colour`` background."""
    subject = caption.split(", in front of ")[0]
    return f"{subject}, in front of {'an' if colour[0] in 'aeiou' else 'a'} {colour} background"


def clip_seed(seed: int, clip_id: str) -> int:
    """A noise seed of the clip's own, from its name (the same every run). The two prompt clips of one person share
    their photo (the first frame), so with one seed for both the palette would repeat the same restyles."""
    return (seed + int(hashlib.sha256(clip_id.encode()).hexdigest(), 16)) % 2**31


def restyle_palette(pipeline, reference: np.ndarray, caption: str, avoid: set[str], region: np.ndarray,
                    settings: EvalSettings, seed: int, aligned: np.ndarray, background: np.ndarray) -> list[dict]:
    """The photo restyled alone (no animation), from its caption with the background recoloured to each palette
    colour not in ``avoid``, from noise drawn with ``seed``; each background read in ``region`` as the prompt test
    reads the output's. Next to each, its ceiling (``vae_found``): the ``aligned`` photo (whose ``region`` this is)
    with its ``background`` pixels painted in that colour by hand, through the model's VAE alone and read the same
    way. A colour the VAE cannot carry, no restyle can show."""
    from ..pipeline import GenerationSettings

    generation = GenerationSettings(**{**_sampling(settings), "seed": seed}, restyle=True,
                                    restyle_scale=settings.restyle_scale)
    refs = pipeline.prepare_references([reference], pipeline.config.resolution)
    colours = [c for c in BACKGROUND_COLOURS if c not in avoid]
    painted = np.repeat(aligned[None], len(colours), axis=0)
    painted[:, background] = np.asarray([BACKGROUND_COLOURS[c] for c in colours], np.uint8)[:, None]
    autoencoded_paint = autoencoded(painted, pipeline)
    results = []
    for colour, through_vae in zip(colours, autoencoded_paint):
        prompt = with_background(caption, colour)
        text, negative = pipeline.encode_prompts(prompt, generation.negative_prompt)
        photo = pipeline.restyle(refs, text, negative, replace(generation, prompt=prompt))
        found = background_colour(photo.faces[0].image[None], region)
        results.append({"prompted": colour, "found": found, "hit": found == colour,
                        "vae_found": background_colour(through_vae[None], region)})
    return results


# -- the whole evaluation ------------------------------------------------------------------------------

def evaluate(settings: EvalSettings, pipeline=None, progress=print) -> dict:
    from ..pipeline import GenerationSettings, PortraitTalkPipeline

    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    if pipeline is None:
        pipeline = (PortraitTalkPipeline.from_pretrained(settings.weights) if settings.weights
                    else PortraitTalkPipeline.demo())
    config = pipeline.config
    if settings.audio_scale is None:  # resolved here so that the report records the guidance used
        settings = replace(settings, audio_scale=config.audio_scale)
    if settings.split not in ("test", "val"):
        raise InputError(f"unknown split '{settings.split}'", "use test (the figures to report) or val (tuning)")
    data, shards = eval_data(settings, config.resolution, config.face_fraction)
    videos, clip_shards = data / settings.split, shards[settings.split]
    regressor, regressor_clips = measuring_regressor([shards["train"], shards["val"]], out, settings.regressor_steps,
                                                     settings.seed, progress)
    clips = sorted(clip_shards.glob("*.npz"))
    if not clips:
        raise InputError(f"no prepared {settings.split} clips in '{clip_shards}'", f"see {clip_shards}/prepare_report.json")
    clips = spread_over_identities(clips)
    per_clip, baselines, prompts, palette = [], [], [], []
    for index, path in enumerate(clips):
        shard = Shard.load(path)
        video = videos / f"{path.stem}.mp4"
        if index < max(settings.clips, settings.prompt_clips):
            reference = read_video(video)[0][0]                # the clip's first frame is the photo
        pipeline.detector = KnownFace(sidecar_landmarks(video))
        meta = json.loads(video.with_suffix(".json").read_text())
        window = None if settings.seconds is None else round(settings.seconds * float(shard.meta["fps"]))
        baselines.append(baseline_metrics(shard, regressor, pipeline if index < settings.clips else None, window))
        if index < settings.clips:
            made: list[np.ndarray] = []
            regions = {k: np.asarray(v) for k, v in shard.meta["regions"].items()}
            motion = (motion_from_landmarks(shard.arrays["landmarks"][:window], regions) if settings.head_motion
                      else None)
            pipeline([reference], _speech(shard, settings.seconds), None, GenerationSettings(
                prompt=meta["caption"], **_sampling(settings), fps=float(shard.meta["fps"])),
                progress=False, on_frames=made.append, head_motion=motion)
            result = clip_metrics(np.concatenate(made), shard, regressor)
            per_clip.append({"clip": path.stem, **result})
            progress(f"[{index + 1}/{min(settings.clips, len(clips))}] {path.stem}: lip sync "
                     f"{result['lip_sync']:.3f}, identity SSIM {result['identity_ssim']:.3f}, "
                     f"ADFD {result['adfd']['score']:.3f}")
        if index < settings.prompt_clips:
            identity = meta["identity"]
            avoid = {identity["background_colour"], identity.get("background_colour2") or ""}
            prompt, colour = recoloured_prompt(meta["caption"], path.stem, avoid)
            made = []
            pipeline([reference], _speech(shard, settings.prompt_seconds), None,
                     GenerationSettings(prompt=prompt, **_sampling(settings), fps=float(shard.meta["fps"]),
                                        restyle=True, restyle_scale=settings.restyle_scale),
                     progress=False, on_frames=made.append)
            own = [identity["background_colour"], identity.get("background_colour2") or identity["background_colour"]]
            aligned, head_masks = shard.arrays["frames"][0], shard.arrays["head_masks"]   # the photo, as prepared
            background = own_background(aligned, head_masks, own)
            region = background_pixels(background, head_masks)
            found = background_colour(np.concatenate(made), region)
            prompts.append({"clip": path.stem, "prompted": colour, "found": found, "hit": found == colour,
                            "own": identity["background_colour"]})
            progress(f"prompt test {path.stem}: asked {colour}, found {found}")
            if settings.prompt_palette:
                recoloured = restyle_palette(pipeline, reference, meta["caption"], avoid, region, settings,
                                             clip_seed(settings.seed, path.stem), aligned, background)
                palette += [{"clip": path.stem, **r} for r in recoloured]
                progress(f"  every other colour: {sum(r['hit'] for r in recoloured)} of {len(recoloured)} found")
    report = summarise(per_clip, baselines, prompts, palette)
    report["split"], report["settings"] = settings.split, asdict(settings)
    report["head_motion"] = ("ground truth" if settings.head_motion else "speech"
                             if pipeline.moves_head_from_speech(GenerationSettings(**_sampling(settings))) else "still")
    (out / "eval.json").write_text(json.dumps({**report, "clips": per_clip, "prompt_clips": prompts,
                                               "prompt_palette": palette,
                                               "baselines": baselines,
                                               "regressor_clips": [f"{p.parent.name}/{p.name}" for p in regressor_clips]},
                                              indent=1))
    return report


def spread_over_identities(clips: list[Path]) -> list[Path]:
    """Sorted clips reordered round-robin over identities (a clip's name starts with its identity's
    10-character id), so the first N clips cover as many identities as they can."""
    rank, seen = {}, {}
    for path in clips:  # already sorted: the k-th clip of an identity gets rank k
        rank[path] = seen.get(path.name[:10], 0)
        seen[path.name[:10]] = rank[path] + 1
    return sorted(clips, key=lambda p: (rank[p], p.name))


def _sampling(settings: EvalSettings) -> dict:
    return dict(steps=settings.steps, sampler=settings.sampler, denoise=settings.denoise, region=settings.region,
                paste_photo=settings.paste_photo, seed=settings.seed,
                head_motion_from_speech=settings.head_motion_from_speech, text_scale=settings.text_scale,
                identity_scale=settings.identity_scale, audio_scale=settings.audio_scale)


def _speech(shard: Shard, seconds: float | None) -> tuple[np.ndarray, int]:
    """The clip's speech (mono at audio.SAMPLE_RATE, as prepared), its first ``seconds`` if given."""
    samples = shard.arrays["audio"].astype(np.float32)
    return (samples if seconds is None else samples[:int(seconds * SAMPLE_RATE)]), SAMPLE_RATE


def _mean(values) -> float:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def summarise(per_clip: list[dict], baselines: list[dict], prompts: list[dict], palette: list[dict] = ()) -> dict:
    """Means over clips. The baselines read next to the model's figures are those of the clips it generated (the
    first ``len(per_clip)``); the ADFD ordering test counts every clip of the split. ``palette``: the restyles with
    every other colour, summed over all and per colour ("hits/tries")."""
    generated = baselines[:len(per_clip)] or baselines
    summary = {name: _mean(c[name] for c in per_clip)
               for name in ("lip_sync", "identity_ssim", "psnr", "flicker", "flicker_ground_truth", "lmd",
                            "lmd_mouth")}
    summary["adfd"] = _mean(c["adfd"]["score"] for c in per_clip)
    summary["prompt_accuracy"] = _mean(float(p["hit"]) for p in prompts)
    summary["prompt_palette_accuracy"] = _mean(float(p["hit"]) for p in palette)
    summary["prompt_palette_vae_ceiling"] = _mean(float(p["vae_found"] == p["prompted"]) for p in palette)
    summary["prompt_palette_by_colour"] = {
        colour: f"{sum(p['hit'] for p in palette if p['prompted'] == colour)}/"
                f"{sum(p['prompted'] == colour for p in palette)}"
        for colour in BACKGROUND_COLOURS if any(p["prompted"] == colour for p in palette)}
    summary.update({name: _mean(b[name] for b in generated)
                    for name in ("ceiling_lip_sync", "ceiling_lmd", "ceiling_adfd", "still_lip_sync",
                                 "still_identity_ssim", "still_adfd", "posed_still_identity_ssim")})
    summary.update({name: _mean(b[name] for b in generated if name in b)
                    for name in ("vae_identity_ssim", "vae_lip_sync")})
    summary["ordering_holds"] = f"{sum(b['ordering_holds'] for b in baselines)}/{len(baselines)}"
    summary["clips"], summary["prompt_clips"] = len(per_clip), len(prompts)
    summary["prompt_palette_tries"] = len(palette)
    return summary


def format_report(report: dict) -> str:
    def verdict(name):
        return "meets target" if report[name] >= TARGETS[name] else "BELOW target"

    motion = {"ground truth": " following the ground truth's head motion",
              "speech": ", the head moving as the model predicts from the speech"}.get(report.get("head_motion"), "")
    generated = report["clips"] > 0
    lines = [
        f"PortraitTalk eval: {report['clips']} {report['split']} clips (held-out identities and sentences){motion}, "
        f"{report['prompt_clips']} prompt clips; guidance text {report['settings']['text_scale']:g} / identity "
        f"{report['settings']['identity_scale']:g} / audio {report['settings']['audio_scale']:g}",
        *([f"  lip sync (aperture correlation)   {report['lip_sync']:.3f}   target >= 0.6: {verdict('lip_sync')}"
           f"   [ground truth as measured {report['ceiling_lip_sync']:.3f}, through the VAE "
           f"{report['vae_lip_sync']:.3f}, still face {report['still_lip_sync']:.3f}]",
           f"  identity SSIM outside the mouth   {report['identity_ssim']:.3f}   target >= 0.8: "
           f"{verdict('identity_ssim')}   [ground truth through the VAE {report['vae_identity_ssim']:.3f}, still face "
           f"{report['still_identity_ssim']:.3f}, still face moved with the head "
           f"{report['posed_still_identity_ssim']:.3f}]"]
          if generated else ["  lip sync, identity, flicker, ADFD, LMD, PSNR: not run (--clips 0)"]),
        f"  prompt colour found               {report['prompt_accuracy']:.3f}   target >= 0.8: "
        f"{verdict('prompt_accuracy')}   [chance {1 / len(BACKGROUND_COLOURS):.3f}]" if report["prompt_clips"] else
        "  prompt colour found               not run (--prompt-clips 0)",
        *([f"  prompt colour, whole palette      {report['prompt_palette_accuracy']:.3f}   the prompt clips' photos "
           f"restyled alone with every other colour ({report['prompt_palette_tries']} tries): "
           + " ".join(f"{c} {n}" for c, n in report["prompt_palette_by_colour"].items())
           + f"   [painted by hand, through the VAE alone: {report['prompt_palette_vae_ceiling']:.3f}]"]
          if report.get("prompt_palette_tries") else []),
        *([f"  flicker (mean |frame change|)     {report['flicker']:.4f}   ground truth "
           f"{report['flicker_ground_truth']:.4f}   ratio "
           f"{report['flicker'] / max(report['flicker_ground_truth'], 1e-12):.2f}",
           f"  ADFD                              {report['adfd']:.3f}   [ground truth {report['ceiling_adfd']:.3f}, "
           f"still face {report['still_adfd']:.3f}]"] if generated else []),
        f"  ADFD ordering (sync > shift > still > jitter) holds on {report['ordering_holds']} {report['split']} clips",
        *([f"  LMD (inter-ocular units)          {report['lmd']:.4f}   mouth {report['lmd_mouth']:.4f}"
           f"   [instrument error on ground truth {report['ceiling_lmd']:.4f}]",
           f"  PSNR                              {report['psnr']:.2f} dB"] if generated else []),
    ]
    return "\n".join(lines)
