"""``train --init`` from a converted model of another config: a warm start (weights.warm_start).

Hallo's tiny fixture Net, converted by the command at hallo_tiny's size, into a PortraitTalk model whose UNet, motion
modules and identity projection have hallo_tiny's sizes: the reference UNet, every motion module (those kept under
``skipped.`` too) and the identity projection are taken exactly; the decoupled attention, the 4-channel structure
encoder and the audio projection, which Hallo has no counterpart for, start as a fresh model of the same seed does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from portraittalk_core.backbone import random_backbone
from portraittalk_core.cli import main
from portraittalk_core.config import demo, hallo, hallo_tiny, tiny
from portraittalk_core.convert.hallo import PORTRAITTALK, SKIP, hallo_destination, hallo_net_shapes
from portraittalk_core.errors import InputError, WeightsError
from portraittalk_core.io.safetensors import read_metadata, read_state_dict
from portraittalk_core.models import PortraitTalkModel
from portraittalk_core.training.trainer import Trainer, TrainSettings
from portraittalk_core.weights import (KEPT_FOR_TRAINING, load_model, match_warm_start, save_model, save_tensors,
                                       tensor_part)
from test_training import write_shard

NET = Path(__file__).parent / "fixtures" / "hallo" / "tiny_net.pth"
HALLO_TINY = hallo_tiny()
# PortraitTalk's own computation (tiny) on hallo_tiny's UNet, motion modules, identity tokens and face embedding
# (the cross-attention width is the UNet's, 32 in both).
CONFIG = tiny().replace(name="tiny_hallo_sizes", unet=dict(HALLO_TINY.unet), motion=dict(HALLO_TINY.motion),
                        identity_tokens=HALLO_TINY.identity_tokens, face_embed_dim=HALLO_TINY.face_embed_dim)
# What fits at this size (the converted file: 1,233 tensors; the model: 914 trainable ones).
TAKEN = {"identity_projection": 4, "identity_net": 434, "motion_modules": 351}     # 81 of the motion ones: skipped.*
FRESH = {"audio_projection": 7, "face_encoder": 18, "processor": 80, "identity_net": 4, "structure_encoder": 16}
UNUSED = {"structure_encoder": 16, "audio_blocks": 420, "audio_projection": 8}


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted")
    assert main(["convert", "hallo", "--net", str(NET), "--out", str(out), "--config", "hallo_tiny"]) == 0
    return out / "portraittalk_hallo.safetensors"


@pytest.fixture(scope="module")
def shards(tmp_path_factory, reference_path):
    folder = tmp_path_factory.mktemp("shards")
    for i in range(2):
        write_shard(folder, f"clip{i}", 8, i, reference_path)
    return folder


def settings(shards, out, stage, **kw):
    return TrainSettings(**{**dict(stage=stage, data=str(shards), out=str(out), config=CONFIG, steps=2, batch_size=2,
                                   frames=4, checkpoint_every=1000, log_every=1), **kw})


def counts(names) -> dict[str, int]:
    found: dict[str, int] = {}
    for name in names:
        found[tensor_part(name)] = found.get(tensor_part(name), 0) + 1
    return found


def test_match_takes_whole_modules_by_name_and_shape():
    motion, encoder = "animate_net.unet.down_blocks.1.motion_modules.0.", "animate_net.structure_encoder."
    model = {"identity_net.unet.a.weight": (2, 2), "identity_net.unet.conv_out.weight": (4, 2),
             motion + "proj.weight": (3,), encoder + "conv_in.weight": (8, 4), encoder + "conv_out.weight": (8,)}
    file = {"identity_net.unet.a.weight": (2, 2), "skipped." + motion + "proj.weight": (3,),
            encoder + "conv_in.weight": (8, 3), encoder + "conv_out.weight": (8,), "audio_blocks.0.x": (1,)}
    result = match_warm_start(model, file)
    assert result.taken == {"identity_net.unet.a.weight": "identity_net.unet.a.weight",
                            motion + "proj.weight": "skipped." + motion + "proj.weight"}
    # conv_out is absent from the file: fresh; the structure encoder's conv_in has another input: the whole encoder
    # starts fresh, its conv_out too, though that one's shape fits
    assert result.fresh == ["identity_net.unet.conv_out.weight", encoder + "conv_in.weight", encoder + "conv_out.weight"]
    assert result.unused == [encoder + "conv_in.weight", encoder + "conv_out.weight", "audio_blocks.0.x"]
    assert result.reshaped == {encoder + "conv_in.weight": ((8, 3), (8, 4))}


def test_a_converted_hallo_file_warm_starts_stage_2_and_trains(converted, shards, tmp_path, capsys):
    trainer = Trainer(settings(shards, tmp_path / "warm", 2, init=str(converted)))
    fresh = Trainer(settings(shards, tmp_path / "fresh", 2))              # the same seed, no --init
    file = read_state_dict(converted)
    state, fresh_state = trainer.net.state_dict(), fresh.net.state_dict()
    result = trainer.warm_started

    # the reference UNet, every motion module (skipped.* ones too) and the identity projection: the file's, exactly
    expected = {k.removeprefix(KEPT_FOR_TRAINING): k for k in file
                if tensor_part(k) in ("identity_net", "motion_modules", "identity_projection")}
    assert result.taken == {k: expected[k] for k in state if k in expected}
    assert all(torch.equal(state[name], file[key]) for name, key in expected.items())
    skipped = [k for k in file if k.startswith(KEPT_FOR_TRAINING)]
    assert len(skipped) == 81 and all(result.taken[k.removeprefix(KEPT_FOR_TRAINING)] == k for k in skipped)
    assert {k.split(".motion_modules")[0] for k in skipped} == {"skipped.animate_net.unet.down_blocks.3",
                                                                 "skipped.animate_net.unet.up_blocks.0"}
    # everything else as a fresh model of the same seed has it: the audio projection, the structure encoder (on its
    # own 4-channel input), the decoupled attention, the face encoder, IdentityNet's output layers (the base UNet's)
    # and AnimateNet's base
    rest = [k for k in state if k not in result.taken]
    assert rest and all(torch.equal(state[k], fresh_state[k]) for k in rest)
    assert set(result.fresh) == set(trainer.net.trainable_state_dict()) - set(result.taken)
    assert {k for k in result.fresh if tensor_part(k) == "identity_net"} == {
        f"identity_net.unet.{layer}.{p}" for layer in ("conv_norm_out", "conv_out") for p in ("weight", "bias")}
    assert torch.equal(state["identity_net.unet.conv_out.weight"], trainer.backbone.unet.conv_out.weight)

    # the counts, and the one summary line
    assert counts(result.taken) == TAKEN and counts(result.fresh) == FRESH and counts(result.unused) == UNUSED
    assert len(result.taken) + len(result.unused) == len(file) == 1233
    assert len(result.taken) + len(result.fresh) == len(trainer.net.trainable_state_dict()) == 914
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warm start")]
    assert lines == [result.summary(f"'{converted}'")]
    assert ("took 789 tensors (identity_projection 4, identity_net 434, motion_modules 351 (81 from skipped.*)); "
            "125 start fresh" in lines[0]) and "444 of the file's fit nothing (" in lines[0]

    # it trains: finite losses, the motion modules it took move, IdentityNet (stage 1's) does not
    before = {k: v.detach().clone() for k, v in state.items()}
    path = trainer.train()
    after = trainer.net.state_dict()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "warm" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(np.isfinite(losses))
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("motion_modules." in k and k in result.taken for k in moved)
    assert not [k for k in moved if k.startswith(("identity_net.", "identity_projection."))]
    assert load_model(path, trainer.backbone.unet).config.name == "tiny_hallo_sizes"


def test_stage_1_warm_starts_identitynet_on_the_base_unets_output_layers(converted, shards, tmp_path):
    trainer = Trainer(settings(shards, tmp_path, 1, init=str(converted)))
    unet, file = trainer.net.identity_net.unet.state_dict(), read_state_dict(converted)
    ours = {k.removeprefix("identity_net.unet."): v for k, v in file.items() if k.startswith("identity_net.unet.")}
    assert ours and all(torch.equal(unet[k], v) for k, v in ours.items())
    base = trainer.backbone.unet.state_dict()
    assert all(torch.equal(unet[k], base[k]) for k in unet if k.startswith(("conv_norm_out.", "conv_out.")))


def test_a_converted_file_of_the_training_config_loads_as_it_is(converted, shards, tmp_path):
    trainer = Trainer(settings(shards, tmp_path, 2, init=str(converted), config="hallo_tiny"))
    assert trainer.warm_started is None and trainer.config.name == "hallo_tiny"
    loaded, file = trainer.net.trainable_state_dict(), read_state_dict(converted)
    assert loaded.keys() == {k for k in file if not k.startswith(KEPT_FOR_TRAINING)}
    assert all(torch.equal(v, file[k]) for k, v in loaded.items())


def test_portraittalk_weights_of_another_config_load_as_they_are(shards, tmp_path):
    """Today's behaviour: PortraitTalk's own files bring their config (docs/demo_model.md: train --stage motion
    --init stage 2's output of the demo config, with --config left at tiny)."""
    path = save_model(PortraitTalkModel(demo(), random_backbone(tiny(), 0).unet), tmp_path / "demo.safetensors")
    trainer = Trainer(settings(shards, tmp_path / "run", 2, init=str(path), config="tiny"))
    assert trainer.warm_started is None and trainer.config.name == "demo"


def test_a_full_size_hallo_file_fits_nothing_in_the_tiny_sizes(shards, tmp_path):
    """Refused before any model loads. The file: the converted names and full-size shapes of Hallo's small tensors
    (zeros), with a converted file's metadata."""
    tensors = {}
    for key, shape in hallo_net_shapes().items():
        destination = hallo_destination(key, shape)
        if (destination.kind == PORTRAITTALK or destination.kind == SKIP and destination.key) and \
                int(np.prod(shape)) <= 50_000:
            tensors[destination.key] = torch.zeros(shape, dtype=torch.float16)
    metadata = {"format": "portraittalk", "format_version": "1", "config": hallo().to_json(), "source": "hallo"}
    path = save_tensors(tensors, tmp_path / "hallo.safetensors", metadata)
    with pytest.raises(InputError, match=r"nothing in .* \(config 'hallo'\) fits a model of config 'tiny_hallo_sizes'"
                                         r".* other shapes .*Fix: train with a config of the file's sizes"):
        Trainer(settings(shards, tmp_path / "run", 2, init=str(path)))
    assert not (tmp_path / "run").exists()


def test_warm_start_refuses_other_stages_and_a_missing_file_before_loading(converted, shards, tmp_path, capsys):
    out = tmp_path / "motion"
    code = main(["train", "--stage", "motion", "--init", str(converted), "--data", str(shards), "--out", str(out)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err
    assert "only stages 1 and 2 start from (a warm start), not stage motion" in errors[0] and "Fix:" in errors[0]
    assert not out.exists()
    assert read_metadata(converted)["source"] == "hallo"
    with pytest.raises(WeightsError) as missing:
        Trainer(settings(shards, tmp_path / "run", 2, init=str(tmp_path / "nowhere" / "hallo.safetensors")))
    assert "'hallo.safetensors'" in str(missing.value) and str(tmp_path / "nowhere") in str(missing.value)
