"""Tests of the MEBin post-processor with real anomalib batch objects."""

import warnings

import numpy as np
import pytest
import torch
from anomalib.data import ImageBatch, InferenceBatch
from anomalib.post_processing import PostProcessor

from anomalib_ncd.regions.mebin import MEBin
from anomalib_ncd.regions.post_processor import MEBinPostProcessor


def make_maps(seed: int, n_maps: int = 4, size: int = 48) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    maps = 0.2 + 0.05 * torch.rand(n_maps, size, size, generator=generator)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for index in range(1, n_maps):  # map 0 stays normal
        cy, cx = torch.randint(8, size - 8, (2,), generator=generator).tolist()
        maps[index] += (0.3 + 0.2 * index) * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0)
    return maps


def make_batch(maps: torch.Tensor) -> ImageBatch:
    return ImageBatch(
        image=torch.rand(maps.shape[0], 3, *maps.shape[-2:]),
        gt_label=torch.tensor([i % 2 for i in range(maps.shape[0])]),
        anomaly_map=maps.clone(),
        pred_score=maps.amax(dim=(-2, -1)),
    )


def expected_masks(maps: torch.Tensor, min_th: float, max_th: float) -> np.ndarray:
    results = MEBin(n_jobs=1).set_range(min_th, max_th).transform(list(maps.numpy()))
    return np.stack([result.mask for result in results])


def test_is_an_anomalib_post_processor() -> None:
    assert isinstance(MEBinPostProcessor(), PostProcessor)
    with pytest.raises(ValueError, match="connectivity"):
        MEBinPostProcessor(connectivity=5)


def test_range_accumulated_over_validation_batches() -> None:
    post_processor = MEBinPostProcessor(n_jobs=1)
    first, second = make_maps(0), make_maps(1)
    for maps in (first, second):
        post_processor.on_validation_batch_end(None, None, make_batch(maps))  # type: ignore[arg-type]
    assert post_processor.score_range is None
    post_processor.on_validation_epoch_end(None, None)  # type: ignore[arg-type]
    peaks = torch.cat([first, second]).amax(dim=(-2, -1))
    min_th, max_th = float(peaks.min()), float(peaks.max())
    assert post_processor.score_range == (min_th, max_th)
    # the range spans both batches, not just the one being binarised
    batch = make_batch(second)
    post_processor.post_process_batch(batch)
    assert batch.pred_mask is not None
    assert batch.pred_mask.dtype == torch.bool
    assert batch.pred_mask.shape == second.shape
    assert np.array_equal(batch.pred_mask.numpy(), expected_masks(second, min_th, max_th))
    assert batch.pred_mask.any()
    # anomalib's own processing still happened: normalised maps/scores and labels
    assert batch.pred_label is not None
    assert batch.pred_label.dtype == torch.bool
    assert float(batch.anomaly_map.max()) <= 1.0
    assert "mebin_min_th" in post_processor.state_dict()


def test_range_persists_in_state_dict() -> None:
    source = MEBinPostProcessor(score_range=(0.25, 1.5))
    target = MEBinPostProcessor()
    target.load_state_dict(source.state_dict())
    assert target.score_range == (0.25, 1.5)
    config = MEBinPostProcessor(step=2, lower_bound="global_min").checkpoint_config()
    assert config["step"] == 2
    assert config["lower_bound"] == "global_min"
    restored = MEBinPostProcessor()
    restored.load_checkpoint_config(config)
    assert (restored.step, restored.lower_bound) == (2, "global_min")


def test_without_range_falls_back_to_batch_range() -> None:
    maps = make_maps(2)
    post_processor = MEBinPostProcessor(n_jobs=1)
    batch = make_batch(maps)
    with pytest.warns(RuntimeWarning, match="range of each batch"):
        post_processor.post_process_batch(batch)
    peaks = maps.amax(dim=(-2, -1))
    assert np.array_equal(batch.pred_mask.numpy(), expected_masks(maps, float(peaks.min()), float(peaks.max())))


def test_single_image_batch_uses_its_own_value_range() -> None:
    maps = make_maps(3)[2:3]
    post_processor = MEBinPostProcessor(n_jobs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask = post_processor.binarize(maps)
    messages = " ".join(str(w.message) for w in caught)
    assert "range of each batch" in messages
    assert "collapsed" in messages
    assert np.array_equal(mask.numpy(), expected_masks(maps, float(maps.min()), float(maps.max())))
    assert mask.any()


def test_forward_with_inference_batch_and_channel_axis() -> None:
    maps = make_maps(4).unsqueeze(1)
    post_processor = MEBinPostProcessor(n_jobs=2, score_range=(0.2, 1.5), enable_normalization=False)
    output = post_processor(InferenceBatch(anomaly_map=maps))
    assert isinstance(output, InferenceBatch)
    assert output.pred_mask.shape == maps.shape
    assert output.pred_score is not None
    assert np.array_equal(output.pred_mask[:, 0].numpy(), expected_masks(maps[:, 0], 0.2, 1.5))
    with pytest.raises(ValueError, match="At least one"):
        post_processor(InferenceBatch())


def test_fit_range_and_disabled_thresholding() -> None:
    maps = make_maps(5)
    post_processor = MEBinPostProcessor(enable_thresholding=False)
    post_processor.fit_range(maps)
    peaks = maps.amax(dim=(-2, -1))
    assert post_processor.score_range == (float(peaks.min()), float(peaks.max()))
    batch = make_batch(maps)
    post_processor.post_process_batch(batch)
    assert batch.pred_mask is None


def test_plugs_into_an_anomalib_model() -> None:
    from anomalib.models import Patchcore

    post_processor = MEBinPostProcessor(score_range=(0.0, 1.0))
    model = Patchcore(backbone="resnet18", pre_trained=False, post_processor=post_processor)
    assert model.post_processor is post_processor
    assert "post_processor.mebin_max_th" in model.state_dict()
