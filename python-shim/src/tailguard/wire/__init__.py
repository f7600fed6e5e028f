"""Wire protocol v1, the Python half of `proto/README.md`: one module per concern.

A message is a list of frames: frame 0 is a msgpack header map, frames 1..n are raw little-endian
buffers in the order of `header["buffers"]`. Buffers are sent and decoded without copies: encoding
returns memoryviews of the caller's arrays, decoding returns numpy views of the received frames.

- `tables` (GENERATED from proto/v1 by proto/gen_wire_tables.py): schemas, step buffers, limits, PAIRS.
- `header`: msgpack header frames; `arrays`: wire arrays and the checksum; `encode`: frames and chunks.
- `schema_check` + `validate`: checks driven by the schemas; `decode`: every stage in order;
  `sketch_payload`: stage D of sketch steps; `histcoding`: the sparse hist codings ("varint", "runs").

Example:

>>> import numpy as np
>>> frames = encode_message({"type": "step", "run_id": "r1", "rank": 0, "world_size": 1, "step": 0,
...     "chunk": {"index": 0, "count": 1}, "tokens": 2, "n_seqs": 1},
...     {"completion_mask": np.ones(2, np.uint8), "tool_mask": np.zeros(2, np.uint8), "offsets": [0, 2]})
>>> header, arrays = decode_message(frames)
>>> header["type"], arrays["offsets"].tolist()
('step', [0, 2])
"""

from .arrays import DTYPES, FNV_OFFSET, FNV_PRIME, as_wire_array, fnv1a32, frame_view, step_checksum
from .decode import decode_message
from .encode import MAX_FRAME_BYTES, StepChunk, chunk_step, encode_message, encode_step
from .errors import ProtocolError, describe
from .header import MAX_HEADER_DEPTH, pack_header, unpack_header
from .histcoding import HIST_CODINGS, decode_hist_runs, decode_hist_varint, encode_hist_runs, encode_hist_varint
from .sketch_payload import (SKETCH_HIST, SKETCH_HIST_BINS, SKETCH_MAX_USER_SLICES, SKETCH_PER_RANK_FIELDS,
                             SKETCH_SLICES, SKETCH_SUMS_FIELDS, check_sketch_step)
from .tables import (
    ACTIONS,
    DEFAULT_LIMITS,
    MESSAGE_TYPES,
    PAIRS,
    PROTOCOL_VERSION,
    REQUIRED_STEP_BUFFERS,
    RUN_ID_PATTERN,
    SCHEMAS,
    STEP_BUFFERS,
)
from .validate import check_frame_limits, validate_header

__all__ = [
    "ACTIONS", "DEFAULT_LIMITS", "DTYPES", "FNV_OFFSET", "FNV_PRIME", "MAX_FRAME_BYTES", "MAX_HEADER_DEPTH", "MESSAGE_TYPES", "PAIRS",
    "PROTOCOL_VERSION", "REQUIRED_STEP_BUFFERS", "RUN_ID_PATTERN", "SCHEMAS", "SKETCH_HIST", "SKETCH_HIST_BINS",
    "SKETCH_MAX_USER_SLICES", "SKETCH_PER_RANK_FIELDS", "SKETCH_SLICES", "SKETCH_SUMS_FIELDS", "STEP_BUFFERS", "ProtocolError", "StepChunk", "as_wire_array",
    "HIST_CODINGS", "check_frame_limits", "check_sketch_step", "chunk_step", "decode_hist_runs", "decode_hist_varint", "decode_message", "describe", "encode_message",
    "encode_hist_runs", "encode_hist_varint", "encode_step", "fnv1a32", "frame_view", "pack_header", "step_checksum", "unpack_header", "validate_header",
]  # fmt: skip
