"""Token ids for the engine's forensics: with `send_token_ids=True` the shim sends each completion's token
ids, and hello's `config.tokenizer` names a `tokenizer.json` the engine reads to decode the top-k tokens of
a finding (`evidence.top_tokens[*].text`). Only fast (Rust `tokenizers`) tokenizers have that file; with
any other, findings name token ids without text.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger("tailguard")


def tokenizer_json(processing_class: Any) -> str | None:
    """Path of a `tokenizer.json` equal to the trainer's tokenizer, or None when it has no fast backend.

    The file is written once into the temp directory, named by its content's hash, so every rank and every
    run with the same tokenizer share it and nothing needs cleaning up. (The saved `name_or_path` copy is
    not used: a tokenizer may have changed in memory since it was loaded.)
    """
    tok = getattr(processing_class, "tokenizer", None) or processing_class  # processors wrap a tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        text = backend.to_str()
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / "tailguard-tokenizers" / f"{digest}.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{digest}.tmp")
            tmp.write_text(text)
            tmp.replace(path)  # atomic: another rank never reads half a file
        return str(path)
    except Exception as e:  # forensics must never stop training
        logger.warning("tailguard: cannot write the tokenizer for forensics (findings name token ids only): %s", e)
        return None
