"""``dp2o eval`` and ``dp2o upscale`` pack inputs of one size into one sampling call, as the
sample stage packs groups, and get the images they got one input at a time."""

from __future__ import annotations

import torch
from PIL import Image

from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec


class CountingBackbone:
    """A backbone wrapper that records how many LR images each sampling call got."""

    def __init__(self, backbone):
        self.backbone, self.calls = backbone, []

    def __getattr__(self, name):  # everything else is the backbone's
        return getattr(self.backbone, name)

    def sample(self, lr, seeds, prompts=None):
        self.calls.append(lr.shape[0])
        return self.backbone.sample(lr, seeds, prompts)


def sd2(folder, chunk):
    spec = f"sd2:model={folder},steps=2,device=cpu,geometry=exact,controlnet=new,color_fix=none"
    spec += f",chunk_size={chunk}"
    return resolve_spec(PluginManager(), "backbone", spec).build()


def test_evaluation_packs_inputs_and_keeps_their_samples(tiny_sd):
    from dp2o_core.evaluation import EvalInput, _sampled

    generator = torch.Generator().manual_seed(0)
    sizes = [(16, 16), (16, 16), (16, 16), (8, 16)]
    inputs = [
        EvalInput(f"in{i}", torch.rand(1, 3, h, w, generator=generator), None)
        for i, (h, w) in enumerate(sizes)
    ]
    packed, alone = CountingBackbone(sd2(tiny_sd, chunk=4)), CountingBackbone(sd2(tiny_sd, chunk=2))
    together = dict(_sampled(packed, inputs, num_samples=2, seed=0, seed_set=0))
    one_by_one = dict(_sampled(alone, inputs, num_samples=2, seed=0, seed_set=0))
    assert packed.calls == [2, 1, 1] and alone.calls == [1, 1, 1, 1]  # one size per call
    for item in inputs:
        assert torch.allclose(together[item], one_by_one[item], atol=1e-4)


def test_upscale_packs_a_folder_and_writes_what_each_input_gives_alone(dp2o_cli, tiny_sd, tmp_path):
    import numpy as np
    from dp2o_cli.upscale_cmd import plan_upscale, upscale_jobs

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a", 16), ("b", 16), ("c", 16), ("d", 8)):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    model = CountingBackbone(sd2(tiny_sd, chunk=8))
    written, skipped = upscale_jobs(
        model, plan_upscale(folder, tmp_path / "out", 1), [3], "error", lambda n: None
    )
    assert (written, skipped) == (4, []) and model.calls == [3, 1]
    spec = f"sd2:model={tiny_sd},steps=2,device=cpu,geometry=exact,controlnet=new,color_fix=none"
    for name in "abcd":
        alone = tmp_path / f"{name}-alone.png"
        assert (
            dp2o_cli(
                "upscale", str(folder / f"{name}.png"), str(alone), "--backbone", spec, "--seed", "3"
            ).exit_code
            == 0
        )
        ours = np.asarray(Image.open(tmp_path / "out" / f"{name}.png")).astype(int)
        assert np.abs(ours - np.asarray(Image.open(alone)).astype(int)).max() <= 1
