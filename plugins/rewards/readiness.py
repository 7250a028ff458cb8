"""What a pyiqa metric needs before it can score, found without building it.

Three kinds of requirement, each checked cheaply:

* the Python packages its pyiqa code imports (the metric's module is imported, which is
  where a missing package shows — Q-Align's ``icecream``);
* pyiqa's own weight file (``default_model_urls`` of the metric's module; looked for in the
  weights folders and pyiqa's cache);
* the backbone weights the network is built on (torchvision, timm on the Hugging Face hub,
  OpenAI CLIP files, a Hugging Face model): listed below for the paper's metrics, whose
  networks dp2o knows; other metrics are checked for their packages and pyiqa's file only.

A file that is missing is a problem only when it cannot be downloaded (offline): online it is
fetched on first use, as pyiqa does.
"""

from __future__ import annotations

import os
from pathlib import Path

from dp2o_plugins.network import availability, cached_or_hub_check, remote_size
from dp2o_plugins.rewards.weights import WEIGHTS_ENV, weights_dirs

from dp2o_core.preflight import Check

#: The key of pyiqa's ``default_model_urls`` each metric loads (where the options alone do not say).
PYIQA_FILE_KEYS = {
    "lpips": "0.1_alex",
    "lpips-vgg": "0.1_vgg",
    "topiq_fr": "cfanet_fr_kadid_res50",
    "topiq_nr": "cfanet_nr_koniq_res50",
    "maniqa": "koniq",
    "musiq": "koniq10k",
    "clipiqa+": "clipiqa+",
    "afine_fr": "afine",
    "afine_nr": "afine",
    "niqe": "niqe",
    "nima": "inception_resnet_v2-ava",
}

#: The backbone weights of the paper's metrics: (kind, name). torchvision: a weights enum;
#: timm: a model name (its pretrained weights live on the Hugging Face hub); pyiqa-swin: a Swin
#: configuration of pyiqa's own (TOPIQ-IAA's), downloaded from its URL; clip / afine-clip:
#: OpenAI CLIP files as pyiqa's two CLIP loaders fetch them; hub: a Hugging Face model.
BACKBONES: dict[str, list[tuple[str, str]]] = {
    "lpips": [("torchvision", "AlexNet_Weights.IMAGENET1K_V1")],
    "topiq_fr": [("timm", "resnet50")],
    "topiq_nr": [("timm", "resnet50")],
    "maniqa": [("timm", "vit_base_patch8_224")],
    "clipiqa+": [("clip", "RN50")],
    "afine_fr": [("afine-clip", "ViT-B/32")],
    "afine_nr": [("afine-clip", "ViT-B/32")],
    "qalign": [("hub", "q-future/one-align")],
    "nima": [("timm", "inception_resnet_v2")],
    "topiq_iaa": [("pyiqa-swin", "swin_base_patch4_window12_384")],
}


def metric_checks(
    metric: str,
    config: dict,
    weights: Path | None,
    weights_dir: Path | None,
    who: str,
    python: Path | None = None,
) -> list[Check]:
    """Every requirement of pyiqa metric ``metric`` (``config``: its pyiqa configuration).

    With ``python`` (the metric runs in a worker of that interpreter) its packages are that
    interpreter's, checked there; the weight files are looked for on this machine as usual.
    """
    arch = str(config.get("metric_opts", {}).get("type", ""))
    checks: list[Check] = []
    if python is not None:
        checks.append(interpreter_check(who, Path(python), metric))
        module = _arch_module_quietly(arch)
    else:
        module, problem = _import_arch(arch, who)
        if problem is not None:
            return [problem]
        incompatible = INCOMPATIBILITIES.get(metric, lambda: None)()
        if incompatible is not None:
            checks.append(
                Check(
                    who,
                    f"pyiqa's {arch} code in this environment",
                    "missing",
                    problem=incompatible,
                    fix=f"run it in its own environment: pythons=[{metric}=/path/to/venv/bin/python] on "
                    f"the hybrid reward, or python=… on pyiqa:metric={metric} (docs/rewards.md)",
                )
            )
    folders = weights_dirs(weights_dir)
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_file():
            checks.append(Check(who, f"weight file {path}", "present"))
        else:
            checks.append(
                Check(who, f"weight file {path}", "missing", problem="does not exist (option weights)")
            )
    else:
        url = _pyiqa_file_url(module, metric, config)
        if url is not None:
            where = f"pyiqa's cache {_pyiqa_cache()}" + (
                f" or {folders[0]}" if folders else f" or a folder named by {WEIGHTS_ENV} (or weights_dir=)"
            )
            checks.append(_file_check(who, url, [*folders, _pyiqa_cache()], where))
    for kind, name in BACKBONES.get(metric, []):
        checks.append(_backbone_check(who, kind, name, folders))
    return checks


def _qalign_problem() -> str | None:
    """Q-Align's mPLUG-Owl2 code calls ``invert_attention_mask``, a method transformers 5
    removed from its models: it loads, then fails on its first image."""
    import transformers
    from pyiqa.archs.q_align.visual_encoder import MplugOwlVisualAbstractorModel

    if hasattr(MplugOwlVisualAbstractorModel, "invert_attention_mask"):
        return None
    return (
        f"it calls invert_attention_mask, which transformers {transformers.__version__} (dp2o's) no longer "
        "has: it would load and then fail on its first image"
    )


#: Metrics whose pyiqa code imports here but cannot run with these package versions: metric →
#: a probe that returns the problem (None when it runs). tests/test_paper_metrics.py keeps each
#: probe honest by running the metric.
INCOMPATIBILITIES = {"qalign": _qalign_problem}


#: What Q-Align's worker needs besides dp2o's own environment, installed with ``pip install
#: --no-deps --target FOLDER`` and put first on the worker's path (docs/rewards.md): transformers 4.x
#: with the hub client and tokenizers it accepts, and icecream, which pyiqa's mPLUG-Owl2 code imports.
#: tests/test_qalign_worker.py builds exactly this and scores through it.
QALIGN_WORKER_PACKAGES = (
    "transformers==4.57.6", "huggingface-hub==0.36.2", "tokenizers==0.22.2",
    "icecream==2.2.0", "executing==2.3.0", "asttokens==3.0.2", "colorama==0.4.6",
)  # fmt: skip


#: Metrics whose pyiqa code needs other package versions than dp2o's, as a worker interpreter
#: must have them: metric → (distribution, highest major version that works, why).
WORKER_NEEDS = {
    "qalign": (
        "transformers",
        4,
        "Q-Align's mPLUG-Owl2 code calls invert_attention_mask, gone in transformers 5",
    ),
}


def interpreter_check(who: str, python: Path, metric: str | None = None) -> Check:
    """Whether ``python`` runs and can import pyiqa and torch (found, not imported: seconds), and
    has the package versions ``metric`` needs there (:data:`WORKER_NEEDS`, read from the
    installed distributions' metadata, nothing imported)."""
    import subprocess

    need = WORKER_NEEDS.get(metric or "")
    item = f"interpreter {python} with pyiqa and torch" + (f" and {need[0]} {need[1]}.x" if need else "")
    probe = (
        "import importlib.util as u, importlib.metadata as m, sys\n"
        "if not (u.find_spec('pyiqa') and u.find_spec('torch')): sys.exit(3)\n"
        "name = sys.argv[1]\n"
        "try: print(m.version(name) if name else '')\n"
        "except m.PackageNotFoundError: print('none')\n"
    )
    try:
        done = subprocess.run(
            [str(python), "-c", probe, need[0] if need else ""], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return Check(who, item, "missing", problem=f"cannot run it ({error})", fix="check the python option")
    if done.returncode != 0:
        return Check(
            who, item, "missing", problem="pyiqa or torch is not installed there",
            fix=f"{python} -m pip install pyiqa torch (docs/rewards.md: a metric in its own environment)",
        )  # fmt: skip
    if need:
        found = done.stdout.strip() or "none"
        major = found.split(".", 1)[0]
        if not major.isdigit() or int(major) > need[1]:
            return Check(
                who, item, "missing",
                problem=f"{need[0]} there is {found}: {need[2]}",
                fix=f"{python} -m pip install '{need[0]}<{need[1] + 1}' (docs/rewards.md)",
            )  # fmt: skip
    return Check(who, item, "present")


def _arch_module_quietly(arch: str):
    """The metric's pyiqa module in this environment when it imports, else None (its file is
    still looked for by name through ``PYIQA_FILE_KEYS`` where known)."""
    try:
        module, _ = _import_arch(arch, "")
        return module
    except Exception:  # noqa: BLE001 - the worker's environment is the one that must import it
        return None


def package_check(who: str, distribution: str, module: str) -> Check:
    """Whether the package that provides ``module`` is installed."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return Check(who, f"Python package {distribution}", "present")
    return Check(
        who,
        f"Python package {distribution}",
        "missing",
        problem="not installed",
        fix=f"pip install {distribution}",
    )


# -- the pieces ----------------------------------------------------------------------------------
def _import_arch(arch: str, who: str):
    """The metric's pyiqa module, or a Check naming the package its import is missing."""
    import importlib

    try:
        archs = importlib.import_module("pyiqa.archs")
        lazy_import = getattr(archs, "_lazy_import_arch", None)
        if lazy_import is not None:
            lazy_import(arch)
        registry = importlib.import_module("pyiqa.utils.registry").ARCH_REGISTRY
        cls = registry.get(arch)
        return importlib.import_module(cls.__module__), None
    except ModuleNotFoundError as error:
        name = (error.name or "?").split(".")[0]
        return None, Check(
            who,
            f"Python package {name}",
            "missing",
            problem=f"pyiqa's {arch} code imports {error.name!r}, which is not installed",
            fix=f"pip install {name}, or run the metric in another environment (docs/rewards.md)",
        )
    except Exception as error:  # noqa: BLE001 - any import failure means the metric cannot run here
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return None, Check(
            who,
            f"pyiqa's {arch} code",
            "missing",
            problem=f"does not import in this environment ({type(error).__name__}: {text[:160]})",
            fix="run the metric in another environment with the versions it needs (docs/rewards.md)",
        )


def _pyiqa_file_url(module, metric: str, config: dict) -> str | None:
    """The URL of pyiqa's own weight file for this metric, when it has one."""
    if module is None:
        return None
    urls = getattr(module, "default_model_urls", None) or {}
    key = PYIQA_FILE_KEYS.get(metric)
    if key is None:
        options = config.get("metric_opts", {})
        key = next((str(v) for v in options.values() if isinstance(v, str) and v in urls), None)
    return urls.get(key) if key is not None else None


def _pyiqa_cache() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "pyiqa"


def _file_check(who: str, url: str, places: list[Path], where: str) -> Check:
    """A weight file that may be in any of ``places`` (looked up by its name)."""
    filename = url.rsplit("/", 1)[-1]
    return availability(
        who,
        f"weight file {filename}",
        found=any((place / filename).is_file() for place in places),
        source=url,
        size=lambda: remote_size(url),
        problem="not on this machine and the internet is unreachable",
        fix=f"download it from the source into {where}",
    )


def _backbone_check(who: str, kind: str, name: str, folders: list[Path]) -> Check:
    import torch

    hub_dir = Path(torch.hub.get_dir())
    if kind == "torchvision":
        import torchvision

        enum_name, member = name.split(".")
        url = getattr(torchvision.models, enum_name)[member].url
        where = f"torchvision's cache {hub_dir / 'checkpoints'}"
        return _file_check(who, url, [*folders, hub_dir / "checkpoints"], where)
    if kind in ("clip", "afine-clip"):
        module = "pyiqa.archs.clip_model" if kind == "clip" else "pyiqa.archs.afineclip_model"
        import importlib

        url = importlib.import_module(module)._MODELS[name]
        place = hub_dir / "clip" if kind == "clip" else Path(os.path.expanduser("~/.cache/clip"))
        return _file_check(who, url, [place], str(place))
    if kind == "pyiqa-swin":  # pyiqa's own Swin configurations download from a URL into torch's cache
        from pyiqa.archs.topiq_swin import default_cfgs

        url = default_cfgs[name]["url"]
        return _file_check(
            who, url, [*folders, hub_dir / "checkpoints"], f"torch's cache {hub_dir / 'checkpoints'}"
        )
    if kind == "timm":
        import timm

        repo = timm.models.get_pretrained_cfg(name).hf_hub_id
        return cached_or_hub_check(who, repo, ("model.safetensors", "pytorch_model.bin"))
    return cached_or_hub_check(who, name, ("config.json",))
