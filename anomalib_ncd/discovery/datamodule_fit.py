"""Training the discovery model on an anomalib datamodule, as anomalib trains its own models.

``anomalib train --model anomalib_ncd.AnomalyNCD --model.detector <checkpoint> --data <datamodule>``
(or ``Engine(...).train(AnomalyNCD(detector=...), datamodule=...)``) needs no region folder: in the
fit's ``setup`` the model runs the detector over the datamodule's **test split** (anomalib's
datamodules keep their anomalies there; the training split is the detector's normal images),
binarises the raw maps with MEBin, cuts anomaly-centred regions and caches their views, the same
chain as ``anomalib-ncd discover``. anomalib's ``test`` that follows classifies the same images
through :meth:`~anomalib_ncd.AnomalyNCD.predict_step` and, where the datamodule knows each image's
defect type, logs image NMI / ARI / matched accuracy.

Lightning takes the training batches from a datamodule whenever one is given, and a datamodule's
batches are images, not region views. For the fit, the datamodule's ``train_dataloader`` is therefore
the model's (an attribute on that instance, which Lightning's hook lookup finds first), and it is
removed again at the fit's teardown: the datamodule is as it was afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from anomalib_ncd.data.anomalib_adapters import defect_type_lookup

if TYPE_CHECKING:
    from lightning.pytorch import LightningDataModule
    from torch.utils.data import DataLoader

HOOK = "train_dataloader"


def swap_in_train_loader(datamodule: LightningDataModule, loader: Callable[[], DataLoader]) -> None:
    """Make ``datamodule.train_dataloader()`` return the model's loader until :func:`swap_back_train_loader`.

    Args:
        datamodule: the datamodule of the running fit.
        loader: the model's ``train_dataloader``.
    """
    vars(datamodule)[HOOK] = loader


def swap_back_train_loader(datamodule: LightningDataModule) -> None:
    """Give the datamodule its own ``train_dataloader`` back (a no-op when it was not swapped).

    Args:
        datamodule: the datamodule of the finished fit.
    """
    vars(datamodule).pop(HOOK, None)


def defect_types_of(datamodule: Any) -> dict[str, str]:
    """Each test image's defect type, where the datamodule knows them.

    Our datamodules (``MTD``, ``SyntheticDefects``) have a sample table with a ``defect_type``
    column; anomalib's MVTec-layout datamodules (``MVTecAD``, ``Visa``...) name each image's folder
    in the ``label`` column of their samples. ``Folder`` only says normal or abnormal: no types.

    Args:
        datamodule: an anomalib datamodule, set up.

    Returns:
        ``{image_path: defect_type}``; empty when the datamodule has no defect types.
    """
    sample_table = getattr(datamodule, "sample_table", None)
    if callable(sample_table):
        table = sample_table()
        if "defect_type" in table:
            return defect_type_lookup(table)
    samples = getattr(getattr(datamodule, "test_data", None), "samples", None)
    if samples is None or "label" not in samples or "image_path" not in samples:
        return {}
    from anomalib.data.utils import DirType

    if any(isinstance(label, DirType) for label in samples["label"]):  # Folder: which folder, not which defect
        return {}
    return dict(zip(samples["image_path"].astype(str), samples["label"].astype(str), strict=True))
