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

Each step has its module: the clips (dataset.py), the measuring regressor (regressor.py), one clip's figures
(clips.py), the baselines (baselines.py), the prompt test (prompt_test.py) and the report (report.py); the
settings are in settings.py. ``evaluate`` runs them in that order.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..data.prepare import read_video, sidecar_landmarks
from ..data.shards import Shard
from ..errors import InputError
from ..head_motion import motion_from_landmarks
from ..pipeline import PortraitTalkPipeline
from .baselines import baseline_metrics
from .clips import clip_metrics
from .dataset import KnownFace, clip_speech, eval_data, spread_over_identities
from .prompt_test import background_colour, clip_seed, photo_background, recoloured_prompt, restyle_palette
from .regressor import measuring_regressor
from .report import summarise
from .settings import EvalSettings, as_record


def evaluate(settings: EvalSettings, pipeline=None, progress=print) -> dict:
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    if pipeline is None:
        pipeline = (PortraitTalkPipeline.from_pretrained(settings.weights) if settings.weights
                    else PortraitTalkPipeline.demo())
    config = pipeline.config
    generation = settings.generation
    if generation.audio_scale is None:  # resolved here so that the report records the guidance used
        generation = replace(generation, audio_scale=config.audio_scale)
        settings = replace(settings, generation=generation)
    if settings.split not in ("test", "val"):
        raise InputError(f"unknown split '{settings.split}'", "use test (the figures to report) or val (tuning)")
    data, shards = eval_data(settings, config.resolution, config.face_fraction)
    videos, clip_shards = data / settings.split, shards[settings.split]
    regressor, regressor_clips = measuring_regressor([shards["train"], shards["val"]], out, settings.regressor_steps,
                                                     generation.seed, progress)
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
            pipeline([reference], clip_speech(shard, settings.seconds), None,
                     replace(generation, prompt=meta["caption"], fps=float(shard.meta["fps"])),
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
            pipeline([reference], clip_speech(shard, settings.prompt_seconds), None,
                     replace(generation, prompt=prompt, fps=float(shard.meta["fps"]), restyle=True),
                     progress=False, on_frames=made.append)
            aligned, background, region = photo_background(shard, identity)
            found = background_colour(np.concatenate(made), region)
            prompts.append({"clip": path.stem, "prompted": colour, "found": found, "hit": found == colour,
                            "own": identity["background_colour"]})
            progress(f"prompt test {path.stem}: asked {colour}, found {found}")
            if settings.prompt_palette:
                recoloured = restyle_palette(pipeline, reference, meta["caption"], avoid, region, settings,
                                             clip_seed(generation.seed, path.stem), aligned, background)
                palette += [{"clip": path.stem, **r} for r in recoloured]
                progress(f"  every other colour: {sum(r['hit'] for r in recoloured)} of {len(recoloured)} found")
    report = summarise(per_clip, baselines, prompts, palette)
    report["split"], report["settings"] = settings.split, as_record(settings)
    report["head_motion"] = ("ground truth" if settings.head_motion else "speech"
                             if pipeline.moves_head_from_speech(generation) else "still")
    (out / "eval.json").write_text(json.dumps({**report, "clips": per_clip, "prompt_clips": prompts,
                                               "prompt_palette": palette,
                                               "baselines": baselines,
                                               "regressor_clips": [f"{p.parent.name}/{p.name}" for p in regressor_clips]},
                                              indent=1))
    return report
