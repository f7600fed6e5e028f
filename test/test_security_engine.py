"""Security against a real engine process: bind policy, CURVE (keygen → engine → pyzmq client),
oversized messages, path traversal in run ids."""

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
import zmq.auth

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_fixture import CLI, free_tcp_endpoint  # noqa: E402
from synthetic_steps import synthetic_step  # noqa: E402
from tailguard.client import EngineClient  # noqa: E402
from tailguard.wire import decode_message, encode_message  # noqa: E402


def keygen(prefix: Path) -> tuple[str, str]:
    out = subprocess.run(["node", str(CLI), "keygen", "--out", str(prefix)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return str(prefix) + ".key", str(prefix) + ".pub"


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def serve_exit(tmp_path: Path, *args: str, wait: float = 8.0) -> tuple[int | None, str]:
    """Start `serve` and return (exit code or None if still running after `wait`, output)."""
    log = tmp_path / f"serve{time.monotonic_ns()}.log"
    with open(log, "wb") as f:
        p = subprocess.Popen(["node", str(CLI), "serve", "--run-dir", str(tmp_path / "runs"), *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    try:
        p.wait(wait)
    except subprocess.TimeoutExpired:
        p.terminate()
        p.wait(10)
        return None, log.read_text()
    return p.returncode, log.read_text()


def test_keygen_writes_zcert_pair_secret_0600(tmp_path):
    sec, pub = keygen(tmp_path / "engine")
    assert stat.S_IMODE(os.stat(sec).st_mode) == 0o600
    p1, s1 = zmq.auth.load_certificate(sec)
    p2, s2 = zmq.auth.load_certificate(pub)
    assert p1 == p2 and len(p1) == 40 and len(s1) == 40 and s2 is None
    # The pair is a real CURVE pair: libzmq derives the same public key from the secret.
    assert zmq.curve_public(s1) == p1


@pytest.mark.parametrize("host", ["0.0.0.0", "*", "10.1.2.3"])
def test_non_loopback_bind_refused_without_curve(tmp_path, host):
    port = free_tcp_endpoint().rsplit(":", 1)[1]
    code, out = serve_exit(tmp_path, "--endpoint", f"tcp://{host}:{port}")
    assert code == 2, out
    assert "E_BIND_INSECURE" in out and "--insecure" in out


def test_insecure_flag_binds_with_a_loud_warning(tmp_path):
    port = free_tcp_endpoint().rsplit(":", 1)[1]
    code, out = serve_exit(tmp_path, "--endpoint", f"tcp://0.0.0.0:{port}", "--insecure", wait=6)
    assert code is None, out  # still serving
    assert "INSECURE" in out


def test_curve_secret_without_allow_list_is_refused(tmp_path):
    sec, _ = keygen(tmp_path / "engine")
    code, out = serve_exit(tmp_path, "--endpoint", free_tcp_endpoint(), "--curve-secret", sec)
    assert code == 2 and "--curve-allow" in out, out


def test_curve_right_key_works_wrong_key_and_plain_clients_rejected(tmp_path, start_engine):
    esec, epub = keygen(tmp_path / "engine")
    csec, cpub = keygen(tmp_path / "client")
    # A second client key made by pyzmq's own tooling: not on the allow-list.
    zmq.auth.create_certificates(str(tmp_path), "intruder")
    allow = tmp_path / "allow"
    allow.write_text(Path(cpub).read_text())
    port = free_tcp_endpoint().rsplit(":", 1)[1]
    # Non-loopback bind: allowed because CURVE is configured. Clients reach it over loopback.
    engine = start_engine("--curve-secret", esec, "--curve-allow", str(allow), endpoint=f"tcp://0.0.0.0:{port}", log_level="info")
    endpoint = f"tcp://127.0.0.1:{port}"

    good = EngineClient(endpoint, "curve-run", curve_server_key=epub, curve_secret_key=csec)
    try:
        assert good.connect(timeout=20)["type"] == "welcome"
        assert good.send_step(0, synthetic_step(np.random.default_rng(0), n_seqs=3, mean_len=10)) and good.flush(20)
        assert good.stats["acked"] == 1
    finally:
        good.close()

    bad = EngineClient(endpoint, "curve-bad", curve_server_key=epub, curve_secret_key=str(tmp_path / "intruder.key_secret"), connect_timeout_s=3)
    plain = EngineClient(endpoint, "curve-plain", connect_timeout_s=3)
    try:
        with pytest.raises(TimeoutError):
            bad.connect()
        with pytest.raises(TimeoutError):
            plain.connect()
    finally:
        bad.close()
        plain.close()
    assert engine.alive
    log = engine.log()
    assert "client admitted (CURVE)" in log and "client rejected: key not in --curve-allow" in log
    runs = {p.name for p in engine.run_dir.iterdir()}
    assert "curve-run" in runs and "curve-bad" not in runs and "curve-plain" not in runs


def test_oversized_message_dropped_without_memory_blowup(start_engine):
    engine = start_engine()
    ctx = zmq.Context.instance()
    before = vm_hwm_mib(engine.proc.pid)
    # 1) Over the socket limit (ZMQ_MAXMSGSIZE = max_message_bytes, 64 MiB): libzmq drops the connection
    #    after reading the frame's size, before buffering it.
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(engine.endpoint)
    hello = {"type": "hello", "version": [1, 0], "run_id": "big", "rank": 0, "world_size": 1, "trainer": "synthetic"}
    for _ in range(3):
        s.send_multipart([msgpack.packb(hello), bytes(96 << 20)])
    time.sleep(1.0)
    s.close()
    # 2) Under the socket limit but over max_frame_bytes: an E_TOO_LARGE reply, nothing kept.
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 10_000)
    s.connect(engine.endpoint)
    s.send_multipart(encode_message(hello))
    assert decode_message(s.recv_multipart())[0]["type"] == "welcome"
    step = {"type": "step", "version": [1, 0], "run_id": "big", "rank": 0, "world_size": 1, "step": 0,
            "chunk": {"index": 0, "count": 1}, "tokens": 1, "n_seqs": 1,
            "buffers": [{"name": "completion_mask", "dtype": "u8", "length": 8 << 20}]}
    s.send_multipart([msgpack.packb(step), bytes(8 << 20)])
    err = decode_message(s.recv_multipart())[0]
    assert err["type"] == "error" and err["code"] == "E_TOO_LARGE"
    # 3) A header over max_header_bytes (64 KiB).
    s.send_multipart([msgpack.packb({**hello, "config": {"x": "y" * (1 << 20)}})])
    err = decode_message(s.recv_multipart())[0]
    assert err["code"] == "E_TOO_LARGE"
    s.close()
    after = vm_hwm_mib(engine.proc.pid)
    print(f"engine VmHWM before {before:.0f} MiB, after 3×96 MiB + 8 MiB + 1 MiB messages {after:.0f} MiB")
    assert after - before < 64, "the engine buffered an oversized message"
    with EngineClient(engine.endpoint, "after-big") as c:  # still serving
        assert c.connect(timeout=10)["type"] == "welcome"
    assert engine.alive


BAD_RUN_IDS = ["../../etc", "..", "../escape", "a/../../b", "/tmp/abs", ".hidden", "x" * 200, "a\\b", "a\x00b"]


def test_path_traversal_run_ids_refused_nothing_written(tmp_path, start_engine):
    engine = start_engine()
    before = {p for p in tmp_path.rglob("*")}
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 10_000)
    s.connect(engine.endpoint)
    for run_id in BAD_RUN_IDS:
        for msg in ({"type": "hello", "world_size": 1, "trainer": "x"}, {"type": "bye"}):
            s.send_multipart(encode_message({"version": [1, 0], "run_id": run_id, "rank": 0, **msg}))
            err = decode_message(s.recv_multipart())[0]
            assert err["type"] == "error" and err["code"] == "E_RUN_ID", (run_id, err)
            assert err["fatal"] is (msg["type"] == "hello")
    s.close()
    new = {p for p in tmp_path.rglob("*")} - before
    # Only the engine's own log may have grown; no directory appeared anywhere (run root included).
    assert all(p.is_file() and p.name.startswith("engine.") for p in new), new
    assert not (tmp_path.parent / "etc").exists() and not Path("/tmp/abs").exists()
    assert engine.alive
