import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small models: on a small shared CPU, intra-op torch threads cost more than they bring (10x here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
