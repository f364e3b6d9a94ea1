"""``portraittalk train --stage vae|decoder|text|base|1|2|motion``: one script for one CPU, one GPU or many GPUs
(accelerate launch).

- Stages vae and base train a small backbone from scratch, for models that bring their own (the embedded
  demo model): the VAE (L1 reconstruction of the pixels and of their horizontal and vertical differences,
  which keeps edges such as the lips sharp, + a small KL term; trained on the posterior mean, the latent
  that ``encode_images`` uses, and saved with ``scaling_factor`` = 1 / the latents' standard deviation, as
  SD's VAE was), then the base UNet with the text encoder (text-to-image noise prediction on single frames,
  captions dropped 10% of the time; the text encoder trains with it, at ``text_encoder_lr_scale`` of its rate, or
  not at all when that share is 0). Their output is a backbone file (``backbone.safetensors``) that
  later stages take with ``--backbone``.
  Stage vae also takes ``--stills`` (thousands of people, where the clips have a few dozen).
- Stage decoder fine-tunes the VAE's decoder alone, with the VAE's reconstruction loss, on frames that the VAE
  stage did not see (``--stills``, for a VAE trained on the clips alone). The encoder is frozen,
  so every latent, and everything trained on latents after it, stays exactly as it was: only what the frames
  look like decoded changes (as SD's fine-tuned "ft-MSE" decoder did).
- Stage text trains the text encoder contrastively against a small image encoder on frames and their captions,
  as CLIP was trained (contrastive.py), so that the base starts from words that already mean what they show.

- Stage 1 trains IdentityNet, the identity projection and (for models without ArcFace) the builtin face
  encoder with the mask reconstruction loss (losses.py): single frames, corrupted by random masks, a
  reference frame of the same clip for the identity, the caption as the prompt.
- Stage 2 trains AnimateNet's added modules (identity and audio attention, structure encoder, temporal
  modules) and the audio projection; the base UNet, the VAE, the text encoder and IdentityNet stay frozen.
  Clips of consecutive frames; the ordinary noise-prediction loss. The prompt, the identity and the audio
  are each dropped at random (``drop_*``) so that every unconditional guidance branch is learnt; the first
  motion frames of some clips are given clean (and left out of the loss) so clips learn to continue. The
  mouth (from the landmarks) weighs ``mouth_weight`` times the rest in the loss: it is a few percent of
  the frame but all of the lip sync.
- Stage motion trains the head's movement from the speech (models/head_pose.py) alone, everything else frozen:
  clips of ``frames`` frames, the mean squared error between the predicted and the true movement since the clip's
  first frame (2x3 affines in crops of side 1; the truth fitted to the landmarks that move with the skull, as a
  driving video's motion is, head_motion.py). It starts from stage 2's output (``--init``) and saves all of it.

The learning rate warms up linearly over ``warmup_steps`` and then follows ``lr_schedule`` (constant or
cosine decay to 0), a pure function of the step, so a resumed run continues on the same curve.

Mixed precision, gradient checkpointing and multi-device come from accelerate; EMA from diffusers; a
checkpoint (accelerate state + EMA + step) every ``checkpoint_every`` steps, resumed from the newest one;
the loss of every step goes to ``log.jsonl``. The result is the PortraitTalk safetensors (EMA weights)
that ``generate`` and the ComfyUI nodes load.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel

from ..backbone import Backbone, load_backbone, random_backbone, save_backbone
from ..config import PortraitTalkConfig, preset
from ..errors import InputError
from ..models import AttentionContext, PortraitTalkModel, movement_since_first
from ..weights import load_model, read_metadata, save_model
from .contrastive import contrastive_loss, contrastive_pair
from .data import MixedDataset, ShardDataset, StillsDataset, collate
from .losses import mask_reconstruction_loss
from .masks import latent_mask, random_masks


@dataclass
class TrainSettings:
    stage: int | str                    # "vae", "decoder", "text", "base", 1, 2 or "motion"
    data: str
    out: str
    config: str = "tiny"
    init: str | None = None             # weights to start from (stage 2: stage 1's output; motion: stage 2's)
    backbone: str | None = None         # backbone file or folder; none: a random one of the config's shapes
    steps: int = 1000
    batch_size: int = 4
    learning_rate: float = 1e-4
    frames: int = 8                     # stage 2 and motion clip length
    motion_frames: int = 2
    seed: int = 0
    mixed_precision: str = "no"         # no | fp16 | bf16
    gradient_checkpointing: bool = False
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    log_every: int = 10
    drop_text: float = 0.1
    drop_identity: float = 0.1
    drop_audio: float = 0.1
    masked_weight: float = 2.0
    noise_offset: float = 0.0           # base, 1, 2: offset noise (see Trainer._noise)
    text_encoder_lr_scale: float = 1.0  # base: the text encoder's learning rate as a share of the UNet's (0: frozen)
    stills: str | None = None           # vae, decoder, text, base, 1: a stills file (synth/stills.py) mixed with the frames
    mouth_weight: float = 1.0
    lr_schedule: str = "constant"       # constant | cosine
    warmup_steps: int = 0
    extra: dict = field(default_factory=dict)


BACKBONE_STAGES = ("vae", "decoder", "text", "base")
STILLS_STAGES = ("vae", "decoder", "text", "base", 1)


def learning_rate_at(step: int, settings: TrainSettings) -> float:
    """Linear warm-up from 1 / ``warmup_steps`` (not 0: no step is wasted), times a constant or a cosine decay to 0
    at ``settings.steps`` that starts at step 0. diffusers' ``get_cosine_schedule_with_warmup`` (and its constant
    one) is another curve: it starts at 0 and begins the cosine after the warm-up, so it would not retrain the
    demo recipe's stages as they were trained."""
    warmup = min(1.0, (step + 1) / settings.warmup_steps) if settings.warmup_steps else 1.0
    if settings.lr_schedule == "constant":
        return settings.learning_rate * warmup
    if settings.lr_schedule == "cosine":
        progress = min(1.0, step / max(1, settings.steps))
        return settings.learning_rate * warmup * 0.5 * (1 + math.cos(math.pi * progress))
    raise InputError(f"unknown learning-rate schedule '{settings.lr_schedule}'", "use constant or cosine")


@torch.no_grad()
def latent_scaling_factor(vae, pixels: torch.Tensor) -> float:
    """1 / std of the VAE's latents over ``pixels``: scaled latents have unit variance, which the noise
    schedule assumes (SD's 0.18215 was found the same way)."""
    return float(1.0 / vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean.float().std())


def vae_fingerprint(vae) -> str:
    """Identifies what a VAE's latents depend on (for the latent cache): a sum over every tensor of the encoder side
    (encoder, quant_conv), and the scaling factor. The decoder is left out: stage decoder changes it alone."""
    total = sum(float(t.double().abs().sum()) for name, t in vae.state_dict().items()
                if name.startswith(("encoder.", "quant_conv.")))
    return f"{total:.10e}/{vae.config.scaling_factor:.10e}"


def reconstruction_loss(reconstruction: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """L1 of the pixels and of their horizontal and vertical differences (which keeps edges such as the lips')."""
    loss = (reconstruction - frames).abs().mean()
    for made, real in zip(_differences(reconstruction), _differences(frames)):
        loss = loss + (made - real).abs().mean()
    return loss


def _differences(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return images[..., :, 1:] - images[..., :, :-1], images[..., 1:, :] - images[..., :-1, :]


def trainable_parameters(model: PortraitTalkModel, backbone: Backbone, stage,
                         text_encoder_lr_scale: float = 1.0) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze what the stage trains."""
    model.requires_grad_(False)
    for part in (backbone.vae, backbone.text_encoder, backbone.unet):
        part.requires_grad_(False)
    if stage == "vae":
        return [p.requires_grad_(True) for p in backbone.vae.parameters()]
    if stage == "decoder":
        return [p.requires_grad_(True) for m in (backbone.vae.decoder, backbone.vae.post_quant_conv)
                for p in m.parameters()]
    if stage == "text":
        return [p.requires_grad_(True) for p in backbone.text_encoder.parameters()]
    if stage == "base":
        parts = (backbone.unet, backbone.text_encoder) if text_encoder_lr_scale else (backbone.unet,)
        return [p.requires_grad_(True) for m in parts for p in m.parameters()]
    if stage == 1:
        parts = [model.identity_net, model.identity_projection] + ([model.face_encoder] if model.face_encoder else [])
        for part in parts:
            part.requires_grad_(True)
    elif stage == 2:
        model.animate_net.freeze_base()   # added modules only
        model.audio_projection.requires_grad_(True)
    elif stage == "motion":
        if model.head_motion is None:
            raise InputError(f"config '{model.config.name}' has no head-motion module (head_motion_channels is 0)",
                             "train stage motion on weights (--init) or a --config that has one (the demo config has)")
        model.head_motion.requires_grad_(True)
    else:
        raise InputError(f"unknown stage {stage}", "use --stage vae, decoder, text, base, 1, 2 or motion")
    return [p for p in model.parameters() if p.requires_grad]


class Trainer:
    def __init__(self, settings: TrainSettings, backbone: Backbone | None = None):
        self.s = settings
        if settings.text_encoder_lr_scale < 0:   # a negative share would climb the loss
            raise InputError(f"text encoder learning-rate share {settings.text_encoder_lr_scale:g} is negative",
                             "use 0 to keep the text encoder frozen, or a share above 0 (1: the UNet's rate)")
        self.out = Path(settings.out)
        self.accelerator = Accelerator(mixed_precision=settings.mixed_precision)
        set_seed(settings.seed)
        config: PortraitTalkConfig = preset(settings.config)
        if backbone is None:
            backbone = load_backbone(settings.backbone) if settings.backbone else random_backbone(config, settings.seed)
        self.backbone = backbone
        # A VAE trained here has its own latent scale (stage vae sets it); the model's config carries it so
        # that the file written at the end rebuilds the same backbone.
        config = config.replace(vae=dict(config.vae, scaling_factor=backbone.vae.config.scaling_factor))
        # A backbone of our own (random or trained here) goes into the output file; a user's SD1.5 does not.
        self.own_backbone = settings.backbone is None or str(settings.backbone).endswith(".safetensors") and \
            read_metadata(settings.backbone).get("format", "").startswith("portraittalk")
        self.model = (load_model(settings.init, self.backbone.unet) if settings.init
                      else PortraitTalkModel(config, self.backbone.unet))
        self.config = self.model.config
        params = self.params = trainable_parameters(self.model, self.backbone, settings.stage,
                                                    settings.text_encoder_lr_scale)
        if settings.stage == "text":   # the image tower trains beside the text encoder, and is dropped at the end
            self.pair = contrastive_pair(self.backbone.text_encoder, config.resolution)
            params += [p for name, p in self.pair.named_parameters() if not name.startswith("text_model.")]
        if settings.gradient_checkpointing:
            for unet in (self.model.identity_net.unet, self.model.animate_net.unet):
                unet.enable_gradient_checkpointing()
        self.noise = DDPMScheduler.from_config(self.backbone.schedule)
        self.dataset = ShardDataset(settings.data, frames=settings.frames if settings.stage in (2, "motion") else 1,
                                    audio_window=self.config.audio_window, seed=settings.seed,
                                    head_motion=settings.stage == "motion")
        if settings.stills and settings.stage in STILLS_STAGES:
            if settings.stage == 1 and self.model.face_encoder is None:
                raise InputError("stills carry no ArcFace embeddings, which this config's stage 1 needs",
                                 "train stage 1 without --stills, or with a config that has the builtin face encoder")
            self.dataset = MixedDataset([self.dataset, StillsDataset(settings.stills)], settings.seed)
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=settings.batch_size, shuffle=False,
                                             collate_fn=collate, drop_last=False)
        # Stage base may train the text encoder slower than the UNet: it came from stage text knowing its words
        text_scale = settings.text_encoder_lr_scale if settings.stage == "base" else 1.0
        text_params = {id(p) for p in self.backbone.text_encoder.parameters()}
        groups = [{"params": [p for p in params if id(p) not in text_params], "lr_scale": 1.0},
                  {"params": [p for p in params if id(p) in text_params], "lr_scale": text_scale}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=settings.learning_rate, weight_decay=1e-2)
        # The model is not wrapped for DDP: the stages call its parts directly, so gradients are averaged
        # across processes by hand after backward (see train). Random draws come from one CPU generator
        # and move to the device, so a run is the same on any hardware.
        self.device = self.accelerator.device
        self.model = self.model.to(self.device)
        self.backbone.to(self.device)
        if settings.stage == "text":
            self.pair.to(self.device)
        if settings.stage in ("base", 1, 2):  # the VAE is frozen from here on
            fingerprint = vae_fingerprint(self.backbone.vae)
            parts = self.dataset.parts if isinstance(self.dataset, MixedDataset) else [self.dataset]
            for part in parts:
                file = (Path(settings.data) / "latents.safetensors" if isinstance(part, ShardDataset)
                        else part.path.with_name(part.path.stem + ".latents.safetensors"))
                part.cache_latents(self.backbone.encode_images, file, fingerprint)
        self.optimizer, self.loader = self.accelerator.prepare(optimizer, loader)
        self.ema = EMAModel(params, decay=settings.ema_decay)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.step = 0

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def net(self) -> PortraitTalkModel:
        return self.model

    @torch.no_grad()
    def text(self, captions: list[str], drop: float) -> torch.Tensor:
        keep = torch.rand(len(captions), generator=self.generator) >= drop
        return self.backbone.encode_text([c if k else "" for c, k in zip(captions, keep)])

    def identity_tokens(self, batch: dict) -> torch.Tensor:
        net = self.net
        if net.face_encoder is not None:
            embeddings = net.face_encoder(batch["reference"])
        else:
            embeddings = batch["embedding"]
        return net.identity_projection(embeddings[:, None])

    def _timesteps(self, n: int) -> torch.Tensor:
        return torch.randint(0, self.noise.config.num_train_timesteps, (n,), generator=self.generator).to(self.device)

    def _randn(self, shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator).to(self.device)

    def _noise(self, shape) -> torch.Tensor:
        """Training noise: Gaussian, plus ``noise_offset`` times one Gaussian per sample and channel (offset
        noise). Without it the noisiest inputs still carry the image's mean colour (at t = T, sqrt(a_t) is
        0.07), so a network learns to take flat colours from its input and never from the prompt."""
        noise = self._randn(shape)
        if self.s.noise_offset:
            noise = noise + self.s.noise_offset * self._randn(shape[:2] + (1,) * (len(shape) - 2))
        return noise

    def _keep(self, n: int, drop: float) -> torch.Tensor:
        return (torch.rand(n, generator=self.generator) >= drop).float().to(self.device)

    # -- the stages ------------------------------------------------------------------------------
    def vae_loss(self, batch: dict) -> torch.Tensor:
        frames = batch["frames"][:, 0]
        posterior = self.backbone.vae.encode(frames).latent_dist
        reconstruction = self.backbone.vae.decode(posterior.mean).sample
        return reconstruction_loss(reconstruction, frames) + 1e-6 * posterior.kl().mean()

    def decoder_loss(self, batch: dict) -> torch.Tensor:
        frames = batch["frames"][:, 0]
        with torch.no_grad():
            latents = self.backbone.vae.encode(frames).latent_dist.mean
        return reconstruction_loss(self.backbone.vae.decode(latents).sample, frames)

    def text_loss(self, batch: dict) -> torch.Tensor:
        frames = batch["frames"][:, 0].to(self.device)
        return contrastive_loss(self.pair, self.backbone.token_ids(batch["caption"]), frames)

    def base_loss(self, batch: dict) -> torch.Tensor:
        clean = batch["latents"][:, 0].to(self.device)
        noise = self._noise(clean.shape)
        t = self._timesteps(clean.shape[0])
        keep = torch.rand(len(batch["caption"]), generator=self.generator) >= self.s.drop_text
        captions = [c if k else "" for c, k in zip(batch["caption"], keep)]
        with torch.set_grad_enabled(bool(self.s.text_encoder_lr_scale)):
            text = self.backbone.text_encoder(self.backbone.token_ids(captions))[0]
        prediction = self.backbone.unet(self.noise.add_noise(clean, noise, t), t, encoder_hidden_states=text).sample
        return ((prediction.float() - noise) ** 2).mean()

    def stage1_loss(self, batch: dict) -> torch.Tensor:
        frames = batch["frames"][:, 0]                                   # (B, 3, S, S)
        size = frames.shape[-1]
        masks = random_masks(self.generator, frames.shape[0], size).to(self.device)
        clean, corrupted = batch["latents"][:, 0].to(self.device), self.backbone.encode_images(frames * (1 - masks))
        noise = self._noise(clean.shape)
        t = self._timesteps(clean.shape[0])
        a_t = self.noise.alphas_cumprod.to(self.device)[t]
        text = self.text(batch["caption"], self.s.drop_text)
        tokens = self.identity_tokens(batch)
        prediction, _ = self.net.identity_net(self.noise.add_noise(corrupted, noise, t)[:, None], text, tokens,
                                              torch.ones(clean.shape[0], device=self.device), timestep=t)
        return mask_reconstruction_loss(prediction[:, 0], noise, corrupted, clean, a_t,
                                        latent_mask(masks, clean.shape[-1]), self.s.masked_weight)

    def stage2_loss(self, batch: dict) -> torch.Tensor:
        net = self.net
        videos, frames = batch["frames"].shape[:2]
        latents = batch["latents"].transpose(1, 2).to(self.device)       # (V, C, F, h, w), cached

        noise = self._noise(latents.shape)
        t = self._timesteps(videos)
        noisy = self.noise.add_noise(latents, noise, t)
        # Motion frames: half of the clips start with clean frames, as later clips do at inference.
        context = torch.zeros(videos, dtype=torch.long)
        continues = torch.rand(videos, generator=self.generator) < 0.5
        context[continues] = self.s.motion_frames
        for v in range(videos):
            noisy[v, :, :context[v]] = latents[v, :, :context[v]]
        keep_id, keep_audio = self._keep(videos, self.s.drop_identity), self._keep(videos, self.s.drop_audio)
        text = self.text(batch["caption"], self.s.drop_text)
        with torch.no_grad():
            refs = batch["reference_latent"][:, None].to(self.device)
            tokens = self.identity_tokens(batch)
            _, bank = net.identity_net(refs, text, tokens, torch.ones(videos, device=self.device))
        audio = net.audio_projection(batch["audio"].flatten(0, 1))
        ctx = AttentionContext(identity_tokens=tokens, identity_scale=keep_id, audio_tokens=audio,
                               audio_scale=keep_audio, bank=bank, bank_scale=keep_id)
        prediction = net.animate_net(noisy, t, text, ctx, batch["structure"])
        mouth = F.adaptive_max_pool2d(batch["mouth"].flatten(0, 1), latents.shape[-1])   # (V*F, 1, h, w)
        mouth = mouth.unflatten(0, (videos, frames)).transpose(1, 2).to(self.device)
        weight = 1 + (self.s.mouth_weight - 1) * mouth
        for v in range(videos):
            weight[v, :, :context[v]] = 0.0
        error = ((prediction.float() - noise) ** 2).mean(1, keepdim=True)
        return (error * weight).sum() / weight.sum()

    def motion_loss(self, batch: dict) -> torch.Tensor:
        features = batch["audio"][:, :, self.config.audio_window].to(self.device)   # each frame's own features
        predicted = movement_since_first(self.net.head_motion(features))
        return F.mse_loss(predicted.float(), batch["head_motion"].to(self.device))

    # -- loop, checkpoints -----------------------------------------------------------------------
    def train(self) -> Path:
        self.resume()
        log = (self.out / "log.jsonl").open("a")
        loss_fn = {"vae": self.vae_loss, "decoder": self.decoder_loss, "text": self.text_loss,
                   "base": self.base_loss, 1: self.stage1_loss,
                   2: self.stage2_loss, "motion": self.motion_loss}[self.s.stage]
        per_epoch = max(1, len(self.loader))
        epoch, skip = divmod(self.step, per_epoch)   # a resumed run continues mid-epoch where it stopped
        while self.step < self.s.steps:
            self.dataset.use_epoch(epoch)
            for index, batch in enumerate(self.loader):
                if index < skip:
                    continue
                if self.step >= self.s.steps:
                    break
                self.model.train()
                with self.accelerator.autocast():
                    loss = loss_fn(batch)
                self.accelerator.backward(loss)
                for group in self.optimizer.param_groups:
                    group["lr"] = learning_rate_at(self.step, self.s) * group["lr_scale"]
                if self.accelerator.num_processes > 1:
                    for p in self.params:
                        if p.grad is not None:
                            p.grad = self.accelerator.reduce(p.grad, reduction="mean")
                self.optimizer.step()
                self.optimizer.zero_grad()
                self.ema.step(self.params)
                self.step += 1
                if self.accelerator.is_main_process and (self.step % self.s.log_every == 0 or self.step == 1):
                    log.write(json.dumps({"step": self.step, "loss": loss.item()}) + "\n")
                    log.flush()
                if self.step % self.s.checkpoint_every == 0 or self.step == self.s.steps:
                    self.checkpoint()   # the last step too: a finished stage run again resumes there, not before
            epoch, skip = epoch + 1, 0
        log.close()
        return self.save()

    # Checkpoints are safetensors plus JSON, like every file this project reads: nothing is unpickled.
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        params = self.params
        tensors = {f"model.{i}": p.detach() for i, p in enumerate(params)}
        tensors.update({f"ema.{i}": p for i, p in enumerate(self.ema.shadow_params)})
        for i, p in enumerate(params):
            for key, value in self.optimizer.state.get(p, {}).items():
                tensors[f"optimizer.{i}.{key}"] = torch.as_tensor(value)
        tensors["rng.generator"] = self.generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}

    def checkpoint(self) -> Path:
        from safetensors.torch import save_file

        folder = self.out / f"checkpoint-{self.step:07d}"
        if self.accelerator.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
            save_file(self._state_tensors(), str(folder / "state.safetensors"))
            (folder / "trainer.json").write_text(json.dumps({
                "step": self.step, "settings": asdict(self.s), "ema_step": self.ema.optimization_step,
                "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups],
            }, indent=1))
        self.accelerator.wait_for_everyone()
        return folder

    def resume(self) -> None:
        from safetensors.torch import load_file

        self.out.mkdir(parents=True, exist_ok=True)
        checkpoints = sorted(self.out.glob("checkpoint-*/state.safetensors"))
        if not checkpoints:
            return
        folder = checkpoints[-1].parent
        tensors = load_file(str(folder / "state.safetensors"))
        state = json.loads((folder / "trainer.json").read_text())
        params = self.params
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_(tensors[f"model.{i}"])
                self.ema.shadow_params[i].copy_(tensors[f"ema.{i}"])
                per_param = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"optimizer.{i}.")}
                if per_param:
                    self.optimizer.state[p] = per_param
        for group, saved in zip(self.optimizer.param_groups, state["param_groups"]):
            group.update(saved)
        self.ema.optimization_step = state["ema_step"]
        self.generator.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
        self.step = state["step"]

    def save(self) -> Path:
        """The EMA weights: a backbone file after stages vae/base, PortraitTalk weights after 1/2."""
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        try:
            if self.s.stage == "vae":
                # Frames drawn as the last step's epoch draws them: a run resumed at its end (whose loop never
                # runs) then measures the same frames, and so the same factor, as the run that trained.
                self.dataset.use_epoch(max(0, self.step - 1) // max(1, len(self.loader)))
                pixels = torch.cat([self.dataset[i]["frames"][:1] for i in range(min(64, len(self.dataset)))])
                scale = latent_scaling_factor(self.backbone.vae, pixels)
                self.backbone.vae.register_to_config(scaling_factor=scale)
                self.config = self.config.replace(vae=dict(self.config.vae, scaling_factor=scale))
            if self.s.stage in BACKBONE_STAGES:
                return save_backbone(self.backbone, self.config, self.out / "backbone.safetensors")
            return save_model(self.net, self.out / f"portraittalk_stage{self.s.stage}.safetensors",
                              metadata={"stage": str(self.s.stage), "steps": str(self.step)},
                              backbone=self.backbone if self.own_backbone else None)
        finally:
            self.ema.restore(self.params)
