"""Fail fast without the model hub: a closed network must give a clear error, never a long wait."""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse

logger = logging.getLogger(__name__)


def use_cache_only_if_hub_unreachable(timeout: float = 3.0) -> bool:
    """Switch Hugging Face downloads to the local cache when the hub cannot be reached.

    Without this, a download in an air-gapped plant waits on DNS and connection retries for a
    minute or more before failing. One short connection attempt decides instead; an explicit
    ``HF_HUB_OFFLINE=1`` skips the attempt.

    Args:
        timeout: seconds to wait for the connection.

    Returns:
        True when only the local cache will be used.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout):
            return False
    except OSError as error:
        logger.info("The model hub (%s) is unreachable (%s): using locally cached weights only", endpoint.netloc, error)
        constants.HF_HUB_OFFLINE = True  # read at request time by huggingface_hub
        os.environ["HF_HUB_OFFLINE"] = "1"
        return True
