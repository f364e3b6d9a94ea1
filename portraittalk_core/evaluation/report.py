"""The report: means over the clips (``summarise``) and the lines ``eval`` prints (``format_report``) against the
targets."""

from __future__ import annotations

import numpy as np

from ..synth.identity import BACKGROUND_COLOURS


TARGETS = {"lip_sync": 0.6, "identity_ssim": 0.8, "prompt_accuracy": 0.8}


def _mean(values) -> float:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def summarise(per_clip: list[dict], baselines: list[dict], prompts: list[dict], palette: list[dict] = ()) -> dict:
    """Means over clips. The baselines read next to the model's figures are those of the clips it generated (the
    first ``len(per_clip)``); the ADFD ordering test counts every clip of the split. ``palette``: the restyles with
    every other colour, summed over all and per colour ("hits/tries")."""
    generated = baselines[:len(per_clip)] or baselines
    summary = {name: _mean(c[name] for c in per_clip)
               for name in ("lip_sync", "identity_ssim", "psnr", "flicker", "flicker_ground_truth", "lmd",
                            "lmd_mouth")}
    summary["adfd"] = _mean(c["adfd"]["score"] for c in per_clip)
    summary["prompt_accuracy"] = _mean(float(p["hit"]) for p in prompts)
    summary["prompt_palette_accuracy"] = _mean(float(p["hit"]) for p in palette)
    summary["prompt_palette_vae_ceiling"] = _mean(float(p["vae_found"] == p["prompted"]) for p in palette)
    summary["prompt_palette_by_colour"] = {
        colour: f"{sum(p['hit'] for p in palette if p['prompted'] == colour)}/"
                f"{sum(p['prompted'] == colour for p in palette)}"
        for colour in BACKGROUND_COLOURS if any(p["prompted"] == colour for p in palette)}
    summary.update({name: _mean(b[name] for b in generated)
                    for name in ("ceiling_lip_sync", "ceiling_lmd", "ceiling_adfd", "still_lip_sync",
                                 "still_identity_ssim", "still_adfd", "posed_still_identity_ssim")})
    summary.update({name: _mean(b[name] for b in generated if name in b)
                    for name in ("vae_identity_ssim", "vae_lip_sync")})
    summary["ordering_holds"] = f"{sum(b['ordering_holds'] for b in baselines)}/{len(baselines)}"
    summary["clips"], summary["prompt_clips"] = len(per_clip), len(prompts)
    summary["prompt_palette_tries"] = len(palette)
    return summary


def format_report(report: dict) -> str:
    def verdict(name):
        return "meets target" if report[name] >= TARGETS[name] else "BELOW target"

    motion = {"ground truth": " following the ground truth's head motion",
              "speech": ", the head moving as the model predicts from the speech"}.get(report.get("head_motion"), "")
    generated = report["clips"] > 0
    lines = [
        f"PortraitTalk eval: {report['clips']} {report['split']} clips (held-out identities and sentences){motion}, "
        f"{report['prompt_clips']} prompt clips; guidance text {report['settings']['text_scale']:g} / identity "
        f"{report['settings']['identity_scale']:g} / audio {report['settings']['audio_scale']:g}",
        *([f"  lip sync (aperture correlation)   {report['lip_sync']:.3f}   target >= 0.6: {verdict('lip_sync')}"
           f"   [ground truth as measured {report['ceiling_lip_sync']:.3f}, through the VAE "
           f"{report['vae_lip_sync']:.3f}, still face {report['still_lip_sync']:.3f}]",
           f"  identity SSIM outside the mouth   {report['identity_ssim']:.3f}   target >= 0.8: "
           f"{verdict('identity_ssim')}   [ground truth through the VAE {report['vae_identity_ssim']:.3f}, still face "
           f"{report['still_identity_ssim']:.3f}, still face moved with the head "
           f"{report['posed_still_identity_ssim']:.3f}]"]
          if generated else ["  lip sync, identity, flicker, ADFD, LMD, PSNR: not run (--clips 0)"]),
        f"  prompt colour found               {report['prompt_accuracy']:.3f}   target >= 0.8: "
        f"{verdict('prompt_accuracy')}   [chance {1 / len(BACKGROUND_COLOURS):.3f}]" if report["prompt_clips"] else
        "  prompt colour found               not run (--prompt-clips 0)",
        *([f"  prompt colour, whole palette      {report['prompt_palette_accuracy']:.3f}   the prompt clips' photos "
           f"restyled alone with every other colour ({report['prompt_palette_tries']} tries): "
           + " ".join(f"{c} {n}" for c, n in report["prompt_palette_by_colour"].items())
           + f"   [painted by hand, through the VAE alone: {report['prompt_palette_vae_ceiling']:.3f}]"]
          if report.get("prompt_palette_tries") else []),
        *([f"  flicker (mean |frame change|)     {report['flicker']:.4f}   ground truth "
           f"{report['flicker_ground_truth']:.4f}   ratio "
           f"{report['flicker'] / max(report['flicker_ground_truth'], 1e-12):.2f}",
           f"  ADFD                              {report['adfd']:.3f}   [ground truth {report['ceiling_adfd']:.3f}, "
           f"still face {report['still_adfd']:.3f}]"] if generated else []),
        f"  ADFD ordering (sync > shift > still > jitter) holds on {report['ordering_holds']} {report['split']} clips",
        *([f"  LMD (inter-ocular units)          {report['lmd']:.4f}   mouth {report['lmd_mouth']:.4f}"
           f"   [instrument error on ground truth {report['ceiling_lmd']:.4f}]",
           f"  PSNR                              {report['psnr']:.2f} dB"] if generated else []),
    ]
    return "\n".join(lines)
