"""``dp2o`` as its own process that SIGKILLs itself when training reaches a given step:
``python train_kill_script.py STEP dp2o-arguments…`` (STEP counts from 1; the process dies
before doing that step, after everything before it — checkpoints included — was written).
With ``DP2O_KILL_IN`` set, only a training whose folder path contains that text dies
(``rounds/2``: round 2 of a run of several rounds)."""

from __future__ import annotations

import os
import signal
import sys

from dp2o_core.training import trainer

KILL_AT = int(sys.argv[1])
KILL_IN = os.environ.get("DP2O_KILL_IN", "")
_step = trainer.Trainer._step


def _step_or_die(self, step, *args, **kwargs):
    if step + 1 == KILL_AT and KILL_IN in self.directory.as_posix():
        os.kill(os.getpid(), signal.SIGKILL)
    return _step(self, step, *args, **kwargs)


trainer.Trainer._step = _step_or_die

if __name__ == "__main__":
    from dp2o_cli.app import run

    sys.exit(run(sys.argv[2:]))
