"""Fixtures shared by the shim tests."""

import pytest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny offline LM of tiny.py, saved once per module: (model dir, tokenizer loaded back from it)."""
    from tiny import build_tiny_lm
    from transformers import AutoTokenizer

    model_dir = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny_lm(model_dir)
    return str(model_dir), AutoTokenizer.from_pretrained(str(model_dir))
