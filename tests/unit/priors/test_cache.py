import logging

import numpy as np
import pytest

from anomalib_ncd.priors import CachedObjectPrior, ObjectPrior, PriorMask, default_cache_dir
from anomalib_ncd.priors.cache import image_key


class CountingPrior(ObjectPrior):
    """Left half on the object; counts its calls; its fingerprint carries a setting."""

    name = "counting"
    warn_reasons = frozenset({"no_box"})

    def __init__(self, setting=1, fallback=None):
        super().__init__()
        self.calls = 0
        self.setting = setting
        self.fallback = fallback
        self.no_box_count = 0

    def compute(self, image, path=None):
        self.calls += 1
        mask = np.zeros(image.shape[:2], dtype=bool)
        mask[:, : image.shape[1] // 2] = True
        if self.fallback is not None:
            self.record_fallback(self.fallback, path)
            return PriorMask(np.ones(image.shape[:2], dtype=bool), self.fallback)
        return PriorMask(mask)

    def fingerprint(self):
        return f"counting:{self.setting}"


def _image(seed=0, shape=(33, 47, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_second_call_reads_the_cache(tmp_path):
    inner = CountingPrior()
    cached = CachedObjectPrior(inner, tmp_path)
    image = _image()
    first = cached.mask(image)
    second = cached.mask(image.copy())
    assert inner.calls == 1
    assert (cached.hits, cached.misses) == (1, 1)
    assert np.array_equal(first, second)
    assert second.dtype == bool
    assert second.shape == image.shape[:2]
    assert cached.name == "counting"
    assert cached.fingerprint() == "counting:1"
    # a new wrapper (a new run) reads the same files
    again = CachedObjectPrior(CountingPrior(), tmp_path)
    assert np.array_equal(again.mask(image), first)
    assert again.prior.calls == 0


def test_key_changes_with_pixels_shape_and_settings(tmp_path):
    image = _image()
    changed = image.copy()
    changed[0, 0, 0] ^= 1
    fingerprint = CountingPrior().fingerprint()
    keys = {
        image_key(image, fingerprint),
        image_key(changed, fingerprint),
        image_key(image.reshape(47, 33, 3), fingerprint),
        image_key(image, CountingPrior(setting=2).fingerprint()),
    }
    assert len(keys) == 4
    inner = CountingPrior()
    cached = CachedObjectPrior(inner, tmp_path)
    cached.mask(image)
    cached.mask(changed)
    assert inner.calls == 2
    other = CountingPrior(setting=2)
    CachedObjectPrior(other, tmp_path).mask(image)
    assert other.calls == 1


def test_files_are_written_atomically(tmp_path, monkeypatch):
    cached = CachedObjectPrior(CountingPrior(), tmp_path)
    image = _image()
    cached.mask(image)
    files = sorted(p.relative_to(cached.folder).as_posix() for p in cached.folder.rglob("*") if p.is_file())
    assert files == sorted(["prior.txt", cached.path_of(image).relative_to(cached.folder).as_posix()])
    assert (cached.folder / "prior.txt").read_text().strip() == "counting:1"

    def broken_save(handle, **_):
        handle.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken_save)
    other = _image(seed=1)
    assert cached.mask(other).shape == other.shape[:2]  # the mask is still returned
    assert not cached.path_of(other).exists()
    leftovers = [p for p in cached.folder.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize("content", [b"", b"not a zip file", None])
def test_corrupt_cache_file_is_recomputed(tmp_path, caplog, content):
    inner = CountingPrior()
    cached = CachedObjectPrior(inner, tmp_path)
    image = _image()
    expected = cached.mask(image)
    file = cached.path_of(image)
    if content is None:  # a valid file of another size
        np.savez_compressed(file, bits=np.packbits(np.ones(4, bool)), shape=np.array([2, 2]), fallback=np.asarray(""))
    else:
        file.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        again = cached.mask(image)
    assert inner.calls == 2
    assert np.array_equal(again, expected)
    assert "unreadable" in caplog.text
    assert cached.mask(image) is not None
    assert inner.calls == 2  # rewritten: read from the cache again


def test_cached_fallbacks_are_still_logged_and_counted(tmp_path, caplog):
    inner = CountingPrior(fallback="no_box")
    cached = CachedObjectPrior(inner, tmp_path)
    image = _image()
    with caplog.at_level(logging.WARNING):
        assert cached.compute(image, "a.png").fallback == "no_box"
        hit = cached.compute(image, "a.png")
    assert hit.fallback == "no_box"
    assert hit.mask.all()
    assert inner.calls == 1
    assert cached.fallback_counts == {"no_box": 2}
    assert caplog.text.count("no_box") == 2
    assert "a.png" in caplog.text
    assert cached.no_box_count == 0  # other attributes come from the wrapped prior


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ANOMALIB_NCD_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "object_priors"
    assert CachedObjectPrior(CountingPrior()).cache_dir == tmp_path / "object_priors"
