"""Wheel build hooks: put the bundled engine and its native ZeroMQ addon inside the `tailguard` package.

`pyproject.toml` holds the metadata; this file adds what a declarative config cannot:
- the version, read from package.json (one version for npm and PyPI);
- `build_py` runs `scripts/build-engine.mjs` (esbuild) and stages `tailguard/_engine/`: the bundled CLI, the
  default policy, and a trimmed `node_modules/zeromq` holding only the prebuilt addon that loads on this
  machine (plus cmake-ts's loader, which zeromq uses to find it);
- `bdist_wheel` marks the wheel non-pure and tags it for the addon's platform (linux x86_64 glibc ->
  manylinux_2_28_x86_64 for zeromq 6.8's addon, which needs GLIBC_2.25).
An editable install (`pip install -e .`) skips the staging: a checkout runs the engine from its sources.
Environment: TAILGUARD_WHEEL_PLAT overrides the platform tag (cross-builds).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent
VERSION = json.loads((ROOT / "package.json").read_text())["version"]
# manylinux policies (PEP 600) that auditwheel knows; the tag is the first one at or above the addon's glibc.
MANYLINUX = [(2, 17), (2, 28), (2, 31), (2, 34), (2, 35), (2, 39)]
_staged_plat: list[str] = []


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        sys.exit("building the tailguard wheel needs Node.js >= 20 and npm on PATH (the engine is bundled from source)")
    return node


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout


def _loaded_addon(node: str) -> Path:
    """The zeromq addon that Node on this machine actually loads (zeromq tries its prebuilts newest ABI first)."""
    code = "require('zeromq'); console.log(Object.keys(require.cache).find((k) => k.endsWith('.node')))"
    return Path(_run([node, "-e", code]).strip())


def _platform_tag(addon: Path) -> str:
    if os.environ.get("TAILGUARD_WHEEL_PLAT"):
        return os.environ["TAILGUARD_WHEEL_PLAT"]
    machine = platform.machine().lower()
    if sys.platform.startswith("linux"):
        arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
        needed = max((tuple(map(int, v)) for v in re.findall(rb"GLIBC_(\d+)\.(\d+)", addon.read_bytes())), default=(2, 17))
        major, minor = next((p for p in MANYLINUX if p >= needed), needed)
        return f"manylinux_{major}_{minor}_{arch}"
    if sys.platform == "darwin":
        return "macosx_11_0_arm64" if machine == "arm64" else "macosx_10_15_x86_64"
    if sys.platform == "win32":
        return "win_arm64" if machine == "arm64" else "win_amd64"
    raise SystemExit(f"no wheel platform tag known for {sys.platform}/{machine}; set TAILGUARD_WHEEL_PLAT")


def stage_engine(dest: Path) -> str:
    """Build the bundle and copy it, with the minimal zeromq it needs, to `dest`. Returns the platform tag."""
    node = _node()
    if not (ROOT / "node_modules" / "esbuild").is_dir():  # an sdist, or a checkout before `npm ci`
        npm = shutil.which("npm") or sys.exit("building the tailguard wheel needs npm on PATH")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=ROOT, check=True)
    subprocess.run([node, "scripts/build-engine.mjs", "--no-types"], cwd=ROOT, check=True)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(ROOT / "dist" / "engine", dest, ignore=shutil.ignore_patterns("*.map"))

    zmq_src = (ROOT / "node_modules" / "zeromq").resolve()  # node_modules may be a symlink
    addon = _loaded_addon(node)
    rel = addon.relative_to(zmq_src / "build").as_posix()
    zmq = dest / "node_modules" / "zeromq"
    for f in ["package.json", "LICENSE.txt", "LICENSE_MPL-2.0.txt"]:
        _copy(zmq_src / f, zmq / f)
    for f in (zmq_src / "lib").rglob("*.js"):
        if "ts3.7" not in f.parts:
            _copy(f, zmq / f.relative_to(zmq_src))
    _copy(addon, zmq / "build" / rel)
    manifest = json.loads((zmq_src / "build" / "manifest.json").read_text())
    keep = {k: v for k, v in manifest.items() if v.replace("\\", "/") == rel}
    (zmq / "build" / "manifest.json").write_text(json.dumps(keep))
    cmake_ts = (ROOT / "node_modules" / "cmake-ts").resolve()
    for f in ["package.json", "build/loader.js"]:
        _copy(cmake_ts / f, dest / "node_modules" / "cmake-ts" / f)
    # The staged engine must load its addon by itself, with nothing from the checkout on the resolution path.
    _run([node, "-e", "require(process.argv[1])", str(zmq.resolve())])
    return _platform_tag(addon)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


class BuildPyWithEngine(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        _staged_plat[:] = [stage_engine(Path(self.build_lib) / "tailguard" / "_engine")]


class NativeDistribution(Distribution):
    """The package carries a native addon: install it into platlib (the wheel's root), not as pure Python."""

    def has_ext_modules(self) -> bool:
        return True


class PlatformWheel(bdist_wheel):
    """A platform wheel with no CPython ABI: the addon is Node's, so any Python 3 on that platform can use it."""

    def get_tag(self) -> tuple[str, str, str]:
        if not _staged_plat:  # an editable install names its wheel too, without staging the engine
            return super().get_tag()
        return "py3", "none", _staged_plat[0]


setup(version=VERSION, distclass=NativeDistribution, cmdclass={"build_py": BuildPyWithEngine, "bdist_wheel": PlatformWheel})
