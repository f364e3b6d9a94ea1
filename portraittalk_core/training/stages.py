"""What each stage of ``portraittalk train --stage`` trains, and its loss: one class per stage, chosen once from the
stage's name (``stage_for``). The Trainer (trainer.py) runs the same loop, EMA and checkpoints around every stage.

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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backbone import Backbone
from ..errors import InputError
from ..models import AttentionContext, PortraitTalkModel, movement_since_first
from .contrastive import contrastive_loss, contrastive_pair
from .latents import latent_scaling_factor
from .losses import mask_reconstruction_loss, reconstruction_loss
from .masks import latent_mask, random_masks
from .settings import TrainSettings


class Stage:
    """What a stage trains and its loss. The defaults are the single-frame stages' (their samples: one frame and a
    reference frame), which train parts of the model."""

    clips = False            # samples are clips of ``frames`` frames, not single frames
    head_motion = False      # samples carry the head's movement since their first frame
    takes_stills = False     # a stills file (synth/stills.py) may be mixed with the frames
    frozen_vae = False       # the VAE is frozen: every frame's latents are encoded once and cached
    makes_backbone = False   # the result is a backbone file, not PortraitTalk weights

    def trainable_parameters(self, model: PortraitTalkModel, backbone: Backbone,
                             settings: TrainSettings) -> list[torch.nn.Parameter]:
        """Freeze everything, then unfreeze what the stage trains."""
        model.requires_grad_(False)
        for part in (backbone.vae, backbone.text_encoder, backbone.unet):
            part.requires_grad_(False)
        return self.unfreeze(model, backbone, settings)

    def unfreeze(self, model: PortraitTalkModel, backbone: Backbone,
                 settings: TrainSettings) -> list[torch.nn.Parameter]:
        raise NotImplementedError

    def extra_parameters(self, backbone: Backbone, resolution: int) -> list[torch.nn.Parameter]:
        """Parameters trained beside the model's and not saved with it (none but stage text's)."""
        return []

    def to(self, device) -> None:
        """Moves what the stage holds of its own (``extra_parameters``' modules) to ``device``."""

    def check_stills(self, model: PortraitTalkModel) -> None:
        """Refuses stills the stage cannot learn from with this model."""

    def text_encoder_lr_scale(self, settings: TrainSettings) -> float:
        """The text encoder's learning rate as a share of the rest's."""
        return 1.0

    def before_save(self, trainer) -> None:
        """Last changes to the trained parts before they are written, with the EMA weights in place."""

    def loss(self, trainer, batch: dict) -> torch.Tensor:
        raise NotImplementedError


class VaeStage(Stage):
    takes_stills = True
    makes_backbone = True

    def unfreeze(self, model, backbone, settings):
        return [p.requires_grad_(True) for p in backbone.vae.parameters()]

    def before_save(self, trainer) -> None:
        """The VAE's latent scale, measured on the trained VAE (stage vae sets it; later stages keep it)."""
        # Frames drawn as the last step's epoch draws them: a run resumed at its end (whose loop never
        # runs) then measures the same frames, and so the same factor, as the run that trained.
        trainer.dataset.use_epoch(max(0, trainer.step - 1) // max(1, len(trainer.loader)))
        pixels = torch.cat([trainer.dataset[i]["frames"][:1] for i in range(min(64, len(trainer.dataset)))])
        scale = latent_scaling_factor(trainer.backbone.vae, pixels)
        trainer.backbone.vae.register_to_config(scaling_factor=scale)
        trainer.config = trainer.config.replace(vae=dict(trainer.config.vae, scaling_factor=scale))

    def loss(self, trainer, batch: dict) -> torch.Tensor:
        frames = batch["frames"][:, 0]
        posterior = trainer.backbone.vae.encode(frames).latent_dist
        reconstruction = trainer.backbone.vae.decode(posterior.mean).sample
        return reconstruction_loss(reconstruction, frames) + 1e-6 * posterior.kl().mean()


class DecoderStage(Stage):
    takes_stills = True
    makes_backbone = True

    def unfreeze(self, model, backbone, settings):
        return [p.requires_grad_(True) for m in (backbone.vae.decoder, backbone.vae.post_quant_conv)
                for p in m.parameters()]

    def loss(self, trainer, batch: dict) -> torch.Tensor:
        frames = batch["frames"][:, 0]
        with torch.no_grad():
            latents = trainer.backbone.vae.encode(frames).latent_dist.mean
        return reconstruction_loss(trainer.backbone.vae.decode(latents).sample, frames)


class TextStage(Stage):
    takes_stills = True
    makes_backbone = True

    def unfreeze(self, model, backbone, settings):
        return [p.requires_grad_(True) for p in backbone.text_encoder.parameters()]

    def extra_parameters(self, backbone, resolution):
        # the image tower trains beside the text encoder, and is dropped at the end
        self.pair = contrastive_pair(backbone.text_encoder, resolution)
        return [p for name, p in self.pair.named_parameters() if not name.startswith("text_model.")]

    def to(self, device) -> None:
        self.pair.to(device)

    def loss(self, trainer, batch: dict) -> torch.Tensor:
        frames = batch["frames"][:, 0].to(trainer.device)
        return contrastive_loss(self.pair, trainer.backbone.token_ids(batch["caption"]), frames)


class BaseStage(Stage):
    takes_stills = True
    frozen_vae = True
    makes_backbone = True

    def unfreeze(self, model, backbone, settings):
        parts = (backbone.unet, backbone.text_encoder) if settings.text_encoder_lr_scale else (backbone.unet,)
        return [p.requires_grad_(True) for m in parts for p in m.parameters()]

    def text_encoder_lr_scale(self, settings: TrainSettings) -> float:
        # Stage base may train the text encoder slower than the UNet: it came from stage text knowing its words
        return settings.text_encoder_lr_scale

    def loss(self, trainer, batch: dict) -> torch.Tensor:
        clean = batch["latents"][:, 0].to(trainer.device)
        noise = trainer.training_noise(clean.shape)
        t = trainer.timesteps(clean.shape[0])
        keep = torch.rand(len(batch["caption"]), generator=trainer.generator) >= trainer.s.drop_text
        captions = [c if k else "" for c, k in zip(batch["caption"], keep)]
        with torch.set_grad_enabled(bool(trainer.s.text_encoder_lr_scale)):
            text = trainer.backbone.text_encoder(trainer.backbone.token_ids(captions))[0]
        prediction = trainer.backbone.unet(trainer.noise.add_noise(clean, noise, t), t, encoder_hidden_states=text).sample
        return ((prediction.float() - noise) ** 2).mean()


class IdentityStage(Stage):
    """Stage 1."""

    takes_stills = True
    frozen_vae = True

    def unfreeze(self, model, backbone, settings):
        parts = [model.identity_net, model.identity_projection] + ([model.face_encoder] if model.face_encoder else [])
        for part in parts:
            part.requires_grad_(True)
        return [p for p in model.parameters() if p.requires_grad]

    def check_stills(self, model: PortraitTalkModel) -> None:
        if model.face_encoder is None:
            raise InputError("stills carry no ArcFace embeddings, which this config's stage 1 needs",
                             "train stage 1 without --stills, or with a config that has the builtin face encoder")

    def loss(self, trainer, batch: dict) -> torch.Tensor:
        frames = batch["frames"][:, 0]                                   # (B, 3, S, S)
        size = frames.shape[-1]
        masks = random_masks(trainer.generator, frames.shape[0], size).to(trainer.device)
        clean, corrupted = batch["latents"][:, 0].to(trainer.device), trainer.backbone.encode_images(frames * (1 - masks))
        noise = trainer.training_noise(clean.shape)
        t = trainer.timesteps(clean.shape[0])
        a_t = trainer.noise.alphas_cumprod.to(trainer.device)[t]
        text = trainer.text(batch["caption"], trainer.s.drop_text)
        tokens = trainer.identity_tokens(batch)
        prediction, _ = trainer.net.identity_net(trainer.noise.add_noise(corrupted, noise, t)[:, None], text, tokens,
                                              torch.ones(clean.shape[0], device=trainer.device), timestep=t)
        return mask_reconstruction_loss(prediction[:, 0], noise, corrupted, clean, a_t,
                                        latent_mask(masks, clean.shape[-1]), trainer.s.masked_weight)


class AnimateStage(Stage):
    """Stage 2."""

    clips = True
    frozen_vae = True

    def unfreeze(self, model, backbone, settings):
        model.animate_net.freeze_base()   # added modules only
        model.audio_projection.requires_grad_(True)
        return [p for p in model.parameters() if p.requires_grad]

    def loss(self, trainer, batch: dict) -> torch.Tensor:
        net = trainer.net
        videos, frames = batch["frames"].shape[:2]
        latents = batch["latents"].transpose(1, 2).to(trainer.device)       # (V, C, F, h, w), cached

        noise = trainer.training_noise(latents.shape)
        t = trainer.timesteps(videos)
        noisy = trainer.noise.add_noise(latents, noise, t)
        # Motion frames: half of the clips start with clean frames, as later clips do at inference.
        context = torch.zeros(videos, dtype=torch.long)
        continues = torch.rand(videos, generator=trainer.generator) < 0.5
        context[continues] = trainer.s.motion_frames
        for v in range(videos):
            noisy[v, :, :context[v]] = latents[v, :, :context[v]]
        keep_id, keep_audio = trainer.keep(videos, trainer.s.drop_identity), trainer.keep(videos, trainer.s.drop_audio)
        text = trainer.text(batch["caption"], trainer.s.drop_text)
        with torch.no_grad():
            refs = batch["reference_latent"][:, None].to(trainer.device)
            tokens = trainer.identity_tokens(batch)
            _, bank = net.identity_net(refs, text, tokens, torch.ones(videos, device=trainer.device))
        audio = net.audio_projection(batch["audio"].flatten(0, 1))
        ctx = AttentionContext(identity_tokens=tokens, identity_scale=keep_id, audio_tokens=audio,
                               audio_scale=keep_audio, bank=bank, bank_scale=keep_id)
        prediction = net.animate_net(noisy, t, text, ctx, batch["structure"])
        mouth = F.adaptive_max_pool2d(batch["mouth"].flatten(0, 1), latents.shape[-1])   # (V*F, 1, h, w)
        mouth = mouth.unflatten(0, (videos, frames)).transpose(1, 2).to(trainer.device)
        weight = 1 + (trainer.s.mouth_weight - 1) * mouth
        for v in range(videos):
            weight[v, :, :context[v]] = 0.0
        error = ((prediction.float() - noise) ** 2).mean(1, keepdim=True)
        return (error * weight).sum() / weight.sum()


class MotionStage(Stage):
    clips = True
    head_motion = True

    def unfreeze(self, model, backbone, settings):
        if model.head_motion is None:
            raise InputError(f"config '{model.config.name}' has no head-motion module (head_motion_channels is 0)",
                             "train stage motion on weights (--init) or a --config that has one (the demo config has)")
        model.head_motion.requires_grad_(True)
        return [p for p in model.parameters() if p.requires_grad]

    def loss(self, trainer, batch: dict) -> torch.Tensor:
        features = batch["audio"][:, :, trainer.config.audio_window].to(trainer.device)   # each frame's own features
        predicted = movement_since_first(trainer.net.head_motion(features))
        return F.mse_loss(predicted.float(), batch["head_motion"].to(trainer.device))


STAGES: dict[int | str, type[Stage]] = {"vae": VaeStage, "decoder": DecoderStage, "text": TextStage,
                                        "base": BaseStage, 1: IdentityStage, 2: AnimateStage, "motion": MotionStage}
BACKBONE_STAGES = tuple(name for name, stage in STAGES.items() if stage.makes_backbone)
STILLS_STAGES = tuple(name for name, stage in STAGES.items() if stage.takes_stills)


def stage_for(name: int | str) -> Stage:
    if name not in STAGES:
        raise InputError(f"unknown stage {name}", "use --stage vae, decoder, text, base, 1, 2 or motion")
    return STAGES[name]()
