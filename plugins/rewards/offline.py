"""Parameters of classical metrics that ship inside Python packages, for offline use.

NIQE needs a multivariate Gaussian fitted to pristine images. pyiqa downloads it; the
``iqa-torch`` package (Apache-2.0) ships the same kind of model as
``iqa/niqe/niqe_pris_params.npz``. We rewrite it once as the ``.mat`` file pyiqa reads
(keys ``mu_prisparam``, ``cov_prisparam``) in dp2o's cache folder.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from dp2o_core.atomic import atomic_path
from dp2o_core.cache import cache_dir
from dp2o_core.errors import Dp2oError


def niqe_pristine_params() -> Path:
    """A ``.mat`` file with NIQE's pristine model, made from the iqa-torch package."""
    import numpy as np
    import scipy.io

    try:
        source = Path(str(metadata.distribution("iqa-torch").locate_file("iqa/niqe/niqe_pris_params.npz")))
    except metadata.PackageNotFoundError:
        source = None
    if source is None or not source.is_file():
        raise Dp2oError("NIQE's offline parameters come from the iqa-torch package: pip install iqa-torch")
    target = cache_dir() / "niqe_pris_params_iqa_torch.mat"
    if not target.is_file():
        params = np.load(source)
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as handle:
                scipy.io.savemat(
                    handle,
                    {"mu_prisparam": params["mu_pris_param"], "cov_prisparam": params["cov_pris_param"]},
                )
    return target
