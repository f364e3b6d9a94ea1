"""The ComfyUI host: PortraitTalk's modules in the user's own MODEL, sampled with ComfyUI's samplers.

- ``blocks``: where diffusers' UNet layers sit in ComfyUI's block numbering (written once);
- ``patches``: the attention paths as ComfyUI attention patches (imports no ComfyUI: tested without it);
- ``host``: the temporal modules and the structure residual in the MODEL, and the patched clone;
- ``model``: a MODEL made ready for one generation (identity tokens, reference bank, patches);
- ``sampling``: the ComfyUI driver of the clip loop (generation/loop.py), with its guider;
- ``region``: region "mouth" as ComfyUI latents, masks and IMAGE frames;
- ``backbone``: a small diffusers backbone as a native MODEL and VAE; ``bundle``: a loaded PortraitTalk model.

Every module but ``blocks`` and ``patches`` imports ComfyUI, so only the nodes import them.
"""
