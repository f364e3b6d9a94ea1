"""``portraittalk train --stage vae|decoder|text|base|1|2|motion``: one script for one CPU, one GPU or many GPUs
(accelerate launch).

What each stage trains, and its loss, is in stages.py (one class a stage); this module is what they share.

The learning rate warms up linearly over ``warmup_steps`` and then follows ``lr_schedule`` (constant or
cosine decay to 0), a pure function of the step, so a resumed run continues on the same curve.

Mixed precision, gradient checkpointing and multi-device come from accelerate; EMA from diffusers; a
checkpoint (accelerate state + EMA + step) every ``checkpoint_every`` steps, resumed from the newest one;
the loss of every step goes to ``log.jsonl``. The result is the PortraitTalk safetensors (EMA weights)
that ``generate`` and the ComfyUI nodes load.

``init`` (``--init``) is loaded as it is, config and all (``weights.load_model``), except a file converted from
another model family whose config is not the run's: stages 1 and 2 warm-start from it (``weights.warm_start``: the
model is built at the run's config and takes the tensors that fit; one summary line is printed and logged).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel

from ..backbone import Backbone, load_backbone, random_backbone, save_backbone
from ..config import PortraitTalkConfig
from ..errors import InputError
from ..io.safetensors import read_metadata
from ..models import PortraitTalkModel
from ..weights import converted_elsewhere, load_model, plan_warm_start, save_model, warm_start
from .data import MixedDataset, ShardDataset, StillsDataset, collate
from .latents import vae_fingerprint
from .settings import TrainSettings, learning_rate_at, model_config
from .stages import stage_for

log = logging.getLogger(__name__)
WARM_START_STAGES = (1, 2)


class Trainer:
    """One stage's training run (``settings.stage``, whose Stage says what is trained and the loss): the data, the
    optimizer, EMA, the loop, checkpoints and the result file."""

    def __init__(self, settings: TrainSettings, backbone: Backbone | None = None):
        self.s = settings
        if settings.text_encoder_lr_scale < 0:   # a negative share would climb the loss
            raise InputError(f"text encoder learning-rate share {settings.text_encoder_lr_scale:g} is negative",
                             "use 0 to keep the text encoder frozen, or a share above 0 (1: the UNet's rate)")
        self.stage = stage_for(settings.stage)
        self.out = Path(settings.out)
        config: PortraitTalkConfig = model_config(settings)
        # --init checked before any model loads: a missing file, a converted file a warm start cannot use
        warm = settings.init is not None and converted_elsewhere(settings.init, config)
        if warm:
            if settings.stage not in WARM_START_STAGES:
                raise InputError(f"--init '{settings.init}' is a converted model of another config, which only "
                                 f"stages 1 and 2 start from (a warm start), not stage {settings.stage}",
                                 "train stage 1 or 2 from it (--stage 1 or 2, --config the model to train), and "
                                 f"stage {settings.stage} from their output")
            plan_warm_start(settings.init, config)   # nothing fits: refused here
        self.accelerator = Accelerator(mixed_precision=settings.mixed_precision)
        set_seed(settings.seed)
        if backbone is None:
            backbone = load_backbone(settings.backbone) if settings.backbone else random_backbone(config, settings.seed)
        self.backbone = backbone
        # A VAE trained here has its own latent scale (stage vae sets it); the model's config carries it so
        # that the file written at the end rebuilds the same backbone.
        config = config.replace(vae=dict(config.vae, scaling_factor=backbone.vae.config.scaling_factor))
        # A backbone of our own (random or trained here) goes into the output file; a user's SD1.5 does not.
        self.own_backbone = settings.backbone is None or str(settings.backbone).endswith(".safetensors") and \
            read_metadata(settings.backbone).get("format", "").startswith("portraittalk")
        self.model = (load_model(settings.init, self.backbone.unet) if settings.init and not warm
                      else PortraitTalkModel(config, self.backbone.unet))
        self.warm_started = warm_start(self.model, settings.init) if warm else None
        if self.warm_started is not None and self.accelerator.is_main_process:
            line = self.warm_started.summary(f"'{settings.init}'")
            print(line)
            log.info(line)
        self.config = self.model.config
        params = self.params = self.stage.trainable_parameters(self.model, self.backbone, settings)
        params += self.stage.extra_parameters(self.backbone, config.resolution)
        if settings.gradient_checkpointing:
            for unet in (self.model.identity_net.unet, self.model.animate_net.unet):
                unet.enable_gradient_checkpointing()
        self.noise = DDPMScheduler.from_config(self.backbone.schedule)
        self.dataset = ShardDataset(settings.data, frames=settings.frames if self.stage.clips else 1,
                                    audio_window=self.config.audio_window, seed=settings.seed,
                                    head_motion=self.stage.head_motion)
        if settings.stills and self.stage.takes_stills:
            self.stage.check_stills(self.model)
            self.dataset = MixedDataset([self.dataset, StillsDataset(settings.stills)], settings.seed)
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=settings.batch_size, shuffle=False,
                                             collate_fn=collate, drop_last=False)
        text_scale = self.stage.text_encoder_lr_scale(settings)
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
        self.stage.to(self.device)
        if self.stage.frozen_vae:
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

    # -- what the stages' losses draw and encode ------------------------------------------------------
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

    def timesteps(self, n: int) -> torch.Tensor:
        return torch.randint(0, self.noise.config.num_train_timesteps, (n,), generator=self.generator).to(self.device)

    def _randn(self, shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator).to(self.device)

    def training_noise(self, shape) -> torch.Tensor:
        """Training noise: Gaussian, plus ``noise_offset`` times one Gaussian per sample and channel (offset
        noise). Without it the noisiest inputs still carry the image's mean colour (at t = T, sqrt(a_t) is
        0.07), so a network learns to take flat colours from its input and never from the prompt."""
        noise = self._randn(shape)
        if self.s.noise_offset:
            noise = noise + self.s.noise_offset * self._randn(shape[:2] + (1,) * (len(shape) - 2))
        return noise

    def keep(self, n: int, drop: float) -> torch.Tensor:
        return (torch.rand(n, generator=self.generator) >= drop).float().to(self.device)

    # -- loop, checkpoints -----------------------------------------------------------------------
    def train(self) -> Path:
        self.resume()
        log = (self.out / "log.jsonl").open("a")
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
                    loss = self.stage.loss(self, batch)
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
        """The EMA weights: a backbone file after stages vae, decoder, text and base; PortraitTalk weights after
        1, 2 and motion."""
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        try:
            self.stage.before_save(self)
            if self.stage.makes_backbone:
                return save_backbone(self.backbone, self.config, self.out / "backbone.safetensors")
            return save_model(self.net, self.out / f"portraittalk_stage{self.s.stage}.safetensors",
                              metadata={"stage": str(self.s.stage), "steps": str(self.step)},
                              backbone=self.backbone if self.own_backbone else None)
        finally:
            self.ema.restore(self.params)
