"""``portraittalk eval``'s settings: its own, and the generation settings every generated clip is made with."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..generation.settings import GenerationSettings


def eval_generation() -> GenerationSettings:
    """generate's defaults, with fewer steps: the default run measures the demo model in about 15 minutes on 2 CPU
    cores."""
    return GenerationSettings(steps=10)


@dataclass
class EvalSettings:
    weights: str | None = None      # None: the embedded demo model
    data: str | None = None         # a synth dataset folder (val/, test/); None: made in out/synth
    out: str = "runs/eval"
    clips: int = 12                 # test clips generated (the demo recipe's test split has 36, 6 identities)
    prompt_clips: int = 12          # test clips generated again with a recoloured background prompt
    seconds: float | None = 3.0     # evaluate the first seconds of each clip (None: all of it)
    prompt_seconds: float = 1.0     # audio used for the prompt test
    # The lip sync and identity clips follow the ground truth's head motion (head_motion.py, from its exact brow and
    # nose landmarks: the mouth and jaw stay the audio's to move), as a driving video would give it. Otherwise the
    # head moves as generation.head_motion_from_speech says.
    head_motion: bool = False
    prompt_palette: bool = True     # the prompt clips' photos also restyled with every other background colour
    split: str = "test"             # "val" to tune generation settings without touching the test split
    # How every clip is generated; its prompt, frame rate and restyle are the test's own. The seed also seeds the
    # landmark regressor that measures.
    generation: GenerationSettings = field(default_factory=eval_generation)
    regressor_steps: int = 1500
    workers: int = 1


def as_record(settings: EvalSettings) -> dict:
    """The settings as the report records them: eval's own and the generation's, in one flat dict."""
    own = {k: v for k, v in asdict(settings).items() if k != "generation"}
    return {**own, **asdict(settings.generation)}
