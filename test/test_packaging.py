"""Install like a user, outside the checkout and offline: the wheel (built from the sdist) trains a 3-step tiny
GRPO with `attach` on the engine it carries, and `tailguard report` renders its run; the npm tarball installs
into an empty directory, `npx tailguard doctor` passes, and a TypeScript consumer compiles against its types.

Cost control: the test venv does not reinstall torch/trl. A `.pth` line puts the base venv's site-packages
*after* the test venv's own (its `.pth` files, including the editable `tailguard`, are not processed), and the
wheel is installed with `--no-deps --no-index`. The run then proves that the wheel is what is used: the
imported package and the engine both live in the test venv, and nothing may reach a package registry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "python-shim" / "tests" / "tiny.py"
NO_REGISTRY = {  # any registry access fails fast instead of hanging or succeeding
    "npm_config_offline": "true",
    "npm_config_registry": "http://127.0.0.1:9/",
    "PIP_NO_INDEX": "1",
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    "HF_HUB_OFFLINE": "1",
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAILGUARD_", "PYTHON")) and k != "VIRTUAL_ENV"}
    env.update(NO_REGISTRY)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT)))
    env.update(extra)
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("packaging")


@pytest.fixture(scope="module")
def wheel(work: Path) -> Path:
    """sdist from the checkout, then the wheel from the unpacked sdist (reusing the checkout's node_modules)."""
    dist = work / "dist"
    code = f"from setuptools import build_meta as b; print(b.build_sdist({str(dist)!r}))"
    sdist = dist / _run([sys.executable, "-c", code], cwd=ROOT).stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        tar.extractall(work / "src", filter="data")
    src = next((work / "src").iterdir())
    assert (src / "ts-core" / "src" / "cli.ts").is_file() and (src / "package-lock.json").is_file()
    (src / "node_modules").symlink_to((ROOT / "node_modules").resolve())  # stands in for `npm ci` (offline)
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", dist], cwd=src)
    [whl] = dist.glob("tailguard-*.whl")
    return whl


def test_wheel_is_a_platform_wheel_carrying_the_engine(wheel: Path):
    import zipfile

    version = json.loads((ROOT / "package.json").read_text())["version"]
    assert wheel.name.startswith(f"tailguard-{version}-py3-none-")
    if sys.platform.startswith("linux"):
        assert "manylinux_" in wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert "tailguard/_engine/cli.mjs" in names and "tailguard/_engine/policy/default.yaml" in names
    assert "tailguard/_engine/ui-worker.mjs" in names
    assert "tailguard/_engine/kernel.wasm" in names  # beside the chunks, or the engine silently runs the JS kernel
    assert sum(n.endswith("addon.node") for n in names) == 1  # one prebuilt: the platform's
    assert "tailguard/py.typed" in names and any(n.endswith("licenses/LICENSE") for n in names)
    assert not any("/ts-core/" in n or n.endswith(".ts") for n in names)


@pytest.fixture(scope="module")
def venv(work: Path, wheel: Path) -> Path:
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=work).stdout.strip())
    (site / "base-venv.pth").write_text(sysconfig.get_path("purelib") + "\n")  # torch, trl, pyzmq, ... (not tailguard)
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-index", "--no-deps", "--force-reinstall",
          wheel], cwd=work)
    return venv


TRAIN = r'''
import json, os, sys
from pathlib import Path
sys.path.insert(0, os.getcwd())
import tailguard, tailguard.engine
from tiny import build_tiny_lm, length_reward, prompt_dataset
from trl import GRPOConfig, GRPOTrainer

venv = Path(sys.prefix).resolve()
assert Path(tailguard.__file__).resolve().is_relative_to(venv), tailguard.__file__
cmd = tailguard.engine.engine_command()
assert Path(cmd[1]).resolve().is_relative_to(venv) and cmd[1].endswith("_engine/cli.mjs"), cmd
model, tok = build_tiny_lm("model")
args = GRPOConfig(output_dir="out", per_device_train_batch_size=4, num_generations=4, max_steps=3,
                  max_completion_length=8, logging_steps=1, report_to="none", bf16=False, save_strategy="no",
                  seed=0, beta=0.1)
trainer = GRPOTrainer(model="model", processing_class=tok, reward_funcs=length_reward, args=args,
                      train_dataset=prompt_dataset(12))
cb = tailguard.attach(trainer, run_id="pip-run", log_wait_s=10.0)
trainer.train()
logs = [h for h in trainer.state.log_history if "loss" in h]
print(json.dumps({"logs": logs, "stats": cb.last_client.stats}))
'''


def test_wheel_trains_offline_outside_the_checkout(work: Path, venv: Path):
    run = work / "run"
    run.mkdir()
    shutil.copy(TINY, run / "tiny.py")
    (run / "train.py").write_text(TRAIN)
    # --ui: the live page runs in a worker thread, a separate bundled entry (ui-worker.mjs) of the engine.
    r = _run([venv / "bin" / "python", "train.py"], cwd=run, timeout=400, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
             TAILGUARD_ENGINE_ARGS="--ui 0")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["stats"]["sent"] == 3 and out["stats"]["dropped"] == 0, out["stats"]
    logs = out["logs"]
    assert len(logs) == 3
    for i, entry in enumerate(logs, start=1):  # step N's metrics in step N's log line, a curated headline set
        keys = [k for k in entry if k.startswith("tailguard/")]
        assert entry.get("tailguard/metrics_step") == i, entry
        assert "tailguard/policy_vs_ref/post_tool/abs_q99" in entry or "tailguard/policy_vs_ref/all/abs_q99" in entry
        assert len(keys) <= 24, keys
    assert "dashboard listening" in (run / "runs" / "engine.log").read_text()
    store = run / "runs" / "pip-run"
    assert (store / "metrics.jsonl").stat().st_size > 0
    html = run / "report.html"
    _run([venv / "bin" / "tailguard", "report", store, "-o", html], cwd=run)
    assert html.stat().st_size > 10_000 and "pip-run" in html.read_text()


@pytest.fixture(scope="module")
def npm_install(work: Path) -> Path:
    """`npm pack`, then install the tarball into an empty directory with the registry unreachable.

    The third-party runtime dependency (zeromq, with cmake-ts and node-addon-api) is packed from the
    checkout's node_modules: a user's install gets it from the registry; this test must work offline."""
    packs = work / "packs"
    packs.mkdir()
    npm = shutil.which("npm")
    _run([npm, "pack", "--pack-destination", packs], cwd=ROOT)
    deps = [(ROOT / "node_modules" / d).resolve() for d in ("zeromq", "cmake-ts", "node-addon-api")]
    _run([npm, "pack", "--ignore-scripts", "--pack-destination", packs, *deps], cwd=work)
    app = work / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"name": "consumer", "private": True, "type": "module"}))
    tarballs = sorted(packs.glob("*.tgz"))
    _run([npm, "install", "--offline", "--no-audit", "--no-fund", *tarballs], cwd=app)
    return app


def test_npm_tarball_installs_offline_and_runs(npm_install: Path):
    app = npm_install
    pkg = app / "node_modules" / "tailguard"
    files = {p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file()}
    assert "dist/engine/cli.mjs" in files and "dist/types/index.d.ts" in files and "LICENSE" in files
    assert not any(f.startswith(("ts-core/", "python-shim/", "test/")) for f in files), sorted(files)[:20]
    r = _run([shutil.which("npx"), "--offline", "tailguard", "doctor"], cwd=app)
    assert "zeromq        ok" in r.stdout and "node          ok" in r.stdout, r.stdout
    r = _run(["node", "--input-type=module", "-e", "const m = await import('tailguard'); console.log(m.VERSION)"], cwd=app)
    assert r.stdout.strip() == json.loads((ROOT / "package.json").read_text())["version"]


CONSUMER = """
import { VERSION, PAIRS, RunStats, Controller, loadPolicy, decodeMessage, type PairName, type StepResult } from 'tailguard';
const pair: PairName = PAIRS[0];
const stats = new RunStats({ worldSize: 1 });
const controller = new Controller(loadPolicy());
const done: StepResult[] = stats.finalizeReady(Date.now());
export const summary = [VERSION, pair, done.length, typeof controller.onStepResult, typeof decodeMessage].join(' ');
"""


def test_typescript_consumer_compiles_against_the_types(npm_install: Path):
    app = npm_install
    (app / "consumer.ts").write_text(CONSUMER)
    (app / "tsconfig.json").write_text(json.dumps({"compilerOptions": {
        "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext", "strict": True,
        "skipLibCheck": False, "noEmit": True, "types": ["node"], "typeRoots": [str(ROOT / "node_modules" / "@types")],
    }, "include": ["consumer.ts"]}))
    _run(["node", ROOT / "node_modules" / "typescript" / "bin" / "tsc", "-p", "."], cwd=app)
    # A wrong type must fail, or the check above proves nothing.
    (app / "consumer.ts").write_text(CONSUMER + "\nconst bad: PairName = 'policy_vs_nothing';\n")
    r = subprocess.run(["node", str(ROOT / "node_modules" / "typescript" / "bin" / "tsc"), "-p", "."], cwd=app,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "policy_vs_nothing" in r.stdout
