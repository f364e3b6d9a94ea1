"""The model config's noise schedule (``PortraitTalkConfig.schedule``, diffusers scheduler keys over the backbone's)
as ComfyUI's model sampling, which the patched MODEL carries as an object patch, as ComfyUI's own
ModelSamplingDiscrete node does. Imports ComfyUI.

Hallo's weights, for one, predict v on a zero-terminal-SNR schedule of diffusers' plain linear betas
(config.HALLO_SCHEDULE); sampled as SD1.5's epsilon they would give noise.

- diffusers' ``linear`` betas are ComfyUI's ``sqrt_linear`` and diffusers' ``scaled_linear`` ComfyUI's ``linear``
  (comfy/ldm/modules/diffusionmodules/util.py, make_beta_schedule);
- ``rescale_betas_zero_snr`` is ComfyUI's ``zsnr``, which keeps the last alphas_cumprod at 4.9e-8 instead of 0
  (comfy/model_sampling.py, rescale_zero_terminal_snr_sigmas): sigma_max is about 4.5e3, not infinite;
- the sampler's own keys (``timestep_spacing``, ``steps_offset``, ``set_alpha_to_one``, ``clip_sample``) are
  ComfyUI's sampler and scheduler choice: trailing spacing is its "simple" scheduler, and every ComfyUI sampler
  ends at sigma 0, as DDIM with ``set_alpha_to_one``.
"""

from __future__ import annotations

from types import SimpleNamespace

import comfy.model_sampling

from ..errors import WeightsError

BETA_SCHEDULES = {"linear": "sqrt_linear", "scaled_linear": "linear"}   # diffusers' name -> ComfyUI's
PREDICTIONS = {"epsilon": comfy.model_sampling.EPS, "v_prediction": comfy.model_sampling.V_PREDICTION}
SETTINGS = {"beta_start": "linear_start", "beta_end": "linear_end", "num_train_timesteps": "timesteps",
            "rescale_betas_zero_snr": "zsnr"}   # diffusers' keys -> ComfyUI's sampling_settings keys


def sampling_settings(schedule: dict, base: dict) -> dict:
    """ComfyUI's ``sampling_settings`` for the diffusers ``schedule`` keys over ``base`` (the MODEL's own)."""
    settings = dict(base)
    for key, value in schedule.items():
        if key == "beta_schedule":
            if value not in BETA_SCHEDULES:
                raise WeightsError(f"the model's schedule has beta_schedule '{value}', which the ComfyUI host does "
                                   "not know", f"use a model whose beta_schedule is one of {', '.join(BETA_SCHEDULES)}")
            settings["beta_schedule"] = BETA_SCHEDULES[value]
        elif key in SETTINGS:
            settings[SETTINGS[key]] = value
    return settings


def _prediction(schedule: dict, current) -> type:
    if "prediction_type" not in schedule:  # the MODEL's own
        return next(c for c in type(current).__mro__ if c in PREDICTIONS.values())
    if schedule["prediction_type"] not in PREDICTIONS:
        raise WeightsError(f"the model predicts '{schedule['prediction_type']}', which the ComfyUI host does not know",
                           f"use a model whose prediction_type is one of {', '.join(PREDICTIONS)}")
    return PREDICTIONS[schedule["prediction_type"]]


def schedule_sampling(model, schedule: dict):
    """The model sampling for ``model`` (a ModelPatcher) on ``schedule``, for ``add_object_patch("model_sampling")``."""
    base = model.model.model_config.sampling_settings
    settings = sampling_settings(schedule, base)
    prediction = _prediction(schedule, model.get_model_object("model_sampling"))

    class ScheduleSampling(comfy.model_sampling.ModelSamplingDiscrete, prediction):
        pass

    return ScheduleSampling(SimpleNamespace(sampling_settings=settings))
