"""Training samples from prepared shards (data/shards.py).

Stage 1 takes single frames with a reference frame of the same clip; stage 2 takes clips of consecutive
frames with their audio windows and the clip's structure maps; stage motion takes clips with the head's movement
since their first frame (``head_motion``, from the landmarks). Which frames a sample takes is drawn from
``(seed, epoch, index)``, so a run is reproducible and a resumed run sees the same samples.

The single-frame stages (base, 1) can also take stills of many more people (``StillsDataset``, made by
``synth/stills.py``), mixed in by ``MixedDataset``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..audio import frame_windows
from ..conditioning import mouth_boxes, structure_maps
from ..data.shards import Shard
from ..errors import InputError
from ..head_motion import motion_from_landmarks


def _pixels(frames: np.ndarray) -> torch.Tensor:
    """(..., S, S, 3) uint8 -> (..., 3, S, S) float in [-1, 1]."""
    return torch.from_numpy(frames).movedim(-1, -3).float() / 127.5 - 1


@torch.no_grad()
def encode_frames(encode, frames: np.ndarray, chunk: int) -> torch.Tensor:
    """(N, S, S, 3) uint8 frames -> their latents (N, C, h, w) on the CPU, ``chunk`` frames at a time."""
    pixels = _pixels(frames)
    return torch.cat([encode(pixels[i:i + chunk]).float().cpu() for i in range(0, len(pixels), chunk)]).contiguous()


def cached_tensors(file: Path | None, tag: dict[str, str], make) -> dict[str, torch.Tensor]:
    """The tensors kept in ``file`` (safetensors) when its metadata is ``tag``; otherwise ``make()``'s, kept there."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    if file is not None and Path(file).exists():
        with safe_open(str(file), "pt") as f:
            if f.metadata() == tag:
                return {k: f.get_tensor(k) for k in f.keys()}
    tensors = make()
    if file is not None:
        try:
            save_file(tensors, str(file), metadata=tag)
        except OSError:  # a read-only dataset: the cache just lives for this run
            pass
    return tensors


class ShardDataset(torch.utils.data.Dataset):
    def __init__(self, folder, frames: int = 1, audio_window: int = 2, seed: int = 0, head_motion: bool = False):
        self.head_motion = head_motion
        self.paths = sorted(Path(folder).glob("*.npz"))
        if not self.paths:
            raise InputError(f"no prepared shards (*.npz) in '{folder}'",
                             "run `portraittalk prepare VIDEOS --out FOLDER` (or `portraittalk synth` first)")
        self.frames, self.audio_window, self.seed, self.epoch = frames, audio_window, seed, 0
        self.latents: list[torch.Tensor] | None = None  # per shard, set by cache_latents
        shards = [Shard.load(p) for p in self.paths]  # small models: the cache fits in memory
        self.shards = [s for s in shards if int(s.meta["n_frames"]) >= frames]
        if not self.shards:
            raise InputError(f"no shard in '{folder}' has the {frames} frames a sample needs",
                             "use longer clips or fewer --frames")

    def __len__(self) -> int:
        return len(self.shards)

    def cache_latents(self, encode, file: Path | None = None, fingerprint: str = "", chunk: int = 64) -> None:
        """Encode every frame once with a frozen VAE (``encode``: pixels -> scaled latents); samples then carry
        ``latents`` and ``reference_latent`` and the training step skips the encoder, which on a CPU costs
        more than the networks being trained. With ``file`` the latents are kept there (safetensors) for the
        next stage, and reused only if they were made by the same VAE (``fingerprint``) from the same shards."""
        names = [s.path.name for s in self.shards]
        latents = cached_tensors(file, {"fingerprint": fingerprint, "shards": json.dumps(names)}, lambda: {
            s.path.name: encode_frames(encode, s.arrays["frames"], chunk) for s in self.shards})
        self.latents = [latents[name] for name in names]

    def use_epoch(self, epoch: int) -> None:
        # Not named set_epoch: accelerate calls set_epoch with its own count of iterations, which a
        # resumed run would restart from 0.
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        shard = self.shards[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        n = int(shard.meta["n_frames"])
        length = min(self.frames, n)
        start = int(rng.integers(0, n - length + 1))
        reference = int(rng.integers(0, n))
        frames = shard.arrays["frames"]
        landmarks = shard.arrays["landmarks"]
        regions = {k: np.asarray(v) for k, v in shard.meta["regions"].items()}
        size = frames.shape[1]
        structure = structure_maps(shard.arrays["head_masks"], landmarks[start], regions)
        features = torch.from_numpy(shard.arrays["audio_features"].astype(np.float32))
        windows = frame_windows(features, shard.meta["feature_rate"], shard.meta["fps"], n, self.audio_window)
        sample = {
            "frames": _pixels(frames[start:start + length]),           # (F, 3, S, S)
            "reference": _pixels(frames[reference]),                    # (3, S, S)
            "structure": torch.from_numpy(structure),                   # (4, S, S)
            "audio": windows[start:start + length].clone(),             # (F, W, L, C)
            "mouth": torch.from_numpy(mouth_boxes(landmarks[start:start + length], regions["mouth"], size)),
            "caption": shard.meta.get("caption", ""),
        }
        if self.latents is not None:
            sample["latents"] = self.latents[index][start:start + length]
            sample["reference_latent"] = self.latents[index][reference]
        if self.head_motion:   # (F, 2, 3): as models/head_pose.py measures movement, in crops of side 1
            movement = motion_from_landmarks(landmarks[start:start + length], regions)
            movement[:, :, 2] /= size
            sample["head_motion"] = torch.from_numpy(movement)
        if "embedding" in shard.arrays:
            sample["embedding"] = torch.from_numpy(shard.arrays["embedding"])
        return sample


def collate(samples: list[dict]) -> dict:
    """Stacks the tensors every sample has (a batch mixing clips and stills keeps only what both carry)."""
    shared = [k for k in samples[0] if isinstance(samples[0][k], torch.Tensor) and all(k in s for s in samples)]
    out = {k: torch.stack([s[k] for s in samples]) for k in shared}
    out["caption"] = [s["caption"] for s in samples]
    return out


class StillsDataset(torch.utils.data.Dataset):
    """Single-frame samples from a stills file (synth/stills.py): each still is its own reference, and has no
    audio, so the batches carry only what the base and stage 1 read."""

    def __init__(self, file):
        path = Path(file)
        if not path.exists():
            raise InputError(f"stills file not found: looked for '{path.name}' in '{path.parent}'",
                             "make it with portraittalk_core.synth.stills.make_stills (train-demo does)")
        with np.load(path) as data:
            self.frames = data["frames"]
            self.captions = [str(c) for c in data["captions"]]
            self.meta = json.loads(str(data["meta"]))
        self.path = path
        self.latents: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def cache_latents(self, encode, file=None, fingerprint: str = "", chunk: int = 64) -> None:
        """As ShardDataset.cache_latents, the whole file's latents in one tensor."""
        tag = {"fingerprint": fingerprint, "stills": json.dumps(self.meta)}
        latents = cached_tensors(file, tag, lambda: {"latents": encode_frames(encode, self.frames, chunk)})
        self.latents = latents["latents"]

    def use_epoch(self, epoch: int) -> None:
        pass  # a still is the same sample in every epoch

    def __getitem__(self, index: int) -> dict:
        frame = _pixels(self.frames[index])
        sample = {"frames": frame[None], "reference": frame, "caption": self.captions[index]}
        if self.latents is not None:
            sample["latents"] = self.latents[index][None]
            sample["reference_latent"] = self.latents[index]
        return sample


class MixedDataset(torch.utils.data.Dataset):
    """Several datasets as one, in an order shuffled per epoch from ``(seed, epoch)``: batches mix their samples,
    and a resumed run sees the same order."""

    def __init__(self, parts: list, seed: int = 0):
        self.parts, self.seed = parts, seed
        self.index = [(p, i) for p, part in enumerate(parts) for i in range(len(part))]
        self.order = np.arange(len(self.index))

    def __len__(self) -> int:
        return len(self.index)

    def use_epoch(self, epoch: int) -> None:
        for part in self.parts:
            part.use_epoch(epoch)
        self.order = np.random.default_rng([self.seed, epoch, 7]).permutation(len(self.index))

    def __getitem__(self, index: int) -> dict:
        part, i = self.index[self.order[index]]
        return self.parts[part][i]
