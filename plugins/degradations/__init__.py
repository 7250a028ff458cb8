"""Built-in degradations: the first-order Real-ESRGAN pipeline and plain bicubic."""

from dp2o_plugins.degradations.bicubic import BicubicDegradation
from dp2o_plugins.degradations.realesrgan import RealEsrganDegradation

from dp2o_core import hookimpl


@hookimpl
def register_degradations(register):
    """Register ``realesrgan`` and ``bicubic``."""
    register(RealEsrganDegradation)
    register(BicubicDegradation)
