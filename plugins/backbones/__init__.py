"""Built-in backbones: SR generators that dp2o samples and preference-tunes."""

from dp2o_plugins.backbones.sd2_controlnet import Sd2ControlNetBackbone

from dp2o_core import hookimpl


@hookimpl
def register_backbones(register):
    """Register ``sd2-controlnet`` (alias ``sd2``)."""
    register(Sd2ControlNetBackbone, aliases=("sd2",))
