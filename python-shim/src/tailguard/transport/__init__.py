"""The shim's transport: endpoint and key checks (`keys`), the step ledger and its counters (`ledger`),
the I/O thread that owns the socket (`io`), and the send and reply sides of the client (`sending`,
`replies`). `tailguard.client.EngineClient` is the public face."""

from .io import RETRYABLE, IoThread
from .keys import check_endpoint, curve_keys
from .ledger import COUNTERS, Ledger, Step

__all__ = ["COUNTERS", "RETRYABLE", "IoThread", "Ledger", "Step", "check_endpoint", "curve_keys"]
