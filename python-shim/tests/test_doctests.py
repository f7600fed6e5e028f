"""Docstring examples are tests: every `>>>` example in the shim's modules runs here (a failing or
stale example fails `make test`). One test per module; `# doctest: +SKIP` marks the ones that need a
running engine or a trainer."""

import doctest
import importlib
import pkgutil

import pytest

import tailguard

MODULES = sorted(m.name for m in pkgutil.walk_packages(tailguard.__path__, "tailguard."))


def test_modules_found():
    assert "tailguard.wire.validate" in MODULES and "tailguard.callback" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"
