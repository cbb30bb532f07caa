"""Each package's ``__init__`` names its public API in ``__all__``: every name there imports,
none is private, and nothing public is defined there without being listed."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = [
    "qtmesh.base",
    "qtmesh.base.convert",
    "qtmesh.runtime",
    "backtest",
    "market",
    "market.fleet",
    "sesa",
    "sesa.mutation",
    "sesa.research",
    "console",
    "sesa.scenarios",
    "meta",
    "alpha_reporting",
    "meta_optimizer",
    "agents",
    "agents.ceo",
    "agents.risk",
    "agents.strategy",
    "memory",
    "world_model",
    "federation",
    "replay",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_a_package_exports_exactly_its_public_names(name):
    package = importlib.import_module(name)
    exported = package.__all__
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), n)) or exported == sorted(
        exported
    ), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported)
    for attribute in exported:
        assert not attribute.startswith("_"), f"{name} exports the private {attribute}"
        assert hasattr(package, attribute), f"{name}.__all__ names {attribute}, which is missing"
    top = name.partition(".")[0]
    public = {
        attribute
        for attribute, value in vars(package).items()
        if not attribute.startswith("_")
        and not inspect.ismodule(value)
        and attribute != "annotations"
        # What the package defines or re-exports from its own tree, not a name it imported.
        and (getattr(value, "__module__", top) or top).partition(".")[0] == top
    }
    assert public <= set(exported), f"{name} defines {sorted(public - set(exported))} unlisted"
    star: dict[str, object] = {}
    exec(f"from {name} import *", star)
    assert {k for k in star if k != "__builtins__"} == set(exported)
