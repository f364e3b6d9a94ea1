"""Generation, independent of the host that runs the networks.

``settings`` (what a generation can be asked for, declared once), ``guidance`` (the guidance branches and the
steps around them), ``compositing`` (region mouth and the photo pasted back), ``restyle``, ``timing``, and ``loop``:
the one clip loop that the diffusers pipeline (pipeline.py) and the ComfyUI Sampler (comfyui/sampling.py) both drive.
Nothing is imported here, so that reading the settings (for --help) loads no torch.
"""
