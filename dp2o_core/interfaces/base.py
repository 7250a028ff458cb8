"""What every implementation — backbone, reward, selector, weighting, dataset, degradation —
has in common."""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from dp2o_core.options import PluginOptions

if TYPE_CHECKING:
    from dp2o_core.preflight import Check


class Implementation(ABC):  # noqa: B024 - abstract methods live in the interfaces
    """Base of the seven interfaces (:data:`dp2o_core.interfaces.INTERFACES`).

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

    @classmethod
    def readiness(cls, options: Any) -> Sequence[Check]:
        """What this implementation needs to run with ``options`` (weight files, cached models,
        Python packages) and whether each is there (:class:`~dp2o_core.preflight.Check`).

        Called before any stage works, so it must be cheap: look for files, import modules,
        never load a network. The default needs nothing.
        """
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"
