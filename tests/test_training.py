"""Two-stage training on the tiny config: smoke steps of each stage, and an exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from portraittalk_core.errors import InputError
from portraittalk_core.training.trainer import Trainer, TrainSettings
from portraittalk_core.weights import load_model

SIZE = 64


def write_shard(folder, name: str, n_frames: int, seed: int, reference_path) -> None:
    """A prepared shard, made here: the shipped photo with a moving crop, a tone's log-mel features."""
    rng = np.random.default_rng(seed)
    photo = np.asarray(Image.open(reference_path).convert("RGB").resize((SIZE + 8, SIZE + 8)))
    frames = np.stack([photo[i % 8:i % 8 + SIZE, :SIZE] for i in range(n_frames)])
    landmarks = (rng.random((n_frames, 10, 2)) * 0.5 + 0.25).astype(np.float32) * SIZE
    regions = {"outline": [0, 1, 2], "brows": [3], "eyes": [4, 5], "nose": [6], "mouth": [7, 8, 9]}
    meta = dict(fps=25.0, n_frames=n_frames, size=SIZE, feature_rate=100.0, front_end="logmel",
                duration=n_frames / 25.0, caption=f"a person number {seed}", source="test", regions=regions)
    features = rng.standard_normal((n_frames * 4, 1, 80)).astype(np.float16)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{name}.npz", meta=np.array(json.dumps(meta)), frames=frames, landmarks=landmarks,
                        head_masks=np.ones((SIZE, SIZE), np.uint8), audio=np.zeros(10, np.float16),
                        audio_features=features)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, reference_path):
    folder = tmp_path_factory.mktemp("shards")
    for i in range(3):
        write_shard(folder, f"clip{i}", 12, i, reference_path)
    return folder


def settings(shards, out, stage, **kw):
    return TrainSettings(**{**dict(stage=stage, data=str(shards), out=str(out), steps=2, batch_size=2, frames=6,
                                   checkpoint_every=1000, log_every=1), **kw})


def snapshot(trainer):
    return {k: v.detach().clone() for k, v in trainer.net.state_dict().items()}


def changed(before, after, prefix):
    return [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]


def test_stage1_trains_identitynet_only(shards, tmp_path):
    trainer = Trainer(settings(shards, tmp_path, 1))
    before = snapshot(trainer)
    path = trainer.train()
    after = snapshot(trainer)
    assert changed(before, after, "identity_net.") and changed(before, after, "identity_projection.")
    assert not changed(before, after, "animate_net.") and not changed(before, after, "audio_projection.")
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert load_model(path, trainer.backbone.unet).config.name == "tiny"


def test_stage2_trains_added_modules_only(shards, tmp_path):
    trainer = Trainer(settings(shards, tmp_path, 2))
    before = snapshot(trainer)
    trainer.train()
    after = snapshot(trainer)
    moved = changed(before, after, "animate_net.")
    assert moved and all(any(m in k for m in ("motion_modules.", ".processor.", "structure_encoder.")) for k in moved)
    assert changed(before, after, "audio_projection.")
    assert not changed(before, after, "identity_net.") and not changed(before, after, "identity_projection.")


def test_motion_stage_trains_the_head_motion_module_only_and_saves_it(shards, tmp_path):
    trainer = Trainer(settings(shards, tmp_path, "motion", config="demo"))
    before = snapshot(trainer)
    path = trainer.train()
    after = snapshot(trainer)
    assert changed(before, after, "head_motion.") and changed(before, after, "") == changed(before, after, "head_motion.")
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(np.isfinite(losses))
    saved = load_model(path, trainer.backbone.unet).head_motion
    assert saved.proj_out.weight.abs().max() > 0          # the EMA weights left the zero start
    with pytest.raises(InputError, match="no head-motion module"):
        Trainer(settings(shards, tmp_path / "tiny", "motion"))   # the tiny config has none


def test_motion_samples_carry_the_heads_movement_since_their_first_frame(shards):
    from portraittalk_core.head_motion import motion_from_landmarks
    from portraittalk_core.training.data import ShardDataset

    dataset = ShardDataset(shards, frames=5, head_motion=True)
    sample = dataset[1]
    shard = dataset.shards[1]
    frames = shard.arrays["frames"]
    # Which frames were drawn: find the sample's first frame among the shard's.
    start = next(i for i in range(len(frames)) if torch.equal(sample["frames"][0], torch.from_numpy(
        frames[i]).movedim(-1, 0).float() / 127.5 - 1))
    regions = {k: np.asarray(v) for k, v in shard.meta["regions"].items()}
    expected = motion_from_landmarks(shard.arrays["landmarks"][start:start + 5], regions)
    expected[:, :, 2] /= SIZE
    assert sample["head_motion"].shape == (5, 2, 3)
    np.testing.assert_allclose(sample["head_motion"].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(sample["head_motion"][0].numpy(), np.eye(2, 3), atol=1e-5)
    assert "head_motion" not in ShardDataset(shards, frames=5)[1]


@pytest.mark.parametrize("stage", [1, 2, "motion"])
def test_resume_gives_identical_state(shards, tmp_path, stage):
    config = dict(config="demo") if stage == "motion" else {}
    straight = Trainer(settings(shards, tmp_path / "straight", stage, steps=4, checkpoint_every=2, **config))
    straight.train()
    Trainer(settings(shards, tmp_path / "resumed", stage, steps=2, checkpoint_every=2, **config)).train()  # stops at 2
    second = Trainer(settings(shards, tmp_path / "resumed", stage, steps=4, checkpoint_every=2, **config))  # resumes
    second.train()
    assert [json.loads(x)["step"] for x in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    a, b = snapshot(straight), snapshot(second)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ema_a, ema_b = straight.ema.shadow_params, second.ema.shadow_params
    assert all(torch.equal(x, y) for x, y in zip(ema_a, ema_b))


@pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None, reason="needs espeak-ng (setup.sh installs it)")
def test_prepare_a_generated_video_and_train_on_it(tmp_path):
    """synth -> prepare -> one step of each stage: the data path end to end."""
    from portraittalk_core.synth.dataset import synth_dataset
    from portraittalk_core.training.data import ShardDataset
    from portraittalk_core.data.prepare import prepare_folder

    synth_dataset(tmp_path / "synth", 3, 1, size=96, fps=25.0, seed=0)
    split = next(p for p in sorted((tmp_path / "synth").iterdir()) if p.is_dir() and list(p.glob("*.mp4")))
    result = prepare_folder(split, tmp_path / "shards", size=SIZE)
    assert result.prepared and not result.skipped
    shard = np.load(next((tmp_path / "shards").glob("*.npz")))
    meta = json.loads(str(shard["meta"]))
    assert meta["landmarks"] == "exact" and shard["frames"].shape[1:] == (SIZE, SIZE, 3)
    assert shard["landmarks"].shape == (meta["n_frames"], 68, 2) and meta["caption"]
    sample = ShardDataset(tmp_path / "shards", frames=4)[0]
    assert sample["frames"].shape == (4, 3, SIZE, SIZE) and sample["audio"].shape[:2] == (4, 5)
    for stage in (1, 2):
        Trainer(settings(tmp_path / "shards", tmp_path / f"run{stage}", stage, steps=1, frames=4)).train()
    again = prepare_folder(split, tmp_path / "shards", size=SIZE)          # resumable: nothing to redo
    assert not again.prepared and again.existing


def test_backbone_stages_then_stage_1_on_the_trained_backbone(shards, tmp_path):
    """vae -> base -> stage 1: each trains only its part; the result carries the trained backbone."""
    vae = Trainer(settings(shards, tmp_path / "vae", "vae"))
    before = {k: v.clone() for k, v in vae.backbone.vae.state_dict().items()}
    vae_file = vae.train()
    assert any(not torch.equal(before[k], v) for k, v in vae.backbone.vae.state_dict().items())
    from portraittalk_core.backbone import load_backbone

    base = Trainer(settings(shards, tmp_path / "base", "base", backbone=str(vae_file)))
    saved_vae = load_backbone(vae_file).vae                    # files hold the EMA weights
    assert torch.equal(base.backbone.vae.encoder.conv_in.weight, saved_vae.encoder.conv_in.weight)
    unet_before = base.backbone.unet.conv_in.weight.clone()
    vae_before = base.backbone.vae.encoder.conv_in.weight.clone()
    base_file = base.train()
    assert not torch.equal(unet_before, base.backbone.unet.conv_in.weight)
    assert torch.equal(vae_before, base.backbone.vae.encoder.conv_in.weight)      # the VAE stays as trained
    saved_unet = load_backbone(base_file).unet
    stage1 = Trainer(settings(shards, tmp_path / "stage1", 1, backbone=str(base_file)))
    # IdentityNet starts from the trained base UNet.
    assert torch.equal(stage1.net.identity_net.unet.conv_in.weight, saved_unet.conv_in.weight)
    weights = stage1.train()
    carried = load_backbone(weights)                            # the output carries the trained backbone
    assert torch.equal(carried.unet.conv_in.weight, saved_unet.conv_in.weight)
    # The VAE stage measured its latent scale; the backbone file and the final weights both carry it.
    scale = saved_vae.config.scaling_factor
    assert scale != 0.18215 and carried.vae.config.scaling_factor == scale
    assert load_model(weights).config.vae["scaling_factor"] == scale


def test_a_finished_vae_stage_run_again_saves_the_same_backbone(shards, tmp_path):
    """train-demo runs every stage again to resume: a finished stage's second save must equal its first (the
    latent scale is measured on the same frames), or every later stage would train on other latents."""
    from safetensors.torch import load_file

    first = Trainer(settings(shards, tmp_path / "vae", "vae", steps=3, checkpoint_every=3)).train()
    saved = load_file(first)
    again = Trainer(settings(shards, tmp_path / "vae", "vae", steps=3, checkpoint_every=3)).train()
    assert load_model_config_scale(first) == load_model_config_scale(again)
    assert all(torch.equal(saved[k], v) for k, v in load_file(again).items())


def test_a_finished_stage_run_again_resumes_at_its_last_step(shards, tmp_path):
    """A stage whose step count is not a multiple of checkpoint_every checkpoints its last step too, so train-demo
    run again on a finished chain trains nothing (it used to retrain from the last round checkpoint)."""
    run = lambda: Trainer(settings(shards, tmp_path / "s1", 1, steps=3, checkpoint_every=2))
    first = run()
    first.train()
    assert sorted(p.name for p in (tmp_path / "s1").glob("checkpoint-*")) == ["checkpoint-0000002", "checkpoint-0000003"]
    again = run()
    again.train()
    steps = [json.loads(x)["step"] for x in (tmp_path / "s1" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3] and again.step == 3
    assert all(torch.equal(a, b) for a, b in zip(first.params, again.params))


def test_the_demo_recipe_passes_every_stage_plan_setting_to_its_stage(tmp_path, monkeypatch):
    """Each StagePlan field must reach the stage's TrainSettings (a field left out trains with the default)."""
    import dataclasses

    from portraittalk_core.training import recipe as recipe_module

    seen = []

    class Recording:
        def __init__(self, settings):
            seen.append(settings)

        def train(self):
            out = Path(seen[-1].out) / "result.safetensors"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(b"")
            return out

    monkeypatch.setattr(recipe_module, "Trainer", Recording)
    monkeypatch.setattr(recipe_module, "synth_dataset", lambda *a, **k: None)
    monkeypatch.setattr(recipe_module, "prepare_folder", lambda *a, **k: None)
    monkeypatch.setattr(recipe_module, "make_stills", lambda path, *a, **k: path)
    recipe_module.train_demo(tmp_path)
    plans = recipe_module.DEMO.stages
    assert [s.stage for s in seen] == [p.stage for p in plans]
    for plan, trained in zip(plans, seen):
        for field in dataclasses.fields(plan):
            assert getattr(trained, field.name) == getattr(plan, field.name), (plan.stage, field.name)
    assert [s.stage for s in seen].index("text") < [s.stage for s in seen].index("base")   # base starts from it
    assert all(s.stills for s in seen if s.stage in ("vae", "text", "base", 1))   # the stills' people, in all four


def test_vae_stage_trains_on_the_clips_and_the_stills(shards, tmp_path):
    """Stage vae mixes the stills with the clips' frames (one batch of 7 holds all of both here), trains encoder
    and decoder, and measures its latent scale over that mix."""
    from portraittalk_core.backbone import load_backbone
    from portraittalk_core.synth.stills import make_stills
    from portraittalk_core.training.data import MixedDataset
    from portraittalk_core.training.latents import latent_scaling_factor

    stills = make_stills(tmp_path / "stills.npz", 4, size=96, train_size=SIZE)
    vae = Trainer(settings(shards, tmp_path / "vae", "vae", stills=str(stills), steps=2, batch_size=7))
    assert isinstance(vae.dataset, MixedDataset) and len(vae.dataset) == 3 + 4
    before = {k: v.clone() for k, v in vae.backbone.vae.state_dict().items()}
    trained = load_backbone(vae.train()).vae
    after = trained.state_dict()
    for prefix in ("encoder.", "decoder."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix
    pixels = torch.cat([vae.dataset[i]["frames"][:1] for i in range(len(vae.dataset))])   # clips' and stills'
    assert trained.config.scaling_factor == pytest.approx(latent_scaling_factor(trained, pixels), rel=1e-4)


def test_decoder_stage_changes_the_decoder_and_no_latent(shards, tmp_path):
    """Stage decoder trains the VAE's decoder alone, on the clips and stills: the latents (their cache key too), and
    so every stage trained on them, stay exactly as they were; the frames decoded from them change."""
    from portraittalk_core.backbone import load_backbone
    from portraittalk_core.synth.stills import make_stills
    from portraittalk_core.training.data import MixedDataset
    from portraittalk_core.training.latents import vae_fingerprint

    vae_file = Trainer(settings(shards, tmp_path / "vae", "vae")).train()
    stills = make_stills(tmp_path / "stills.npz", 4, size=96, train_size=SIZE)
    decoder = Trainer(settings(shards, tmp_path / "decoder", "decoder", backbone=str(vae_file), stills=str(stills),
                               steps=3, ema_decay=0.0))
    assert isinstance(decoder.dataset, MixedDataset) and len(decoder.dataset) == 3 + 4
    decoder_file = decoder.train()
    before, after = load_backbone(vae_file), load_backbone(decoder_file)
    pixels = decoder.dataset[0]["frames"]
    with torch.no_grad():
        latents = before.encode_images(pixels)
        assert torch.equal(latents, after.encode_images(pixels))
        assert not torch.equal(before.vae.decode(latents).sample, after.vae.decode(latents).sample)
    assert vae_fingerprint(before.vae) == vae_fingerprint(after.vae)
    assert before.vae.config.scaling_factor == after.vae.config.scaling_factor
    for name in ("unet", "text_encoder"):   # nothing outside the decoder moved
        first, second = getattr(before, name).state_dict(), getattr(after, name).state_dict()
        assert all(torch.equal(first[k], second[k]) for k in first)


def test_text_stage_trains_the_text_encoder_contrastively_and_resumes(shards, tmp_path):
    """Stage text trains the text encoder alone (its image tower is not saved) and lowers the contrastive loss of
    the frames against their captions; a run stopped and resumed ends where a straight run does."""
    from portraittalk_core.backbone import load_backbone, random_backbone
    from portraittalk_core.config import tiny
    from portraittalk_core.synth.stills import make_stills
    from safetensors import safe_open

    from portraittalk_core.training.contrastive import contrastive_loss
    from portraittalk_core.training.data import collate

    stills = make_stills(tmp_path / "stills.npz", 5, size=96, train_size=SIZE)
    text = lambda out, steps: Trainer(settings(shards, tmp_path / out, "text", stills=str(stills), steps=steps,
                                               batch_size=8, learning_rate=3e-3, ema_decay=0.0, checkpoint_every=10))
    trainer = text("text", 20)
    batch = collate([trainer.dataset[i] for i in range(len(trainer.dataset))])
    ids = trainer.backbone.token_ids(batch["caption"])
    loss = lambda: contrastive_loss(trainer.stage.pair, ids, batch["frames"][:, 0]).item()
    with torch.no_grad():
        before = loss()
    saved = trainer.train()
    trained = load_backbone(saved)
    with torch.no_grad():
        after = loss()
    assert after < 0.7 * before
    untouched = random_backbone(tiny(), 0)
    for name in ("unet", "vae"):
        first, second = getattr(untouched, name).state_dict(), getattr(trained, name).state_dict()
        assert all(torch.equal(first[k], second[k]) for k in first)
    first, second = untouched.text_encoder.state_dict(), trained.text_encoder.state_dict()
    assert not all(torch.equal(first[k], second[k]) for k in first)
    with safe_open(str(saved), "pt") as f:   # the image tower and its projections are not in the file
        keys = list(f.keys())
    assert any("text_encoder" in k for k in keys) and not any("vision" in k or "projection" in k for k in keys)

    text("resumed", 10).train()
    resumed = text("resumed", 20)
    resumed.train()
    assert all(torch.equal(a, b) for a, b in zip(trainer.params, resumed.params))


def test_base_stage_can_keep_the_text_encoder_as_it_came(shards, tmp_path):
    from portraittalk_core.backbone import load_backbone, random_backbone
    from portraittalk_core.config import tiny

    trained = {share: load_backbone(Trainer(settings(shards, tmp_path / str(share), "base",
                                                     text_encoder_lr_scale=share)).train()) for share in (1.0, 0.0)}
    start = random_backbone(tiny(), 0)
    moved = lambda backbone, name: not all(torch.equal(v, getattr(backbone, name).state_dict()[k])
                                           for k, v in getattr(start, name).state_dict().items())
    assert moved(trained[1.0], "unet") and moved(trained[1.0], "text_encoder")
    assert moved(trained[0.0], "unet") and not moved(trained[0.0], "text_encoder")



def test_base_stage_trains_the_text_encoder_at_its_share_of_the_learning_rate(shards, tmp_path):
    trainer = Trainer(settings(shards, tmp_path / "scaled", "base", learning_rate=1e-3, text_encoder_lr_scale=0.1))
    trainer.train()
    unet, text = trainer.optimizer.param_groups
    assert unet["lr"] == pytest.approx(1e-3) and text["lr"] == pytest.approx(1e-4)
    text_params = list(trainer.backbone.text_encoder.parameters())
    assert len(text["params"]) == len(text_params) and all(a is b for a, b in zip(text["params"], text_params))
    assert len(unet["params"]) == len(list(trainer.backbone.unet.parameters()))


def load_model_config_scale(path) -> float:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["config"])["vae"]["scaling_factor"]


def test_vae_scaling_factor_gives_unit_variance_latents(shards):
    from portraittalk_core.config import tiny
    from portraittalk_core.backbone import random_backbone
    from portraittalk_core.training.data import ShardDataset
    from portraittalk_core.training.latents import latent_scaling_factor

    vae = random_backbone(tiny()).vae
    pixels = torch.cat([ShardDataset(shards)[i]["frames"] for i in range(3)])
    vae.register_to_config(scaling_factor=latent_scaling_factor(vae, pixels))
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
    assert latents.std().item() == pytest.approx(1.0, rel=1e-4)


def test_learning_rate_schedule():
    from portraittalk_core.training.settings import learning_rate_at

    cosine = TrainSettings(stage=1, data="", out="", steps=100, learning_rate=1.0, lr_schedule="cosine",
                           warmup_steps=10)
    assert learning_rate_at(0, cosine) == pytest.approx(0.1 * 0.5 * (1 + np.cos(0)))
    assert learning_rate_at(50, cosine) == pytest.approx(0.5)
    assert learning_rate_at(99, cosine) < 0.01
    constant = TrainSettings(stage=1, data="", out="", steps=100, learning_rate=2.0)
    assert learning_rate_at(0, constant) == learning_rate_at(99, constant) == 2.0


def test_latent_cache_is_reused_only_for_the_same_vae(shards, tmp_path):
    from portraittalk_core.training.data import ShardDataset

    calls = []

    def encode(pixels):
        calls.append(len(pixels))
        return pixels[:, :1, ::4, ::4] * 2

    file = tmp_path / "latents.safetensors"
    first = ShardDataset(shards, frames=2)
    first.cache_latents(encode, file, "vae-a")
    assert sum(calls) == 3 * 12
    sample = first[1]
    assert torch.equal(sample["latents"], sample["frames"][:, :1, ::4, ::4] * 2)
    again = ShardDataset(shards, frames=2)
    again.cache_latents(lambda p: pytest.fail("the cache should have been read"), file, "vae-a")
    assert all(torch.equal(a, b) for a, b in zip(first.latents, again.latents))
    other = ShardDataset(shards, frames=2)
    other.cache_latents(encode, file, "vae-b")                  # another VAE: encoded again
    assert sum(calls) == 2 * 3 * 12


def test_mouth_boxes_cover_the_mouth_with_a_margin():
    from portraittalk_core.conditioning import mouth_boxes

    landmarks = np.zeros((2, 3, 2), np.float32)
    landmarks[:, :, 0] = [[20, 30, 40], [20, 30, 40]]
    landmarks[:, :, 1] = [[40, 44, 48], [40, 50, 60]]
    boxes = mouth_boxes(landmarks, np.arange(3), 64, margin=0.25)
    assert boxes.shape == (2, 1, 64, 64)
    assert boxes[0, 0, 44, 30] == 1 and boxes[0, 0, 44, 10] == 0 and boxes[0, 0, 58, 30] == 0
    assert boxes[1, 0, 58, 30] == 1                                       # follows each frame's mouth


def test_structure_maps_leave_the_mouth_to_the_audio():
    from portraittalk_core.conditioning import structure_maps

    rng = np.random.default_rng(0)
    landmarks = (rng.random((10, 2)) * 0.5 + 0.25).astype(np.float32) * SIZE
    regions = {"outline": [0, 1, 2], "brows": [3], "eyes": [4, 5], "nose": [6], "mouth": [7, 8, 9]}
    head = np.zeros((SIZE, SIZE), np.uint8)
    head[10:50, 12:52] = 1
    maps = structure_maps(head, landmarks, regions)
    assert maps.shape == (4, SIZE, SIZE) and maps.dtype == np.float32
    assert np.array_equal(maps[0], head) and maps[1].max() == 1 and maps[2].max() == 1
    assert maps[3].max() == 0                                     # no mouth in the landmark map


def test_stage2_mouth_weight_changes_the_loss(shards, tmp_path):
    losses = []
    for weight in (1.0, 8.0):
        trainer = Trainer(settings(shards, tmp_path / f"w{weight}", 2, mouth_weight=weight))
        batch = next(iter(trainer.loader))
        torch.manual_seed(0)
        trainer.generator.manual_seed(0)
        losses.append(trainer.stage.loss(trainer, batch).item())
    assert losses[0] != pytest.approx(losses[1])


def test_offset_noise_adds_one_shift_per_sample_and_channel(shards, tmp_path):
    """noise_offset = x: the noise is the plain Gaussian the same generator would give, plus x times one draw per
    (sample, channel) shared by every frame and pixel; 0 gives the plain Gaussian."""
    shape = (4, 3, 2, 8, 8)
    draws = {}
    for offset in (0.0, 0.5):
        trainer = Trainer(settings(shards, tmp_path / f"o{offset}", "base", noise_offset=offset))
        trainer.generator.manual_seed(0)
        draws[offset] = trainer.training_noise(shape)
    shift = (draws[0.5] - draws[0.0]) / 0.5
    assert shift.abs().min() > 0                                   # every element moved
    assert torch.allclose(shift, shift[:, :, :1, :1, :1].expand(shape), atol=1e-6)   # one value per sample, channel
    assert shift[:, :, 0, 0, 0].std() > 0.3                          # and a different one for each
    trainer.generator.manual_seed(0)
    assert torch.equal(draws[0.0], torch.randn(shape, generator=trainer.generator))


@pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None, reason="needs espeak-ng (setup.sh installs it)")
def test_the_demo_recipe_runs_end_to_end_at_a_tiny_scale(tmp_path, reference_path):
    from conftest import tone
    from portraittalk_core.generation.settings import GenerationSettings
    from portraittalk_core.pipeline import PortraitTalkPipeline
    from portraittalk_core.training.recipe import train_demo

    final = train_demo(tmp_path / "demo", scale=0.001)
    pipe = PortraitTalkPipeline.from_pretrained(final)          # one file: networks and backbone
    assert pipe.config.name == "demo" and pipe.config.vae["scaling_factor"] == pipe.backbone.vae.config.scaling_factor
    result = pipe([reference_path], (tone(0.4), 16_000), None, GenerationSettings(steps=1), progress=False)
    assert result.frames == 10


def test_the_committed_demo_model_carries_the_recipes_config():
    """The embedded file's config is config.py's demo preset (with the latent scale its vae learnt): the generation
    defaults chosen on val (region, audio and restyle guidance) are the ones it runs with, and train-demo writes
    them."""
    from portraittalk_core.assets import DEMO_WEIGHTS
    from portraittalk_core.config import preset
    from portraittalk_core.weights import read_config

    committed = read_config(DEMO_WEIGHTS)
    recipe = preset("demo")
    assert committed == recipe.replace(vae=dict(recipe.vae, scaling_factor=committed.vae["scaling_factor"]))


def test_stills_mix_into_the_single_frame_stages(shards, tmp_path):
    from portraittalk_core.synth.stills import make_stills
    from portraittalk_core.training.data import MixedDataset, collate

    stills = make_stills(tmp_path / "stills.npz", 5, size=96, train_size=SIZE)
    trainer = Trainer(settings(shards, tmp_path / "s1", 1, stills=str(stills), batch_size=8))
    data = trainer.dataset
    assert isinstance(data, MixedDataset) and len(data) == 3 + 5
    batch = collate([data[i] for i in range(len(data))])
    captions = set(batch["caption"])
    assert {f"a person number {i}" for i in range(3)} <= captions and len(captions) == 8
    assert batch["latents"].shape[:2] == (8, 1) and batch["frames"].shape == (8, 1, 3, SIZE, SIZE)
    assert "audio" not in batch                                           # stills have none: only shared keys
    data.use_epoch(1)
    order = [data[i]["caption"] for i in range(len(data))]
    data.use_epoch(2)
    assert [data[i]["caption"] for i in range(len(data))] != order         # shuffled per epoch
    data.use_epoch(1)
    assert [data[i]["caption"] for i in range(len(data))] == order         # the same order again on resume
    before = snapshot(trainer)
    trainer.train()
    assert changed(before, snapshot(trainer), "identity_net.")
    # stage 2 trains on clips only
    assert not isinstance(Trainer(settings(shards, tmp_path / "s2", 2, stills=str(stills))).dataset, MixedDataset)



def test_train_command_runs_the_text_stage_and_a_base_that_keeps_it(shards, tmp_path, capsys):
    from portraittalk_core.backbone import load_backbone
    from portraittalk_core.cli import main

    common = ["--data", str(shards), "--steps", "1", "--batch-size", "3"]
    assert main(["train", "--stage", "text", "--out", str(tmp_path / "text"), *common]) == 0
    text = tmp_path / "text" / "backbone.safetensors"
    assert main(["train", "--stage", "base", "--text-encoder-lr-scale", "0", "--backbone", str(text),
                 "--out", str(tmp_path / "base"), *common]) == 0
    assert f"wrote {tmp_path / 'base' / 'backbone.safetensors'}" in capsys.readouterr().out
    before = load_backbone(text).text_encoder.state_dict()
    after = load_backbone(tmp_path / "base" / "backbone.safetensors").text_encoder.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_train_command_refuses_a_negative_text_encoder_share_in_one_line(shards, tmp_path, capsys):
    from portraittalk_core.cli import main

    code = main(["train", "--stage", "base", "--text-encoder-lr-scale", "-1", "--data", str(shards),
                 "--out", str(tmp_path / "base"), "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "is negative" in errors[0] and "Fix:" in errors[0], err
    assert not (tmp_path / "base").exists()          # refused before anything is written
