"""Option validation: one defaults literal, clear messages naming the option, env precedence."""

import pytest

from tailguard.options import DEFAULTS, OptionsError, default_run_id, parse_options, resolve_endpoint


def test_defaults():
    o = parse_options()
    assert o == DEFAULTS
    assert o.pairs == ("policy_vs_old", "policy_vs_ref", "old_vs_rollout")
    assert o.fail_mode == "fail_open" and o.send_budget_s == 0.05 and o.queue_max_steps == 8
    assert o.sketch_per_rank is None


def test_sketch_per_rank_default_follows_the_world_size():
    from tailguard.sketch import per_rank_enabled

    assert per_rank_enabled(None, 1) and per_rank_enabled(None, 64) and not per_rank_enabled(None, 65)
    assert per_rank_enabled(True, 4096) and not per_rank_enabled(False, 2)
    assert parse_options(sketch_per_rank=False).sketch_per_rank is False


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"send_budget_s": -1}, "'send_budget_s': expected a number >= 0.0"),
        ({"send_budget_s": float("nan")}, "send_budget_s"),
        ({"send_budget_s": "fast"}, "expected a number"),
        ({"queue_max_steps": 0}, "'queue_max_steps': expected an int >= 1"),
        ({"queue_max_steps": 2.5}, "expected an int"),
        ({"connect_timeout_s": 0}, "expected a number > 0.0"),
        ({"fail_mode": "open"}, "one of ['fail_open', 'fail_closed']"),
        ({"pairs": ["policy_vs_new"]}, "'pairs': expected a list drawn from"),
        ({"pairs": "policy_vs_old"}, "a list of str"),
        ({"log_metrics": 1}, "'log_metrics': expected True (the headline set), False or 'full'"),
        ({"run_id": "bad id!"}, "'run_id'"),
        ({"endpont": "x"}, "'endpont': expected one of"),
        ({"sketch_per_rank": 1}, "'sketch_per_rank': expected None (on up to 64 ranks), True or False"),
    ],
)
def test_bad_values_are_named(kwargs, fragment):
    with pytest.raises(OptionsError) as e:
        parse_options(**kwargs)
    assert fragment in str(e.value)
    assert e.value.code == "E_OPTION"


def test_env_run_id_and_argument_precedence(monkeypatch):
    monkeypatch.setenv("TAILGUARD_RUN_ID", "from-env")
    assert parse_options().run_id == "from-env"
    assert parse_options(run_id="from-arg").run_id == "from-arg"


def test_endpoint_resolution(monkeypatch):
    monkeypatch.delenv("TAILGUARD_ENDPOINT", raising=False)
    with pytest.raises(OptionsError, match="TAILGUARD_ENDPOINT"):
        resolve_endpoint(None)
    monkeypatch.setenv("TAILGUARD_ENDPOINT", "ipc:///tmp/x.sock")
    assert resolve_endpoint(None) == "ipc:///tmp/x.sock"
    assert resolve_endpoint("tcp://127.0.0.1:1") == "tcp://127.0.0.1:1"
    with pytest.raises(OptionsError, match="ZeroMQ endpoint"):
        resolve_endpoint("localhost:5599")


def test_default_run_id_is_rank_independent():
    class A:
        run_name = None
        output_dir = "/tmp/runs/my run (v2)/"

    assert default_run_id(A()) == "my-run-v2"
    A.run_name = "grpo/tools"
    assert default_run_id(A()) == "grpo-tools"
