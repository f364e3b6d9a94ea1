"""Hallo's net.pth key by key (issue 26, item 1: convert/hallo.py): every one of the 2,656 keys of their full-size
Net (tests/fixtures/hallo/net_keys.json, written from their code) has one destination or an explicit skip; the UNet
keys go back through diffusers' own LDM -> diffusers converter to SD1.5's UNet exactly; the PortraitTalk keys fit our
modules built at full size on the meta device; their file is read with weights_only and checked."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

from portraittalk_core.comfyui.blocks import comfy_unet_config
from portraittalk_core.config import sd15
from portraittalk_core.convert.hallo import (LDM_PREFIX, PORTRAITTALK, SKIP, SKIPPED_PREFIX, UNET, hallo_destination,
                                             hallo_net_shapes, read_hallo_checkpoint)
from portraittalk_core.errors import WeightsError
from portraittalk_core.models.audio_block import RegionAudioBlock
from portraittalk_core.models.flat_audio_projection import FlatAudioProjection
from portraittalk_core.models.projection import IdentityProjection
from portraittalk_core.models.structure import structure_encoder

NET = json.loads((Path(__file__).parent / "fixtures" / "hallo" / "net_keys.json").read_text())
THEIRS = {key: tuple(shape) for key, shape in NET["keys"].items()}
DESTINATIONS = {key: hallo_destination(key, shape) for key, shape in THEIRS.items()}


def shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def ours(prefix: str) -> dict[str, tuple[int, ...]]:
    """Their shapes by our key, for the PortraitTalk destinations under ``prefix``."""
    return {d.key: THEIRS[k] for k, d in DESTINATIONS.items() if d.kind == PORTRAITTALK and d.key.startswith(prefix)}


def test_every_key_has_one_destination_or_an_explicit_skip():
    assert len(THEIRS) == NET["key_count"] == 2656
    assert all(d.kind in (UNET, PORTRAITTALK, SKIP) for d in DESTINATIONS.values())
    assert all(d.key or d.same_as for d in DESTINATIONS.values())       # a drop says what it copies
    assert all((d.kind == SKIP) == bool(d.reason) for d in DESTINATIONS.values())
    written = [(d.kind if d.kind == UNET else PORTRAITTALK, d.key) for d in DESTINATIONS.values() if d.key]
    assert len(written) == len(set(written))

    def group(d):
        if d.kind == UNET:
            return "unet"
        if d.key is None:
            return "dropped copy"
        name = d.key.removeprefix(SKIPPED_PREFIX)
        part = next((p for p in ("motion_modules", "audio_blocks") if f".{p}." in name), None)
        label = ".".join(name.split(".")[:2 if name.startswith(("animate_net", "identity_net")) else 1])
        return ("skipped " if d.kind == SKIP else "") + (part or label)

    assert Counter(map(group, DESTINATIONS.values())) == {
        "unet": 686, "identity_net.unet": 682, "motion_modules": 16 * 27, "audio_blocks": 16 * 42,
        "animate_net.structure_encoder": 16, "identity_projection": 4, "audio_projection": 8,
        "skipped motion_modules": 5 * 27, "dropped copy": 21}


def test_skips_are_the_attention_free_blocks_motion_modules_and_the_second_position_tables():
    for key, d in DESTINATIONS.items():
        bypassed = re.match(r"denoising_unet\.(down_blocks\.3|up_blocks\.0)\.motion_modules\.", key)
        copy = key.endswith("attention_blocks.1.pos_encoder.pe")
        assert (d.kind == SKIP) == bool(bypassed or copy), key
        if copy:
            assert d.key is None and d.same_as == key.replace("attention_blocks.1.", "attention_blocks.0.")
        elif bypassed:
            assert d.key.startswith(SKIPPED_PREFIX + "animate_net.unet.") and ".motion_modules." in d.key


def test_unknown_keys_and_wrong_shapes_raise():
    with pytest.raises(WeightsError, match="not a key of Hallo's Net"):
        hallo_destination("denoising_unet.down_blocks.0.attentions.0.extra.weight", (320,))
    with pytest.raises(WeightsError, match="not a key of Hallo's Net"):
        hallo_destination("vae.encoder.conv_in.weight", (128, 3, 3, 3))
    with pytest.raises(WeightsError, match=r"has the shape \(320,\), Hallo's Net has \(3072, 512\)"):
        hallo_destination("imageproj.proj.weight", (320,))


def test_our_modules_at_their_sizes_give_their_key_list():
    assert hallo_net_shapes() == THEIRS


def test_hallo2_net_has_hallos_keys_and_shapes():
    """Hallo2's Net (fudan-generative-vision/hallo2, scripts/inference_long.py, configs/inference/long.yaml), built by
    tools/hallo_reference.py keys --digest-out on its checkout, has Hallo's 2,656 keys with the same shapes
    (docs/hallo2.md, section 1): so the conversion and its key checks take Hallo2's net.pth as they take Hallo's."""
    hallo2 = json.loads((Path(__file__).parent / "fixtures" / "hallo" / "net2_keys_digest.json").read_text())
    assert "hallo2" in hallo2["source"]["module"]
    lines = "".join(f"{key}:{','.join(str(d) for d in shape)}\n" for key, shape in sorted(THEIRS.items()))
    assert hashlib.sha256(lines.encode()).hexdigest() == hallo2["digest"]["sha256"]
    for field in ("key_count", "parameter_count", "state_dict_numel", "groups", "dtype", "unet_additional_kwargs"):
        assert hallo2[field] == NET[field], field
    assert hallo2["buffer_count"] == len(NET["buffers"]) == 42


def test_unet_keys_convert_back_to_sd15_with_diffusers_own_converter():
    unet_keys = {k: d.key for k, d in DESTINATIONS.items() if d.kind == UNET}
    assert all(k.startswith("denoising_unet.") and v.startswith(LDM_PREFIX) for k, v in unet_keys.items())
    # One distinct meta tensor per key: the converter only moves them, so identity shows which key went where.
    checkpoint = {ldm: torch.empty(THEIRS[k], device="meta") for k, ldm in unet_keys.items()}
    converted = convert_ldm_unet_checkpoint(checkpoint, dict(sd15().unet))
    with torch.device("meta"):
        expected = shapes(UNet2DConditionModel(**sd15().unet))
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    for theirs, ldm in unet_keys.items():
        assert converted[theirs.removeprefix("denoising_unet.")] is checkpoint[ldm], theirs


def test_unet_keys_keep_the_ldm_modules_order():
    """diffusers' converter accepts an upsampler at either index of an output block; the LDM layout (and ComfyUI's
    strict key map) has each block's modules numbered 0, 1, 2 without gaps: resnet, transformer, resampler."""
    found: dict[tuple[str, str], dict[int, set[str]]] = {}
    for d in DESTINATIONS.values():
        name = d.key.removeprefix(LDM_PREFIX) if d.kind == UNET else ""
        match = (re.match(r"(input_blocks|output_blocks)\.(\d+)\.(\d+)\.(\w+)\.", name)
                 or re.match(r"(middle_block)()\.(\d+)\.(\w+)\.", name))
        if match:
            kind = ("resnet" if match[4] in ("in_layers", "emb_layers", "out_layers", "skip_connection") else
                    "resampler" if match[4] in ("op", "conv") else "transformer")
            found.setdefault((match[1], match[2]), {}).setdefault(int(match[3]), set()).add(kind)
    assert len(found) == 11 + 1 + 12                                   # input block 0 (conv_in) holds no module
    for block, modules in found.items():
        assert sorted(modules) == list(range(len(modules))), block
        assert all(len(kinds) == 1 for kinds in modules.values()), block
        order = [kinds.pop() for _, kinds in sorted(modules.items())]
        if block[0] == "middle_block":
            assert order == ["resnet", "transformer", "resnet"]
        else:
            assert order in (["resnet"], ["resnet", "transformer"], ["resnet", "resampler"],
                             ["resnet", "transformer", "resampler"], ["resampler"]), block


@pytest.mark.skipif(not os.environ.get("COMFYUI_PATH"), reason="set COMFYUI_PATH to check against ComfyUI's key map")
def test_unet_keys_are_comfyuis_ldm_names():
    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    try:
        utils = pytest.importorskip("comfy.utils")
    finally:
        sys.path.remove(os.environ["COMFYUI_PATH"])
    config = comfy_unet_config(dict(sd15().unet))
    per_level = sd15().unet["layers_per_block"]
    config["transformer_depth"] = [d for d in config["transformer_depth"] for _ in range(per_level)]  # per layer
    key_map = utils.unet_to_diffusers(config)
    for theirs, d in DESTINATIONS.items():
        if d.kind == UNET:
            assert d.key == LDM_PREFIX + key_map[theirs.removeprefix("denoising_unet.")], theirs


def test_portraittalk_keys_fit_our_modules_at_full_size():
    config = sd15()
    heads, cross = config.unet["attention_head_dim"], config.unet["cross_attention_dim"]
    with torch.device("meta"):
        unet = shapes(UNet2DConditionModel(**config.unet), "identity_net.unet.")
        motion = shapes(MotionAdapter(**config.motion), "animate_net.unet.")
        assert ours("animate_net.structure_encoder.") == shapes(
            structure_encoder(320, (16, 32, 64, 128), input_channels=3), "animate_net.structure_encoder.")
        assert ours("identity_projection.") == shapes(IdentityProjection(512, cross, 4), "identity_projection.")
        assert ours("audio_projection.") == shapes(FlatAudioProjection(12, 768, 2, cross, 32, 512),
                                                   "audio_projection.")
        audio = ours("animate_net.unet.")
        audio = {k: v for k, v in audio.items() if ".audio_blocks." in k}
        blocks = sorted({k.split(".audio_blocks.")[0] + ".audio_blocks." + k.split(".audio_blocks.")[1].split(".")[0]
                         for k in audio})
        assert len(blocks) == 16
        for block in blocks:
            mine = {k: v for k, v in audio.items() if k.startswith(block + ".")}
            width, inner = mine[block + ".proj_in.weight"][1], mine[block + ".proj_in.weight"][0]
            assert mine == shapes(RegionAudioBlock(width, heads, inner // heads, cross), block + ".")
    # IdentityNet's UNet: all of SD1.5's but the output layers, which their reference UNet does not have.
    assert ours("identity_net.") == {k: v for k, v in unet.items() if ".conv_norm_out." not in k
                                     and ".conv_out." not in k}
    assert len(unet) - len(ours("identity_net.")) == 4
    # Motion modules: AnimateNet's (MotionAdapter's names), the bypassed ones under skipped.
    kept = ours("animate_net.unet.")
    kept = {k: v for k, v in kept.items() if ".motion_modules." in k}
    skipped = {d.key.removeprefix(SKIPPED_PREFIX): THEIRS[k] for k, d in DESTINATIONS.items() if d.kind == SKIP
               and d.key}
    assert not kept.keys() & skipped.keys() and {**kept, **skipped} == motion


# -- their file ----------------------------------------------------------------------------------------------------
def _mark(*_):
    MARKS.append("ran")


MARKS: list[str] = []


class Payload:
    """A pickled object: unpickling it would call ``_mark``, i.e. run code."""

    def __reduce__(self):
        return _mark, ()


def full_size_net(path: Path, change: dict | None = None) -> Path:
    """A file with every key of their Net at its shape, each a stride-0 view of one zero (a few kB, not 9.7 GB)."""
    one = torch.zeros(1)
    state = {k: one.expand(shape) if shape else one[0] for k, shape in THEIRS.items()}
    state.update(change or {})
    torch.save(state, path)
    return path


def test_reads_their_net_with_weights_only(tmp_path):
    path = full_size_net(tmp_path / "net.pth")
    before = path.read_bytes()
    state = read_hallo_checkpoint(path)
    assert {k: tuple(v.shape) for k, v in state.items()} == THEIRS
    assert path.read_bytes() == before                       # the input is left as it was


def test_refuses_a_pickled_object_without_running_it(tmp_path):
    path = tmp_path / "net.pth"
    torch.save({"imageproj.norm.weight": torch.zeros(768), "extra": Payload()}, path)
    with pytest.raises(WeightsError, match=r"holds a pickled Python object \(.*_mark\).*refused.*Fix: ") as err:
        read_hallo_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert MARKS == []


def test_refuses_files_that_are_not_their_net(tmp_path):
    with pytest.raises(WeightsError, match=re.escape(f"looked for 'net.pth' in '{tmp_path}'")):
        read_hallo_checkpoint(tmp_path / "net.pth")
    full_size_net(tmp_path / "net.pth")
    with pytest.raises(WeightsError, match="is a folder.*Fix: pass " + re.escape(f"'{tmp_path / 'net.pth'}'")):
        read_hallo_checkpoint(tmp_path)

    small = tmp_path / "small.pth"
    torch.save({"imageproj.proj.weight": torch.zeros(3072, 512), "imageproj.norm.weight": torch.zeros(768),
                "unet.extra": torch.zeros(2)}, small)
    with pytest.raises(WeightsError, match=r"not Hallo's Net checkpoint: 2654 missing \(reference_unet 682, denoising_unet 1946, face_locator 16, imageproj 2, audioproj 8\): reference_unet\.conv_in\.weight"
                                           r".* and 2649 more; 1 unexpected \(unet 1\): unet\.extra") as err:
        read_hallo_checkpoint(small)
    assert str(small) in str(err.value) and "\n" not in str(err.value)

    shaped = full_size_net(tmp_path / "shaped.pth", {"imageproj.proj.weight": torch.zeros(3072, 256)})
    with pytest.raises(WeightsError, match=r"1 wrong shape \(imageproj 1\): imageproj\.proj\.weight \(file \(3072, 256\), Net "):
        read_hallo_checkpoint(shaped)

    copy = "denoising_unet.mid_block.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1."
    unequal = full_size_net(tmp_path / "unequal.pth", {copy + "pos_encoder.pe": torch.ones(1, 32, 1280)})
    with pytest.raises(WeightsError, match="1 position tables differ"):
        read_hallo_checkpoint(unequal)

    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        read_hallo_checkpoint(listed)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}}, wrapped)
    with pytest.raises(WeightsError, match="not a plain state dict of tensors: 'state_dict' holds a dict"):
        read_hallo_checkpoint(wrapped)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(WeightsError, match=re.escape(f"'{garbage}'") + " is not a (readable )?PyTorch checkpoint"):
        read_hallo_checkpoint(garbage)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint \\(EOFError\\)"):
        read_hallo_checkpoint(empty)


def test_convert_command_writes_the_unet_and_the_portraittalk_file(tmp_path, capsys):
    """``portraittalk convert hallo`` on their tiny Net (the fixtures' size): the UNet file in LDM names goes back to
    their denoiser's spatial weights through diffusers' own converter; the PortraitTalk file loads for inference
    (``weights.load_model``, the ``skipped.*`` tensors left out) and keeps every converted tensor unchanged."""
    from safetensors.torch import load_file

    from portraittalk_core.cli import main
    from portraittalk_core.config import hallo_tiny
    from portraittalk_core.io.safetensors import read_metadata
    from portraittalk_core.weights import read_config, load_model

    net = Path(__file__).parent / "fixtures" / "hallo" / "tiny_net.pth"
    before = net.read_bytes()
    assert main(["convert", "hallo", "--net", str(net), "--out", str(tmp_path), "--config", "hallo_tiny"]) == 0
    unet_file, model_file = tmp_path / "hallo_unet.safetensors", tmp_path / "portraittalk_hallo.safetensors"
    assert f"wrote {unet_file}" in capsys.readouterr().out
    assert net.read_bytes() == before
    theirs = torch.load(net, weights_only=True)
    config = hallo_tiny()

    unet = load_file(unet_file)
    assert all(k.startswith(LDM_PREFIX) for k in unet)
    assert read_metadata(unet_file)["format"] == "sd15-unet"
    spatial = convert_ldm_unet_checkpoint(unet, dict(config.unet))
    base = UNet2DConditionModel(**config.unet)
    assert set(spatial) == set(base.state_dict())
    for key, tensor in spatial.items():
        assert torch.equal(tensor, theirs[f"denoising_unet.{key}"]), key

    assert read_config(model_file) == config
    stored = load_file(model_file)
    for key, tensor in theirs.items():
        d = hallo_destination(key, tensor.shape, config)
        if d.kind != UNET and d.key is not None:
            assert torch.equal(stored[d.key], tensor), key
    # one layer a block: down_blocks.3 holds 1 bypassed motion module, up_blocks.0 holds 2
    assert sum(k.startswith(SKIPPED_PREFIX) for k in stored) == 3 * 27
    model = load_model(model_file, base)
    assert torch.equal(model.audio_projection.norm.weight, theirs["audioproj.norm.weight"])

    # never over a converted file, and never a half-written one
    assert main(["convert", "hallo", "--net", str(net), "--out", str(tmp_path), "--config", "hallo_tiny"]) == 2
    assert "already exist" in capsys.readouterr().err
    assert main(["convert", "hallo", "--net", str(net), "--out", str(tmp_path / "full")]) == 2
    assert "is not Hallo's Net checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "full").exists() or not any((tmp_path / "full").iterdir())
