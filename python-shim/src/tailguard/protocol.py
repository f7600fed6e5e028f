"""Moved to `tailguard.wire` (one module per concern). This alias keeps branches in flight importing;
new code imports `tailguard.wire`."""

from .wire import *  # noqa: F401,F403
from .wire import __all__  # noqa: F401
