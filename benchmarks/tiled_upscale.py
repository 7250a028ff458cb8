"""Memory and time of ``dp2o upscale`` against the output's size: tiled (the default) vs whole.

For tiny-sr (the bundled model) and a tiny Stable Diffusion 2 + ControlNet (random weights in
the hub layout, as the tests build it), each output size is upscaled by ``dp2o upscale`` in a
fresh process, once with the backbone's default tiles and once with ``tile=0`` (the whole
image at once, as before tiling), interleaved over ``--rounds`` rounds; each process reports
its peak resident memory. Printed: peak memory and seconds per way (medians), their ratios.
An untiled run whose estimated memory exceeds ``--max-gb`` is not started (shown as
"skipped"): attention over a whole large latent can exceed the machine.

    python benchmarks/tiled_upscale.py [--sizes 512x512,1024x1024,2048x1536] [--rounds 2]
        [--only tiny-sr|sd2] [--max-gb 12] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

#: Run in each fresh process: upscale, then print the peak resident memory in bytes.
CHILD = """
import resource, sys
from dp2o_cli.app import run
code = run(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("PEAK", peak, "CODE", code)
"""


def upscale(source: Path, target: Path, backbone: str) -> tuple[float, int]:
    """Seconds and peak bytes of one ``dp2o upscale`` in a fresh process."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "upscale", str(source), str(target), "--backbone", backbone],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("PEAK")), None)
    if done.returncode != 0 or line is None or not line.endswith("CODE 0"):
        raise SystemExit(f"dp2o upscale --backbone {backbone} failed:\n{done.stderr[-3000:]}")
    return seconds, int(line.split()[1])


def estimated_gb(backbone: str, height: int, width: int) -> float:
    """The backbone's own sampling-memory estimate for one candidate of an LR of this size."""
    from dp2o_core.registry import PluginManager
    from dp2o_core.specs import resolve_spec

    model = resolve_spec(PluginManager(), "backbone", backbone).build()
    return model.sampling_memory(height, width, 1) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512x512,1024x1024,2048x1536", help="Output sizes, WxH.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=["tiny-sr", "sd2"], default=None)
    parser.add_argument("--max-gb", type=float, default=12.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from images import photo
    from PIL import Image
    from tiny_models import save_tiny_sd

    work = Path(tempfile.mkdtemp(prefix="dp2o-tiled-"))
    backbones = {"tiny-sr": "tiny-sr:steps=2"}
    if args.only in (None, "sd2"):
        model = save_tiny_sd(work / "sd")
        backbones["sd2"] = f"sd2:model={model},steps=2,device=cpu,geometry=exact,controlnet=new"
    if args.only == "sd2":
        backbones.pop("tiny-sr")
    results = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.lower().split("x"))
        lr = work / f"lr-{width}x{height}.png"
        Image.fromarray(photo("astronaut", max(width, height) // 4)[: height // 4, : width // 4]).save(lr)
        for name, spec in backbones.items():
            ways = {"tiled": spec, "whole": f"{spec},tile=0"}
            need = estimated_gb(ways["whole"], height // 4, width // 4)
            if need > args.max_gb:
                ways.pop("whole")
            runs: dict[str, list[tuple[float, int]]] = {way: [] for way in ways}
            for round_index in range(args.rounds):
                order = list(ways) if round_index % 2 == 0 else list(reversed(ways))
                for way in order:
                    runs[way].append(upscale(lr, work / f"out-{name}-{way}.png", ways[way]))
            row = {"backbone": name, "output": f"{width}x{height}"}
            for way, measured in runs.items():
                row[f"{way}_seconds"] = statistics.median(s for s, _ in measured)
                row[f"{way}_peak_gb"] = statistics.median(p for _, p in measured) / 1e9
            if "whole" not in runs:
                row["whole"] = f"skipped (estimated {need:.1f} GB > --max-gb)"
            results.append(row)
            if not args.json:
                whole = (
                    f"whole {row['whole_peak_gb']:.2f} GB {row['whole_seconds']:.1f} s "
                    f"(tiled/whole memory {row['tiled_peak_gb'] / row['whole_peak_gb']:.2f}×)"
                    if "whole_seconds" in row
                    else row["whole"]
                )
                print(
                    f"{name:8s} {width}×{height}: tiled {row['tiled_peak_gb']:.2f} GB "
                    f"{row['tiled_seconds']:.1f} s | {whole}",
                    flush=True,
                )
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
