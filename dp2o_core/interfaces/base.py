"""What every implementation — backbone, reward, selector, weighting, dataset, degradation —
has in common."""

from __future__ import annotations

from abc import ABC
from typing import Any, ClassVar

from dp2o_core.options import PluginOptions


class Implementation(ABC):  # noqa: B024 - abstract methods live in the interfaces
    """Base of the six interfaces (:data:`dp2o_core.interfaces.INTERFACES`).

    Subclasses set ``name`` (kebab-case, what users type), write a docstring whose first
    line ``dp2o plugins`` shows, and may nest an ``Options`` model. Instances are built
    with validated options; heavy imports (torch, diffusers, pyiqa) belong in
    ``__init__`` or the methods, never at module level, so that listing plugins stays fast.
    """

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    Options: ClassVar[type[PluginOptions]] = PluginOptions

    def __init__(self, options: PluginOptions | None = None) -> None:
        #: the validated options, an instance of this class's own ``Options`` (typed ``Any``
        #: here so that each implementation reads its own fields without a cast)
        self.options: Any = options if options is not None else type(self).Options()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"
