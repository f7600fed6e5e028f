"""tailguard: slice-aware tail diagnostics and control for RL post-training (TRL shim).

The heavy imports (torch, transformers, trl) are deferred until the callback is used,
so `import tailguard` works with only pyzmq, msgpack and numpy installed.
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = (1, 0)

__all__ = ["TailguardCallback", "TailguardStopped", "attach", "EngineClient", "__version__", "PROTOCOL_VERSION"]


def __getattr__(name):
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
