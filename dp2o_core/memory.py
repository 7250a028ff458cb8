"""Will sampling an input fit the device? Checked from the image's header, before decoding it.

A 78 KB PNG may declare 9000×9000 pixels: decoding it is 243 MB, but upscaling it ×4 needs
terabytes. :func:`refuse_too_large` compares the backbone's estimate
(:meth:`~dp2o_core.interfaces.Backbone.sampling_memory`) with the device's free memory and
names the file, so such an input is refused (or skipped) in a second instead of exhausting
the machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dp2o_core.imageio import BadImageError, image_size
from dp2o_core.preflight import format_size


def free_memory(device: str) -> int | None:
    """Bytes of memory free on ``device`` (a CUDA device's free memory; for the CPU the
    system's available memory, or the cgroup's headroom when that is smaller), None when
    unknown."""
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        return int(torch.cuda.mem_get_info(index)[0])
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def refuse_too_large(path: Path, backbone: Any, count: int, free: int | None = None) -> None:
    """Raise :class:`BadImageError` naming ``path`` when sampling ``count`` candidates of it
    with ``backbone`` is estimated to need more memory than its device has free (``free``
    overrides the measured figure). Reads only the image's header."""
    width, height = image_size(path)
    need = backbone.sampling_memory(height, width, count)
    free = free_memory(backbone.sampling_device) if free is None else free
    if free is not None and need > free:
        scale = backbone.scale
        output = f"{width * scale}×{height * scale} px"
        raise BadImageError(
            path,
            f"{width}×{height} px: sampling {count} candidate(s) ×{scale} ({output}) "
            f"needs about {format_size(need)}, more than the {format_size(free)} free on "
            f"{backbone.sampling_device}; crop it into smaller pieces first",
        )
