"""The Prompter interface: the text prompt each LR input is sampled with."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from dp2o_core.errors import Dp2oError
from dp2o_core.interfaces.base import Implementation

if TYPE_CHECKING:
    import numpy as np

    from dp2o_core.interfaces.dataset import DataSample


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


def prompts_for(prompter: Prompter | None, lr: Sequence[np.ndarray], given: Sequence[str | None]) -> list:
    """The prompt of each LR image: ``prompter``'s (one call for them all), or ``given`` (the
    data set's own) without a prompter. A prompter that answers with another count, or with
    something other than text, is named."""
    if prompter is None or not lr:
        return list(given)
    texts = list(prompter.prompts(lr, given))
    if len(texts) != len(lr) or not all(isinstance(text, str) for text in texts):
        raise Dp2oError(
            f"prompter {prompter.name!r} gave {len(texts)} prompts for {len(lr)} images (one string "
            "per image expected): fix or replace the prompter"
        )
    return texts


def sample_prompts(prompter: Prompter | None, samples: Sequence[DataSample]) -> list:
    """:func:`prompts_for` the loaded samples of a data set: their LR images and own prompts."""
    return prompts_for(prompter, [s.lr for s in samples], [s.item.prompt for s in samples])
