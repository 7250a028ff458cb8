"""A plugin whose import fails, as a plugin with a missing dependency would."""

raise RuntimeError("dp2o-broken-plugin cannot be imported (this failure is deliberate)")
