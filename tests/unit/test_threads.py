"""torch_threads caps torch's intra-op threads for a block and restores them, whatever happens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalib_ncd.discovery.views import ViewMaker, ViewSettings
from anomalib_ncd.threads import torch_threads


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_caps_then_restores_even_on_error(two_threads):
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError
    assert torch.get_num_threads() == 2


def test_never_raises_the_count_and_none_changes_nothing(two_threads):
    with torch_threads(8):
        assert torch.get_num_threads() == 2
    with torch_threads(None):
        assert torch.get_num_threads() == 2


def test_rejects_zero():
    with pytest.raises(ValueError, match="at least 1"), torch_threads(0):
        pass


def test_augmented_views_do_not_depend_on_the_thread_count(two_threads):
    # The view cache augments on one thread; the views must be those two threads would make.
    maker = ViewMaker(ViewSettings(size=64, resize=72))
    rng = np.random.default_rng(0)
    crop = (rng.random((90, 120, 3)) * 255).astype(np.uint8)
    mask = np.zeros((90, 120), bool)
    mask[30:50, 40:70] = True
    views = {}
    for n_threads in (1, 2):
        with torch_threads(n_threads):
            views[n_threads] = [maker.augmented(crop, mask, number, 1) for number in range(12)]
    for (image_1, mask_1), (image_2, mask_2) in zip(views[1], views[2], strict=True):
        assert torch.equal(image_1, image_2)
        assert torch.equal(mask_1, mask_2)
