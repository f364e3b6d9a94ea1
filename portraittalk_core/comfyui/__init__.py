"""The ComfyUI host: PortraitTalk's modules in the user's own MODEL, sampled with ComfyUI's samplers.

- ``blocks``: where diffusers' UNet layers sit in ComfyUI's block numbering (written once);
- ``patches``: the attention paths as ComfyUI attention patches (imports no ComfyUI: tested without it);
- ``layers``: the layers inserted into the UNet's blocks (temporal, Hallo's region audio) and the structure residual
  (imports no ComfyUI);
- ``hallo``: what a MODEL patched with a Hallo-layout model conditions on, and the pure parts of its clip loop
  (imports no ComfyUI);
- ``host``: those layers and patches in the MODEL, and the patched clone; ``model_sampling``: the model config's
  noise schedule as ComfyUI's model sampling;
- ``model``: a MODEL made ready for one generation (identity tokens, reference bank, patches);
- ``sampling``: the ComfyUI driver of the clip loop (generation/loop.py), with its guider; ``hallo_sampling``: the
  same loop for a Hallo-layout model, with ComfyUI's stock CFG guider;
- ``region``: region "mouth" as ComfyUI latents, masks and IMAGE frames;
- ``backbone``: a small diffusers backbone as a native MODEL and VAE; ``bundle``: a loaded PortraitTalk model.

Every module but ``blocks``, ``patches``, ``layers`` and ``hallo`` imports ComfyUI, so only the nodes import them.
"""
