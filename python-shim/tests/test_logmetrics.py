"""The trainer-log curation (logmetrics.py) and the typed `attach` signature."""

from __future__ import annotations

import inspect
from dataclasses import fields

from tailguard.logmetrics import curate
from tailguard.options import DEFAULTS, Options

METRICS = ("n", "nonfinite", "abs_mean", "abs_q95", "abs_q99", "abs_q999", "abs_max", "ess", "ess_seq", "kl_k3",
           "exceed_2", "clip_frac", "alpha")  # ts-core stats HEADLINE_METRICS: what the engine replies with


def reply(pairs=("policy_vs_old", "policy_vs_ref", "old_vs_rollout"), placeholders=("old_vs_rollout",)):
    """An engine reply's metrics for three pairs x four slices, the way the engine builds them."""
    out = {}
    for p_i, pair in enumerate(pairs):
        for s_i, slice_ in enumerate(("all", "pre_tool", "post_tool", "tool_output")):
            zero = slice_ == "tool_output" and pair in placeholders
            for m_i, m in enumerate(METRICS):
                out[f"{pair}/{slice_}/{m}"] = 0.0 if zero and m != "n" else (0.25 if m == "alpha" else 1 + p_i + s_i / 10 + m_i / 100)
    out["findings/n"] = 2
    out["findings/severity"] = 3
    return out


def test_default_is_a_small_headline_set():
    got = curate(reply())
    assert len(reply()) == 3 * 4 * len(METRICS) + 2  # 158 keys in the reply
    assert len(got) <= 24, sorted(got)
    for pair in ("policy_vs_old", "policy_vs_ref", "old_vs_rollout"):
        for key in ("post_tool/abs_q99", "pre_tool/abs_q99", "all/abs_q99", "all/ess", "all/kl_k3"):
            assert f"{pair}/{key}" in got
    assert [k for k in got if "alpha" in k] == ["alpha"] and got["alpha"] == 0.25  # alpha once
    assert got["findings/n"] == 2 and got["findings/severity"] == 3
    assert list(got)[-2:] == ["findings/n", "findings/severity"]


def test_full_set_leaves_out_what_was_not_measured():
    full = curate(reply(), full=True)
    # placeholder tool_output (all zeros) of old_vs_rollout is not a measurement: no key at all
    assert not any(k.startswith("old_vs_rollout/tool_output/") for k in full)
    assert "policy_vs_ref/tool_output/abs_q99" in full  # a real tool_output slice stays
    assert sum(k.endswith("/alpha") or k == "alpha" for k in full) == 1
    m = reply()
    m["policy_vs_ref/post_tool/n"] = 0  # a run without tool calls: post_tool not measured
    assert not any(k.startswith("policy_vs_ref/post_tool/") for k in curate(m)) and not any(
        k.startswith("policy_vs_ref/post_tool/") for k in curate(m, full=True))


def test_metric_names_pick_metrics_for_every_measured_slice():
    got = curate(reply(), names=("abs_q99",))
    assert got and all(k.endswith("/abs_q99") for k in got)
    assert len(got) == 3 * 4 - 1  # every pair x slice but the placeholder one


def test_attach_is_keyword_only_with_the_options_names_and_defaults():
    from tailguard.callback import attach

    params = inspect.signature(attach).parameters
    kw = {n: p for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert list(params)[:2] == ["trainer", "endpoint"]
    assert set(kw) == {f.name for f in fields(Options)}
    for name, p in kw.items():
        assert p.default == getattr(DEFAULTS, name), name


def test_messages_carry_one_prefix():
    from tailguard.callback import _one_prefix

    assert _one_prefix("tailguard: tailguard: engine lost") == "tailguard: engine lost"
    assert _one_prefix("tailguard: tailguard: tailguard: x") == "tailguard: x"
    assert _one_prefix("tailguard: fine") == "tailguard: fine"


def test_cli_error_is_one_line_with_one_prefix(monkeypatch, capsys):
    import tailguard.cli
    from tailguard.engine import EngineUnavailable

    def missing():
        raise EngineUnavailable("the engine needs Node.js >= 20 (no `node` on PATH). Fix: install Node.js.")

    monkeypatch.setattr(tailguard.cli, "engine_command", missing)
    assert tailguard.cli.main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert err.count("tailguard") == 1 and err.startswith("tailguard: the engine needs Node.js >= 20") and err.count("\n") == 1
