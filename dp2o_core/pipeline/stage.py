"""The :class:`Stage` base class: what the pipeline asks of every stage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from dp2o_core.pipeline.context import RunContext, StageRun
from dp2o_core.preflight import Check, component_checks
from dp2o_core.store.runstore import KNOWN_STAGES


class Stage:
    """One stage of the pipeline; subclasses fill in the hooks below."""

    name: ClassVar[str]
    #: what the stage's timing counts (images, candidates, pairs, steps, samples)
    unit: ClassVar[str] = "groups"
    #: True when process 0 does the stage alone (the others wait)
    main_only: ClassVar[bool] = False

    @property
    def upstream(self) -> tuple[str, ...]:
        """The stages whose outputs this one reads (their fingerprints enter this one's)."""
        return KNOWN_STAGES[self.name]

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        """The configuration keys of the components this stage needs."""
        return ()

    def kept(self, ctx: RunContext) -> str | None:
        """A reason to keep what the run has without checking it (None: check as usual)."""
        return None

    def config(self, ctx: RunContext) -> dict[str, Any]:
        """The configuration this stage's output depends on (its fingerprint is made from it)."""
        raise NotImplementedError

    def group_signatures(self, ctx: RunContext) -> Mapping[str, str] | None:
        """Per-group signatures that enter the fingerprint (a changed one redoes its group)."""
        return None

    def forced(self, ctx: RunContext) -> str | None:
        """A reason to run even when current (None: skip when current)."""
        return None

    def finished_work(self, store: Any) -> tuple[int, str]:
        """How much finished work this stage holds in ``store`` and what that number counts
        (what the finished-work guard says would be discarded): committed groups by default."""
        done = store.status(self.name).groups_done if store.record(self.name) is not None else 0
        return done, "finished group(s)"

    def checks(self, ctx: RunContext) -> list[Check]:
        """What this stage needs before it starts (the default: its components' readiness)."""
        return [check for key in self.components(ctx) for check in component_checks(ctx.component(key))]

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        """Do (the rest of) the stage's work in this process."""
        raise NotImplementedError
