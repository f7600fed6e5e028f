"""Sketch mode keeps the captured tensors on their device: the capture stages no host buffer, the step is
flattened and sketched with torch ops where the tensors live, and the only data that reaches the host is
the sketch itself. On CPU "reaching the host" means leaving torch: every `Tensor.numpy()`/`tolist()`/
`__array__` is counted. Also: sketching the padded device layout equals sketching raw mode's compact
host layout of the same step."""

from types import SimpleNamespace

import msgpack
import numpy as np
import pytest
import torch

from tailguard import sketch as S
from tailguard.capture.base import Capture
from tailguard.hostcopy import DeviceKeeper, HostCopier
from tailguard.options import parse_options

B, WIDTH, MICRO = 16, 8192, 3


def micro_batches(seed=0):
    """Padded (B, WIDTH) micro-batches as GRPO hands them over: right padding, tool spans, heavy tails."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(MICRO):
        lens = torch.randint(1, WIDTH + 1, (B,), generator=g)
        cm = (torch.arange(WIDTH)[None, :] < lens[:, None]).to(torch.int64)  # TRL's masks are int64
        tm = torch.ones(B, WIDTH, dtype=torch.int64)
        for i in range(0, B, 2):  # a tool span in every other sequence
            s = int(torch.randint(0, int(lens[i]), (1,), generator=g))
            tm[i, s:s + 40] = 0
        ref = torch.distributions.StudentT(3.0).sample((B, WIDTH)) * 0.3
        ref[0, :3] = torch.tensor([float("nan"), float("inf"), 70.0])
        mix = torch.randn(B, WIDTH, generator=g) * 0.05
        out.append((cm, tm, ref, mix))
    return out


def stage(cap, batches):
    for cm, tm, ref, mix in batches:
        cap.stage_micro_batch(cm, {"policy_vs_ref": ref, "old_vs_rollout": mix, "tool_mask": tm,
                                   "policy_vs_old": None},
                              {"advantages": torch.randn(B), "seq_ids": torch.arange(B), "group_ids": None},
                              implicit=("policy_vs_old",))


class HostCounter:
    """Counts every tensor that leaves torch for the host (numpy / Python lists)."""

    def __init__(self, monkeypatch):
        self.sizes = []
        for name in ("numpy", "tolist", "__array__"):
            orig = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(orig))

    def _wrap(self, orig):
        def f(t, *a, **k):
            self.sizes.append((t.numel(), t.numel() * t.element_size()))
            return orig(t, *a, **k)

        return f


class FrameSink:
    """Rank 0's client as far as the sketch send is concerned: it keeps the encoded frames."""

    run_id, rank, world_size = "dev", 0, 1

    def __init__(self):
        self.messages = []

    def send_step(self, step, arrays, **kw):  # EngineClient.send_step's encoding, without a socket
        from tailguard.wire import DEFAULT_LIMITS
        from tailguard.transport.headers import step_messages

        self.messages.extend(step_messages(self, step, arrays, DEFAULT_LIMITS, **kw))
        return True


def test_sketch_mode_copies_no_token_array_to_host(monkeypatch):
    torch.manual_seed(0)
    batches = micro_batches()
    T = MICRO * B * WIDTH
    cap = Capture(object(), parse_options(mode="sketch"))
    assert isinstance(cap.copier, DeviceKeeper)
    # The accelerator's kernel (torch ops) is what this checks; CPU tensors take numpy views by default.
    monkeypatch.setattr(S.compute, "CPU_BACKEND", "torch")
    counter = HostCounter(monkeypatch)
    stage(cap, batches)
    # staged as views of the trainer's tensors (same storage), not copies
    assert cap.copier._staged[1].data_ptr() == batches[0][2].data_ptr()  # [0] is completion_mask as uint8
    sink = FrameSink()
    cb = SimpleNamespace(capture=cap, options=cap.options, client=sink)
    S.send_capture_step(cb, SimpleNamespace(global_step=1), SimpleNamespace(should_training_stop=False))
    assert cap.copier.bytes_to_host == 0
    assert len(sink.messages) == 1
    sketch_bytes = sum(memoryview(f).nbytes for f in sink.messages[0][1:])
    dense = 2 * 4 * (S.HIST_BINS + S.N_FIELDS) * 8  # two pairs × four slices: what leaves torch, fixed
    assert 0 < sketch_bytes <= 2 * 64 * 1024  # on the wire: varint-coded hists (test_sketch_wire_size.py)
    header = msgpack.unpackb(bytes(sink.messages[0][0]))
    assert header["tokens"] == sum(int(cm.sum()) for cm, *_ in batches)  # completion tokens, not padded positions
    # sketch_per_rank's default (on at 1 rank): this rank's summary, one row per sums buffer
    assert header["per_rank"] == {"ranks": 1, "fields": list(S.PER_RANK_FIELDS), "tokens": [header["tokens"]]}
    rows = sum(b["name"].endswith("/sums") for b in header["buffers"])
    assert next(b for b in header["buffers"] if b["name"] == "sketch/per_rank")["length"] == rows * 4
    # Nothing of token size left torch; what did is the sketch (plus a few per-sequence/count scalars).
    assert counter.sizes and max(n for n, _ in counter.sizes) < T // 2, sorted(counter.sizes)[-3:]
    assert sum(b for _, b in counter.sizes) <= dense + 8 * (B * MICRO + 64)
    # Raw mode's stager, fed the same step, does count the token arrays it copies to the host.
    raw = Capture(object(), parse_options(mode="raw"))
    assert isinstance(raw.copier, HostCopier) and raw.stager is not None
    stage(raw, batches)
    tokens = sum(int(cm.sum()) for cm, *_ in batches)
    assert raw.stager.tokens == tokens and raw.stager.bytes_staged >= tokens * (4 + 4 + 1)


def test_device_layout_sketch_equals_host_layout_sketch():
    batches = micro_batches(seed=1)
    dev = Capture(object(), parse_options(mode="sketch", retain_captured=True))
    stage(dev, batches)
    payload = dev.take_step(1)
    assert isinstance(payload.arrays["policy_vs_ref"], torch.Tensor) and payload.implicit == ["policy_vs_old"]
    host = dev.captured[0][1]  # raw mode's compact completion tokens of the same step
    assert host["offsets"][-1] == sum(int(cm.sum()) for cm, *_ in batches)
    names = ["policy_vs_ref", "old_vs_rollout"]
    a = S.sketch_payload(payload.arrays, names)
    b = S.sketch_payload(host, names)
    assert a.slice_counts == b.slice_counts and payload.tokens == b.tokens == int(host["offsets"][-1])
    assert a.n_seqs == b.n_seqs == B * MICRO
    assert a.slice_counts["post_tool"] > 1000 and a.slice_counts["tool_output"] > 100
    torch.testing.assert_close(a.hist, b.hist, rtol=0, atol=0)
    torch.testing.assert_close(a.sums, b.sums, rtol=1e-12, atol=1e-12)
    assert sum(a.field("policy_vs_ref", s, "nonfinite") for s in ("pre_tool", "post_tool", "tool_output")) == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sketch_runs_on_cuda_tensors():
    batches = [tuple(t.cuda() for t in mb) for mb in micro_batches(seed=2)]
    cap = Capture(object(), parse_options(mode="sketch"))
    stage(cap, batches)
    payload = cap.take_step(1)
    sk = S.sketch_payload(payload.arrays, ["policy_vs_ref", "old_vs_rollout"])
    assert sk.hist.is_cuda and sk.sums.is_cuda
    host = S.sketch_payload({k: v.cpu() for k, v in payload.arrays.items()}, ["policy_vs_ref", "old_vs_rollout"])
    torch.testing.assert_close(sk.hist.cpu(), host.hist, rtol=0, atol=0)
    torch.testing.assert_close(sk.sums.cpu(), host.sums, rtol=1e-12, atol=1e-12)
    assert np.isfinite(sk.field("policy_vs_ref", "all", "lse_sum"))
