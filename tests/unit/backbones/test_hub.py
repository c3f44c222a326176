"""Without a reachable hub, downloads switch to the local cache at once (no minute-long retries)."""

import time

import pytest
from huggingface_hub import constants

from anomalib_ncd.backbones.hub import use_cache_only_if_hub_unreachable


@pytest.fixture
def hub_state(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return monkeypatch


def test_unreachable_hub_means_cache_only(hub_state):
    hub_state.setattr(constants, "ENDPOINT", "https://127.0.0.1:9")  # nothing listens on the discard port
    start = time.perf_counter()
    assert use_cache_only_if_hub_unreachable(timeout=2.0) is True
    assert time.perf_counter() - start < 3
    assert constants.HF_HUB_OFFLINE is True


def test_explicit_offline_needs_no_probe(hub_state):
    hub_state.setattr(constants, "HF_HUB_OFFLINE", True)
    hub_state.setattr(constants, "ENDPOINT", "https://does-not-resolve.invalid")
    assert use_cache_only_if_hub_unreachable(timeout=0.01) is True


def test_reachable_endpoint_stays_online(hub_state):
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        hub_state.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert use_cache_only_if_hub_unreachable(timeout=2.0) is False
        assert constants.HF_HUB_OFFLINE is False
    finally:
        server.close()
