"""tailguard: slice-aware tail diagnostics and control for RL post-training (TRL shim).

The heavy imports (torch, transformers, trl) are deferred until the callback is used,
so `import tailguard` works with only pyzmq, msgpack and numpy installed.
"""


def _version() -> str:
    """package.json's version (one version for npm and PyPI): the checkout's file, else the installed metadata."""
    import json
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[3] / "package.json"
    try:
        data = json.loads(pkg.read_text())
        if data.get("name") == "tailguard":
            return str(data["version"])
    except (OSError, ValueError, KeyError):
        pass
    try:
        from importlib.metadata import version

        return version("tailguard")
    except Exception:  # noqa: BLE001 - not installed (e.g. PYTHONPATH only)
        return "0+unknown"


__version__ = _version()
PROTOCOL_VERSION = (1, 0)

__all__ = ["TailguardCallback", "TailguardStopped", "attach", "EngineClient", "__version__", "PROTOCOL_VERSION"]

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type checkers see the real signatures; at run time they load lazily (__getattr__)
    from .callback import TailguardCallback, attach
    from .client import EngineClient


def __getattr__(name: str) -> object:
    if name in ("TailguardCallback", "attach"):
        from . import callback

        return getattr(callback, name)
    if name == "TailguardStopped":
        from .guard import TailguardStopped

        return TailguardStopped
    if name == "EngineClient":
        from .client import EngineClient

        return EngineClient
    raise AttributeError(f"module 'tailguard' has no attribute {name!r}")
