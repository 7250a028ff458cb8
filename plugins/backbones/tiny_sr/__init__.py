"""tiny-sr: the small pretrained SR diffusion model bundled with dp2o (see ``network`` and ``backbone``)."""

from dp2o_plugins.backbones.tiny_sr.backbone import TinySrBackbone

__all__ = ["TinySrBackbone"]
