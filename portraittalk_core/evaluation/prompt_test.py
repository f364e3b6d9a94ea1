"""The prompt test: a clip generated with its caption's background recoloured, and its photo restyled alone with
every other colour of the palette (``restyle_palette``); each output's background colour is read where the photo
shows its own background (``own_background``, ``background_pixels``, ``background_colour``)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from ..data.shards import Shard
from ..synth.identity import BACKGROUND_COLOURS
from .baselines import autoencoded
from .settings import EvalSettings


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
    generation = replace(settings.generation, seed=seed, restyle=True)
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


def photo_background(shard: Shard, identity: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clip's photo as prepared (its first aligned frame), its own background pixels (``own_background``) and
    the region where the prompt test reads the background colour (``background_pixels``)."""
    own = [identity["background_colour"], identity.get("background_colour2") or identity["background_colour"]]
    aligned, head_masks = shard.arrays["frames"][0], shard.arrays["head_masks"]   # the photo, as prepared
    background = own_background(aligned, head_masks, own)
    return aligned, background, background_pixels(background, head_masks)
