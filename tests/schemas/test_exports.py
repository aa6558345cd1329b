"""Each package's __init__ names what users call; every name resolves, lazily."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ("schemas", "stream", "models", "offline_train", "propstream")


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves_to_what_its_module_defines(name):
    package = importlib.import_module(name)
    assert package.__all__, name
    assert sorted(dir(package)) == sorted(package.__all__)
    for export in package.__all__:
        value = getattr(package, export)
        home = importlib.import_module(package._EXPORTS[export])
        assert value is getattr(home, export), (name, export)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        package.nope  # noqa: B018


def test_importing_the_state_machine_does_not_import_the_runtime():
    heavy = ("bytewax", "confluent_kafka", "clickhouse_connect")
    code = f"import stream.state, sys; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
