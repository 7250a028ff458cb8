"""Built-in backbones: SR generators that dp2o samples and preference-tunes."""

from dp2o_plugins.backbones.flux_controlnet import FluxControlNetBackbone
from dp2o_plugins.backbones.ldm_sr import LdmSrBackbone
from dp2o_plugins.backbones.sd2_controlnet import Sd2ControlNetBackbone
from dp2o_plugins.backbones.sd_upscaler import SdUpscalerBackbone
from dp2o_plugins.backbones.tiny_sr import TinySrBackbone

from dp2o_core import hookimpl


@hookimpl
def register_backbones(register):
    """Register ``tiny-sr`` (the bundled default), ``sd2-controlnet`` (alias ``sd2``),
    ``flux-controlnet`` (alias ``flux``), ``sd-upscaler`` (alias ``sd-x4``) and ``ldm-sr``."""
    register(TinySrBackbone)
    register(Sd2ControlNetBackbone, aliases=("sd2",))
    register(FluxControlNetBackbone, aliases=("flux",))
    register(SdUpscalerBackbone, aliases=("sd-x4",))
    register(LdmSrBackbone)
