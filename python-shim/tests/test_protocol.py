"""Codec unit tests: encode/decode, zero-copy, chunking, checksum, rejections (see also test_vectors.py)."""

import math

import msgpack
import numpy as np
import pytest

from tailguard.wire import (
    MAX_FRAME_BYTES,
    ProtocolError,
    chunk_step,
    decode_message,
    encode_message,
    encode_step,
    fnv1a32,
    pack_header,
    step_checksum,
)

RNG = np.random.default_rng(0)


def make_step(lengths, pairs=("policy_vs_ref",)):
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    T = int(offsets[-1])
    arrays = {p: RNG.standard_normal(T).astype(np.float32) for p in pairs}
    arrays["completion_mask"] = (RNG.random(T) < 0.9).astype(np.uint8)
    arrays["tool_mask"] = (RNG.random(T) < 0.7).astype(np.uint8)
    arrays["offsets"] = offsets
    arrays["rewards"] = RNG.standard_normal(len(lengths)).astype(np.float32)
    return arrays


def step_header(step=0):
    return {"type": "step", "run_id": "run-1", "rank": 0, "world_size": 1, "step": step, "implicit": [],
            "knobs": {"beta": 0.04}, "logs": {"loss": 0.5}}


def test_round_trip_step_is_zero_copy():
    arrays = make_step([5, 3, 0, 7])
    [frames] = encode_step(step_header(), arrays)
    # Buffer frames alias the caller's arrays: nothing was copied.
    for f, name in zip(frames[1:], arrays):
        assert np.shares_memory(np.frombuffer(f, np.uint8), arrays[name])
    header, out = decode_message([bytes(f) for f in frames])
    assert header["type"] == "step" and header["tokens"] == 15 and header["n_seqs"] == 4
    assert header["chunk"] == {"index": 0, "count": 1}
    assert [b["name"] for b in header["buffers"]] == list(arrays)
    for name, a in arrays.items():
        np.testing.assert_array_equal(out[name], a)
        assert out[name].dtype == a.dtype.newbyteorder("<")


def test_torch_tensors_are_viewed_not_copied():
    torch = pytest.importorskip("torch")
    lr = torch.randn(10)
    mask = torch.ones(10, dtype=torch.bool)
    arrays = {"policy_vs_old": lr, "completion_mask": mask, "tool_mask": mask,
              "offsets": torch.tensor([0, 4, 10])}  # int64 offsets: converted (a small copy)
    [frames] = encode_step(step_header(), arrays)
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), lr.numpy())
    assert np.shares_memory(np.frombuffer(frames[2], np.uint8), mask.numpy())
    h, out = decode_message(frames)
    np.testing.assert_array_equal(out["policy_vs_old"], lr.numpy())
    np.testing.assert_array_equal(out["offsets"], [0, 4, 10])
    assert out["completion_mask"].dtype == np.uint8 and out["completion_mask"].sum() == 10
    # bfloat16 has no numpy dtype: it is widened to float32.
    [frames] = encode_step(step_header(), {**arrays, "policy_vs_old": lr.to(torch.bfloat16)})
    np.testing.assert_allclose(decode_message(frames)[1]["policy_vs_old"], lr.numpy(), rtol=1e-2)


def test_chunking_keeps_whole_sequences_and_frames_under_4mib():
    lengths = RNG.integers(1, 5000, size=800)  # ~2M tokens → f32 frames need 2 chunks or more
    arrays = make_step(lengths, pairs=("policy_vs_old", "policy_vs_ref"))
    T = int(arrays["offsets"][-1])
    messages = encode_step(step_header(7), arrays)
    assert len(messages) >= 2
    seen_tokens, seen_seqs, parts = 0, 0, {k: [] for k in arrays}
    for i, frames in enumerate(messages):
        assert all(len(f) <= MAX_FRAME_BYTES for f in frames[1:])
        h, out = decode_message(frames)
        assert h["chunk"] == {"index": i, "count": len(messages)} and h["step"] == 7
        assert out["offsets"][0] == 0 and out["offsets"][-1] == h["tokens"]
        seen_tokens += h["tokens"]
        seen_seqs += h["n_seqs"]
        for k, v in out.items():
            parts[k].append(v if k != "offsets" else v[1:] + (parts["_base"] if "_base" in parts else 0))
        parts["_base"] = parts.get("_base", 0) + h["tokens"]
    assert seen_tokens == T and seen_seqs == len(lengths)
    for k in ("policy_vs_old", "policy_vs_ref", "completion_mask", "tool_mask", "rewards"):
        np.testing.assert_array_equal(np.concatenate(parts[k]), arrays[k])
    np.testing.assert_array_equal(np.concatenate([[0], *parts["offsets"]]), arrays["offsets"])


def test_chunking_respects_a_smaller_engine_limit_and_rejects_a_giant_sequence():
    arrays = make_step([100] * 50)
    chunks = chunk_step(arrays, max_frame_bytes=1000)  # 250 f32 tokens → 2 sequences per chunk
    assert len(chunks) == 25 and all(c.tokens == 200 and c.n_seqs == 2 for c in chunks)
    with pytest.raises(ProtocolError) as e:
        chunk_step(make_step([10, 300]), max_frame_bytes=1000)
    assert e.value.code == "E_TOO_LARGE"
    assert len(chunk_step(make_step([]))) == 1  # an empty step is still one message


def test_chunk_step_rejects_inconsistent_arrays():
    arrays = make_step([3, 4])
    with pytest.raises(ProtocolError) as e:
        chunk_step({**arrays, "tool_mask": arrays["tool_mask"][:-1]})
    assert e.value.code == "E_FRAME_LENGTH"
    with pytest.raises(ProtocolError) as e:
        chunk_step({k: v for k, v in arrays.items() if k != "offsets"})
    assert e.value.code == "E_MISSING_FIELD"


def test_fnv1a_reference_values_and_incremental():
    assert fnv1a32(b"") == 0x811C9DC5
    assert fnv1a32(b"a") == 0xE40C292C
    assert fnv1a32(b"foobar") == 0xBF9CF968
    assert step_checksum([b"foo", np.frombuffer(b"bar", np.uint8)]) == fnv1a32(b"foobar")


def test_msgpack_options_pinned():
    b = pack_header({"x": 1.5, "i": 7, "big": 2**40, "s": "é"})
    # float64 (0xcb), positive fixint, uint64 (0xcf), str (0xa2 + 2 UTF-8 bytes); no records/ext.
    assert b == bytes.fromhex("84a178cb3ff8000000000000a169 07a3626967cf0000010000000000a173a2c3a9".replace(" ", ""))
    h = encode_message({"type": "bye", "run_id": "r", "rank": 0})
    assert msgpack.unpackb(h[0])["version"] == [1, 0]


def _frames(header, *bufs):
    return [msgpack.packb(header), *bufs]


def _step_frames(**over):
    arrays = make_step([2, 2])
    [frames] = encode_step(step_header(), arrays)
    h = msgpack.unpackb(frames[0])
    h.update(over)
    return [msgpack.packb(h), *[bytes(f) for f in frames[1:]]]


@pytest.mark.parametrize(
    "frames,code",
    [
        ([b"\x85\xa4type"], "E_HEADER_DECODE"),  # truncated map
        ([b"\x81\xa1a\x01\xc0"], "E_HEADER_DECODE"),  # trailing bytes
        ([msgpack.packb([1, 2])], "E_HEADER_TYPE"),
        ([msgpack.packb({1: "x"})], "E_HEADER_TYPE"),
        ([msgpack.packb({"type": "bye", "version": [1, 0], "run_id": b"bin", "rank": 0}, use_bin_type=True)], "E_HEADER_DECODE"),
        ([msgpack.packb({"type": "bye", "version": [2, 0], "run_id": "r", "rank": 0})], "E_VERSION"),
        ([msgpack.packb({"type": "nope", "version": [1, 0]})], "E_UNKNOWN_TYPE"),
        ([msgpack.packb({"type": "bye", "version": [1, 0], "rank": 0})], "E_MISSING_FIELD"),
        ([msgpack.packb({"type": "bye", "version": [1, 0], "run_id": "r", "rank": math.nan})], "E_FIELD_TYPE"),
        ([msgpack.packb({"type": "bye", "version": [1, 0], "run_id": "bad id", "rank": 0})], "E_RUN_ID"),
        ([], "E_FRAME_COUNT"),
        (_step_frames(rank=3, world_size=2), "E_RANK"),
        (_step_frames(tokens=5), "E_FRAME_LENGTH"),
        (_step_frames(chunk={"index": 1, "count": 1}), "E_FIELD_TYPE"),
        (_step_frames()[:-1], "E_FRAME_COUNT"),
        (_step_frames()[:-1] + [b"\x00" * 11], "E_FRAME_LENGTH"),
        (_step_frames()[:-1] + [b"\x00" * (MAX_FRAME_BYTES + 4)], "E_TOO_LARGE"),
    ],
)
def test_rejections(frames, code):
    with pytest.raises(ProtocolError) as e:
        decode_message(frames)
    assert e.value.code == code, e.value


def test_buffer_descriptor_rejections():
    frames = _step_frames()
    h = msgpack.unpackb(frames[0])
    for mutate, code in [
        (lambda b: b[0].update(dtype="f16"), "E_DTYPE"),
        (lambda b: b[0].update(dtype="f64"), "E_DTYPE"),  # policy_vs_ref must be f32
        (lambda b: b[0].update(length=math.nan), "E_FIELD_TYPE"),
        (lambda b: b[0].update(length=-1), "E_FIELD_TYPE"),
        (lambda b: b[0].pop("length"), "E_MISSING_FIELD"),
        (lambda b: b[1].update(name=b[0]["name"], dtype="f32"), "E_FIELD_TYPE"),  # listed twice
        (lambda b: b[0].update(length=2**21), "E_TOO_LARGE"),  # 8 MiB declared
    ]:
        bufs = [dict(b) for b in h["buffers"]]
        mutate(bufs)
        with pytest.raises(ProtocolError) as e:
            decode_message([msgpack.packb({**h, "buffers": bufs}), *frames[1:]])
        assert e.value.code == code, (bufs, e.value)


def test_bad_offsets_and_unknown_fields():
    arrays = make_step([2, 2])
    bad = arrays["offsets"].copy()
    bad[1] = 3
    bad[2] = 1
    [frames] = encode_step(step_header(), {**arrays, "offsets": np.array([0, 3, 4], np.int32)})
    decode_message(frames)  # fine
    h = msgpack.unpackb(frames[0])
    frames2 = [msgpack.packb(h)] + [bytes(f) for f in frames[1:]]
    frames2[[b["name"] for b in h["buffers"]].index("offsets") + 1] = bad.tobytes()
    with pytest.raises(ProtocolError) as e:
        decode_message(frames2)
    assert e.value.code == "E_OFFSETS"
    # A higher minor with extra fields is accepted; unknown fields are ignored.
    h2, _ = decode_message([msgpack.packb({**h, "version": [1, 9], "future": {"x": 1}}), *frames[1:]])
    assert h2["future"] == {"x": 1}
