"""The Prompter interface: the text prompt each LR input is sampled with."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from dp2o_core.interfaces.base import Implementation

if TYPE_CHECKING:
    import numpy as np


class Prompter(Implementation):
    """Writes the prompt of every LR input, once per input, in the data stage (``--prompter``).

    The run stores the text with the input, so sampling, training, evaluation and a resumed run
    all read the same prompt, and the prompter's choice is part of the data stage's
    fingerprint. ``lr`` holds the LR images as the run stores them (H×W×3 ``uint8`` arrays);
    ``given`` the data set's own prompt of each (a sidecar ``.txt`` or prompts file) or None.
    Return one string per image ("" for none). Heavy models should load on first use and
    state their weights in :meth:`readiness`, so that the preflight finds them missing before
    any long stage.

    Example::

        from dp2o_core import Prompter, hookimpl

        class BrightnessPrompter(Prompter):
            \"\"\"'bright photo' or 'dark photo', by the mean grey level.\"\"\"

            name = "brightness"

            def prompts(self, lr, given):
                return ["bright photo" if image.mean() > 127 else "dark photo" for image in lr]

        @hookimpl
        def register_prompters(register):
            register(BrightnessPrompter)
    """

    kind: ClassVar[str] = "prompter"

    @abstractmethod
    def prompts(self, lr: Sequence[np.ndarray], given: Sequence[str | None]) -> list[str]:
        """One prompt per LR image."""
