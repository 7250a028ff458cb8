"""A stand-in stage for store tests, run as its own process: ``python stage_script.py RUN N SLEEP [TAG]``.

It writes N groups into the ``data`` stage (rows of a ``values`` table and one file each),
sleeping between groups so a test can kill it part-way. ``RANK``/``WORLD_SIZE`` in the
environment make it one of several processes, as under ``accelerate launch``; ``SHARD=K/N``
makes it shard job K of N (``--shard K/N``).
"""

from __future__ import annotations

import os
import sys
import time

from dp2o_core.atomic import write_text_atomic
from dp2o_core.store import ProcessInfo, RunStore
from dp2o_core.store.sharding import Shard


def main() -> None:
    run, count, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    tag = sys.argv[4] if len(sys.argv) > 4 else "a"
    store = RunStore(run)
    groups = [f"img/{i:04d}" for i in range(count)]
    shard = Shard.parse(os.environ["SHARD"]) if os.environ.get("SHARD") else None
    process = ProcessInfo.detect().with_shard(shard)
    with store.open_stage(
        "data", config={"tag": tag}, group_ids=groups, process=process, flush_every=3, wait_timeout=60
    ) as writer:
        for group in writer.todo:
            time.sleep(pause)
            path = store.group_path("data", "files", group, suffix=".txt")
            write_text_atomic(path, f"{group} {tag}\n")
            number = int(group.split("/")[1])
            writer.add_group(
                group,
                values=[{"k": k, "value": number * 10 + k, "file": store.relative(path)} for k in range(2)],
            )


if __name__ == "__main__":
    main()
