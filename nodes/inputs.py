"""Node inputs made from the generation settings' declarations (portraittalk_core/generation/settings.py): the same
defaults, ranges and help as the ``portraittalk`` command's options, as widgets with tooltips."""

from comfy_api.latest import io

from ..portraittalk_core.comfyui.region import MODEL_DEFAULT
from ..portraittalk_core.generation import settings as generation_settings


def _tooltip(help_text: str) -> str:
    return help_text[0].upper() + help_text[1:] + "."


def setting_input(name: str, **options) -> io.Input:
    """The widget of the generation setting ``name``. A setting whose default is the model's shows its ``unset``
    value (and the range grows to hold it) or its ``shown`` one; ``options`` adds widget options
    (e.g. control_after_generate) or, for a number, a default or tooltip of the node's own."""
    declared = generation_settings.declared(name)
    kind = generation_settings.value_type(name)
    default = generation_settings.default(name)
    tooltip = _tooltip(declared.help)
    own_default, own_tooltip = options.pop("default", None), options.pop("tooltip", None)
    if kind is bool:
        return io.Boolean.Input(name, default=default, tooltip=tooltip, **options)
    if kind is str and declared.choices:
        return io.Combo.Input(name, options=[MODEL_DEFAULT, *declared.choices], default=MODEL_DEFAULT,
                              tooltip=f"{tooltip} {MODEL_DEFAULT}: the model's own.", **options)
    low = declared.low
    if default is None:
        default = declared.shown if declared.unset is None else declared.unset
        low = low if declared.unset is None else declared.unset
        tooltip += (f" {declared.unset} = the model's default." if declared.unset is not None
                    else f" This input starts at {declared.shown}, which suits most models.")
    default = default if own_default is None else own_default
    tooltip = own_tooltip or tooltip
    if kind is int:
        return io.Int.Input(name, default=default, min=low, max=declared.high, tooltip=tooltip, **options)
    return io.Float.Input(name, default=default, min=low, max=declared.high, step=declared.step, tooltip=tooltip,
                          **options)


def setting_value(name: str, value):
    """A node input's value as a generation setting: the ``unset`` value or "model default" become None."""
    declared = generation_settings.declared(name)
    return None if value == MODEL_DEFAULT or (declared.unset is not None and value == declared.unset) else value


def strength_inputs() -> list:
    """The weights of PortraitTalk's added modules, shared by the Sampler and Apply PortraitTalk."""
    return [
        setting_input("identity_strength"),
        setting_input("audio_strength"),
        setting_input("motion_scale"),
        setting_input("structure_strength"),
    ]
