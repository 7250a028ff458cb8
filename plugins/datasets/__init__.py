"""Built-in data sets: a folder of HR images, paired LR/HR folders, a folder of LR images."""

from dp2o_plugins.datasets.folders import HrFolderDataset, LrFolderDataset, PairedFolderDataset
from dp2o_plugins.datasets.photos import PhotosDataset

from dp2o_core import hookimpl


@hookimpl
def register_datasets(register):
    """Register ``hr-folder`` (``hr``), ``paired-folder`` (``paired``), ``lr-folder`` (``lr``)
    and ``photos`` (scikit-image's bundled photographs)."""
    register(HrFolderDataset, aliases=("hr",))
    register(PairedFolderDataset, aliases=("paired",))
    register(LrFolderDataset, aliases=("lr",))
    register(PhotosDataset)
