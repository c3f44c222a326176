from __future__ import annotations

import subprocess
import sys

import pytest

import anomalib_ncd.data as data


def test_every_exported_name_resolves() -> None:
    for name in data.__all__:
        assert getattr(data, name) is not None, name


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = data.no_such_thing


def test_loaders_do_not_import_anomalib() -> None:
    code = "import sys, anomalib_ncd.data; print('anomalib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
