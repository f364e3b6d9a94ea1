"""The wav2vec2 front end: a waveform -> every hidden layer of a local safetensors wav2vec2 checkpoint.

The folder is checked before anything loads (config.json, model.safetensors; pickled ``.bin`` weights are
refused), and transformers is only imported when a model is loaded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ..errors import WeightsError
from ..io.audio import SAMPLE_RATE, Waveform, _samples_at
from .features import interpolate_to_frames


class Wav2Vec2FrontEnd:
    """Every hidden state of a wav2vec2 model read from a local folder (50 features per second).

    The folder needs ``config.json`` and ``model.safetensors`` (for instance from
    facebook/wav2vec2-base-960h); ``preprocessor_config.json`` is optional. Weights are only ever
    read from safetensors: a ``pytorch_model.bin`` is a pickle that can run code, so it is refused.

    Long audio is processed in chunks of ``chunk_seconds`` with ``context_seconds`` of extra audio
    on each side that is run but dropped, so memory stays bounded and chunk seams see context.
    Chunks start on the model's frame grid, so the output has exactly as many steps as a single
    pass over the whole clip would (49 for one second of base models).
    """

    name = "wav2vec2"

    def __init__(
        self,
        folder,
        device="cpu",
        dtype=torch.float32,
        chunk_seconds: float = 20.0,
        context_seconds: float = 1.0,
    ):
        folder = Path(folder).expanduser()
        self.folder = folder
        _check_wav2vec2_folder(folder)
        self.sample_rate, self.normalize = _read_preprocessor(folder)
        self.device, self.dtype = torch.device(device), dtype
        self.model = _load_wav2vec2(folder, dtype).to(self.device).eval()

        config = self.model.config
        self._hop = math.prod(config.conv_stride)
        self._field = _receptive_field(tuple(config.conv_kernel), tuple(config.conv_stride))
        self.feature_rate = self.sample_rate / self._hop
        self.num_layers = config.num_hidden_layers + 1  # the embeddings plus every layer
        self.feature_dim = config.hidden_size
        self._core_frames = max(1, round(chunk_seconds * self.feature_rate))
        self._context_frames = max(0, round(context_seconds * self.feature_rate))

    def __call__(self, wave: Waveform) -> torch.Tensor:
        """(T, num_layers, hidden_size) float32 on the CPU."""
        samples = _samples_at(wave, self.sample_rate)
        if self.normalize:
            samples = _zero_mean_unit_var(samples)
        # The conv stack needs one receptive field of input to produce a single step.
        samples = np.pad(samples, (0, max(0, self._field - len(samples))))
        # The hidden states are read before any adapter layers, so those do not shorten them.
        steps = int(self.model._get_feat_extract_output_lengths(len(samples), add_adapter=False))

        pieces = []
        for start, end, keep_from, keep_to in _chunk_plan(
            len(samples), steps, self._hop, self._field, self._core_frames, self._context_frames
        ):
            chunk = torch.from_numpy(samples[start:end]).to(self.device, self.dtype)[None]
            with torch.inference_mode():
                states = self.model(chunk, output_hidden_states=True).hidden_states
                kept = torch.stack(states)[:, 0, keep_from:keep_to]  # (L, t, C)
                pieces.append(rearrange(kept, "l t c -> t l c").float().cpu())
        # Concatenating outside inference mode gives an ordinary tensor that later training code may use.
        return torch.cat(pieces)

    def at_frames(self, wave: Waveform, frames: int, pad_samples: int = 0) -> torch.Tensor:
        """Hallo's reading (config ``audio_frames`` "encoder_input"): (frames, num_layers - 1, C), every layer's
        output at the video rate, float32 on the CPU.

        The clip is normalised as a whole (in float32, as Wav2Vec2FeatureExtractor's own call does), then
        ``pad_samples`` samples of silence are appended; the CNN's features are interpolated to ``frames`` *before*
        the feature projection and the encoder, and the layers' outputs are kept without the embeddings'
        (hallo/datasets/audio_processor.py:104-125; hallo/models/wav2vec.py:75-77). One pass over the whole clip, as
        theirs: no chunks."""
        samples = _samples_at(wave, self.sample_rate)
        if self.normalize:
            samples = _zero_mean_unit_var(samples, np.float32)
        samples = np.pad(samples, (0, pad_samples))
        samples = np.pad(samples, (0, max(0, self._field - len(samples))))

        def at_video_rate(module, args, output):  # the CNN's (1, C, T) -> (1, C, frames)
            return rearrange(interpolate_to_frames(rearrange(output, "b c t -> b t c"), frames), "b t c -> b c t")

        hook = self.model.feature_extractor.register_forward_hook(at_video_rate)
        try:
            with torch.inference_mode():
                states = self.model(torch.from_numpy(samples).to(self.device, self.dtype)[None],
                                    output_hidden_states=True).hidden_states
        finally:
            hook.remove()
        return rearrange(torch.stack(states[1:]), "l 1 t c -> t l c").float().cpu().clone()


def _check_wav2vec2_folder(folder: Path) -> None:
    """Refuse a folder that cannot hold a loadable safetensors wav2vec2, naming what is missing."""
    put_there = f"put facebook/wav2vec2-base-960h's config.json and model.safetensors in {folder}"
    if not folder.is_dir():
        raise WeightsError(f"wav2vec2 folder not found: {folder}", f"create it and {put_there}")
    config = folder / "config.json"
    if not config.is_file():
        raise WeightsError(
            f"config.json is missing from the wav2vec2 folder {folder} (looked for {config})", put_there
        )
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise WeightsError(f"cannot read {config} as JSON ({exc})", put_there) from exc
    if model_type != "wav2vec2":
        raise WeightsError(f"{config} describes a {model_type!r} model, not wav2vec2", put_there)

    weights = folder / "model.safetensors"
    if weights.is_file() or (folder / "model.safetensors.index.json").is_file():
        return
    pickles = sorted(p.name for p in folder.glob("*.bin"))
    if pickles:
        raise WeightsError(
            f"{folder} has {', '.join(pickles)} but no model.safetensors; safetensors weights are required "
            "because .bin files are pickles that can run code when loaded",
            f"download model.safetensors from the same Hugging Face repository into {folder}",
        )
    raise WeightsError(
        f"model.safetensors is missing from the wav2vec2 folder {folder} (looked for {weights})", put_there
    )


def _read_preprocessor(folder: Path) -> tuple[int, bool]:
    """(sampling_rate, do_normalize) from preprocessor_config.json, else wav2vec2's defaults."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return SAMPLE_RATE, True
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
        rate = int(settings.get("sampling_rate", SAMPLE_RATE))
        return rate, bool(settings.get("do_normalize", True))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise WeightsError(
            f"cannot read {path} ({exc})",
            "delete it (defaults are used) or copy the model's original preprocessor_config.json",
        ) from exc


def _load_wav2vec2(folder: Path, dtype: torch.dtype):
    """The bare Wav2Vec2Model (a CTC checkpoint's head is dropped), refusing mismatched weights."""
    from transformers import Wav2Vec2Model  # slow import, only needed here

    fix = (
        "put config.json and model.safetensors from the same wav2vec2 model "
        f"(e.g. facebook/wav2vec2-base-960h) in {folder}"
    )
    try:
        model, info = Wav2Vec2Model.from_pretrained(
            folder, local_files_only=True, use_safetensors=True, dtype=dtype, output_loading_info=True
        )
    except Exception as exc:  # transformers raises many types; all mean the same thing here
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsError(f"cannot load wav2vec2 from {folder}: {first_line}", fix) from exc
    # masked_spec_embed is only used for training-time masking; some checkpoints omit it.
    missing = sorted(k for k in info.get("missing_keys", ()) if k != "masked_spec_embed")
    if missing:
        raise WeightsError(
            f"model.safetensors in {folder} does not match config.json "
            f"({len(missing)} weights missing, e.g. {missing[0]})",
            fix,
        )
    return model


def _zero_mean_unit_var(samples: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Whole-clip normalisation, Wav2Vec2FeatureExtractor's own, by default on float64 samples: its ``__call__``
    casts them to float32 first (``dtype`` float32 does as it does), and float32 sums over a long clip make the mean
    and variance less exact."""
    from transformers import Wav2Vec2FeatureExtractor  # slow import, only needed here

    normalised = Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm([samples.astype(dtype)], None)[0]
    return normalised.astype(np.float32)


def _receptive_field(kernels: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """Samples seen by one output step (400 for base models)."""
    field, jump = 1, 1
    for kernel, stride in zip(kernels, strides, strict=True):
        field += (kernel - 1) * jump
        jump *= stride
    return field


def _chunk_plan(
    n_samples: int, total: int, hop: int, field: int, core_frames: int, context_frames: int
) -> list[tuple[int, int, int, int]]:
    """(start, end, keep_from, keep_to) per chunk: run samples[start:end], keep steps [keep_from, keep_to).

    ``total``: the steps a whole-clip pass over ``n_samples`` gives. Output step k reads samples
    [k*hop, k*hop + field). A chunk starting at step s's first sample produces steps s, s+1, ...
    exactly as a whole-clip pass would (up to attention context), so the kept slices tile the
    whole-clip output with no gaps or repeats.
    """
    plan = []
    for first in range(0, total, core_frames):
        last = min(total, first + core_frames)
        run_from = max(0, first - context_frames)
        end = min(n_samples, (last - 1 + context_frames) * hop + field)
        plan.append((run_from * hop, end, first - run_from, last - run_from))
    return plan
