from pathlib import Path

import cv2
import numpy as np
import pytest

from anomalib_ncd.data import generate_synthetic_dataset

SHAPE = (96, 128)


def write_detector_like_maps(table, maps_dir: Path, shape=SHAPE) -> Path:
    """Maps like a detector's: blurred true masks on weak noise, 8-bit PNG as the AnomalyNCD authors ship them."""
    rng = np.random.default_rng(0)
    for row in table[table["split"] == "test"].itertuples():
        truth = np.zeros(shape, np.float32)
        if row.mask_path:
            truth = (cv2.imread(row.mask_path, cv2.IMREAD_GRAYSCALE) > 127).astype(np.float32)
        blurred = cv2.GaussianBlur(truth, (0, 0), 4)  # as smooth as Patchcore maps
        noisy = blurred / max(float(blurred.max()), 1e-6) + rng.random(shape, dtype=np.float32) * 0.05
        target = maps_dir / row.defect_type / f"{Path(row.image_path).stem}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), np.clip(noisy * 255, 0, 255).astype(np.uint8))
    return maps_dir


@pytest.fixture
def dataset_with_maps(tmp_path):
    table = generate_synthetic_dataset(
        tmp_path / "data", "brick", image_size=SHAPE, n_train_good=2, n_test_good=3, n_per_type=2, seed=1
    )
    return tmp_path / "data" / "brick", write_detector_like_maps(table, tmp_path / "maps"), table
