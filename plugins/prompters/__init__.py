"""Built-in prompters: the data set's own prompt files (the default), a fixed text, RAM + DAPE tags,
and a Hugging Face image-to-text model's text."""

from __future__ import annotations

from collections.abc import Sequence

from dp2o_plugins.prompters.caption import CaptionPrompter
from dp2o_plugins.prompters.ram_dape import RamDapePrompter
from pydantic import Field

from dp2o_core import PluginOptions, Prompter, hookimpl


class SidecarPrompter(Prompter):
    """The data set's own prompts: a ``.txt`` beside an image or a prompts file (else none)."""

    name = "sidecar"

    def prompts(self, lr: Sequence, given: Sequence[str | None]) -> list[str]:
        """``given`` as it is, "" where an input has none."""
        return [text or "" for text in given]


class FixedPromptOptions(PluginOptions):
    """The text every input gets."""

    text: str = Field(..., description="The prompt of every input, e.g. 'a sharp, detailed photo'.")
    keep_sidecar: bool = Field(
        False, description="Keep the data set's own prompt where an input has one (the text elsewhere)."
    )


class FixedPrompter(Prompter):
    """One text for every input (or for every input without a prompt of its own)."""

    name = "fixed"
    Options = FixedPromptOptions

    def prompts(self, lr: Sequence, given: Sequence[str | None]) -> list[str]:
        """The option's text, or the given prompt first with ``keep_sidecar``."""
        keep = self.options.keep_sidecar
        return [text if keep and text else self.options.text for text in given]


@hookimpl
def register_prompters(register) -> None:
    register(SidecarPrompter)
    register(FixedPrompter)
    register(RamDapePrompter)
    register(CaptionPrompter)
