"""The hooks a dp2o plugin implements.

Each hook receives a ``register`` callback and calls it once per class it provides::

    from dp2o_core import hookimpl

    @hookimpl
    def register_selectors(register):
        register(MySelector)                    # users type MySelector.name
        register(MyOtherSelector, aliases=("o",))  # … or the short alias

``register(cls, aliases=())`` takes the class, not an instance: dp2o builds instances
only when a command needs one, with options validated by ``cls.Options``. Hooks run when
a plugin manager is created; they must be cheap (no torch import), so that
``dp2o --help`` and ``dp2o plugins`` stay fast.
"""

from __future__ import annotations

from typing import Protocol

import pluggy

PROJECT_NAME = "dp2o"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class Register(Protocol):
    """The callback every hook receives."""

    def __call__(self, cls: type, aliases: tuple[str, ...] = ()) -> None: ...


@hookspec
def register_backbones(register: Register) -> None:
    """Register Backbone subclasses: SR generators that can be sampled and tuned."""


@hookspec
def register_rewards(register: Register) -> None:
    """Register RewardModel subclasses: image-quality metrics and composite rewards."""


@hookspec
def register_selectors(register: Register) -> None:
    """Register PairSelector subclasses: rules that turn a group's rewards into pairs."""


@hookspec
def register_weightings(register: Register) -> None:
    """Register Weighting subclasses: per-pair weights over the whole data set."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register Dataset subclasses: sources of LR inputs and their HR references."""


@hookspec
def register_degradations(register: Register) -> None:
    """Register Degradation subclasses: ways to synthesise LR inputs from HR images."""


@hookspec
def register_prompters(register: Register) -> None:
    """Register Prompter subclasses: the text prompt of each LR input, written in the data stage."""
