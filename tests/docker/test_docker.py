"""The container image, checked without a container engine (none is available here): the
Dockerfile installs exactly the versions the tests passed with, from a CUDA base, as non-root.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from launcher.backends.submitit_adapter import slurm_task

DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
LOCK = DOCKER / "requirements.lock"
TEST_LOCK = DOCKER / "requirements-test.lock"
# `make test LOCK=none` runs the suite on the newest releases, before the locks are rewritten.
NEWEST = os.environ.get("LAUNCHER_LOCK") == "none"
not_against_newest = pytest.mark.skipif(
    NEWEST, reason="LOCK=none: testing the newest releases, which `python docker/lock.py` pins next"
)


def project_requirements() -> list[Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [Requirement(line) for line in data["project"]["dependencies"]]


def lock_pins(lock: Path = LOCK) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        found = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;,<>=!~*]*)", line)
        assert found, f"{lock.name}: {line!r} is not an exact pin (name==version)"
        name = canonicalize_name(found.group(1))
        assert name not in pins, f"{lock.name}: {name} is pinned twice"
        pins[name] = Version(found.group(2))
    return pins


def load_lock_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("lock", DOCKER / "lock.py")
    assert spec and spec.loader
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    return lock


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_every_project_dependency_is_pinned_within_its_range() -> None:
    pins = lock_pins()
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} (pyproject.toml) is not pinned in {LOCK.name}"
        assert requirement.specifier.contains(pins[name]), (
            f"{name}=={pins[name]} does not satisfy pyproject.toml's {requirement}"
        )


@not_against_newest
def test_pins_are_the_versions_the_tests_ran_with() -> None:
    """`make setup` installs with the locks as constraints, so this holds by construction; it
    fails when a lock was edited by hand and the environment not reinstalled (`make setup`
    reinstalls whenever a lock changes), or when pytest runs in another environment."""
    differ = []
    for lock in (LOCK, TEST_LOCK):
        for name, pinned in lock_pins(lock).items():
            installed = Version(metadata.version(name)).public
            if Version(installed) != pinned:
                differ.append(f"{name}: {lock.name} {pinned}, installed {installed}")
    assert not differ, "run `make setup` (or `python docker/lock.py`):\n" + "\n".join(differ)


@pytest.mark.process
def test_make_setup_installs_with_the_locks_as_constraints() -> None:
    """One pinned environment: CI, `make smoke`/`make test` and the image take the same versions;
    LOCK=none is the documented way to try the newest releases, in a separate environment."""
    pinned = subprocess.run(
        ["make", "-n", "-B", "setup", "LOCK=pinned"], cwd=REPO, capture_output=True, text=True
    )
    assert pinned.returncode == 0, pinned.stderr
    (install,) = [line for line in pinned.stdout.splitlines() if '-e ".[test]"' in line]
    assert f"--constraint {LOCK.relative_to(REPO)}" in install, install
    assert f"--constraint {TEST_LOCK.relative_to(REPO)}" in install, install
    assert "pip check" in pinned.stdout
    torch = next(str(v) for n, v in lock_pins().items() if n == "torch")
    assert f'"torch=={torch}"' in pinned.stdout, "torch is installed at the lock's version"
    newest = subprocess.run(
        ["make", "-n", "-B", "setup", "LOCK=none"], cwd=REPO, capture_output=True, text=True
    )
    assert "--constraint" not in newest.stdout and ".venv-newest/bin/python" in newest.stdout
    setup_rule = (REPO / "Makefile").read_text().split("$(VENV)/.installed:", 1)[1].splitlines()[0]
    assert "$(LOCK_FILES)" in setup_rule, "a changed lock must reinstall the environment"


def test_dockerfile_starts_from_cuda_installs_the_lock_and_drops_root() -> None:
    steps = instructions()
    args = dict(
        value.split("=", 1) for kind, value in steps if kind == "ARG" and "=" in value.split()[0]
    )
    (base,) = [value for kind, value in steps if kind == "FROM"]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert re.fullmatch(r"nvidia/cuda:[\d.]+-(cudnn-)?runtime-ubuntu[\d.]+", base), base

    runs = " && ".join(value for kind, value in steps if kind == "RUN")
    installs = [
        shlex.split(command.strip())
        for command in re.split(r"&&|;", runs)
        if command.strip().startswith("pip install")
    ]
    assert installs, "the Dockerfile installs nothing with pip"
    for words in installs:
        # Arguments that name packages: exact pins, the lock, or the project itself (--no-deps).
        packages = [w for w in words[2:] if not w.startswith("-") and not w.startswith("${")]
        for word in packages:
            assert word in {".", "docker/requirements.lock"} or "$(grep" in word, (
                f"`{' '.join(words)}` installs {word!r}, which is not from the lock"
            )
        if "." in packages:
            assert "--no-deps" in words, "the project must not resolve its dependencies again"
    assert any("--requirement" in words or "-r" in words for words in installs)
    assert "grep -E '^torch==' docker/requirements.lock" in runs, "torch at the lock's version"
    index = args.get("TORCH_INDEX", "")
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", index), index
    cuda = re.search(r"cuda:(\d+)\.(\d+)", base)
    assert cuda and index.endswith(f"cu{cuda.group(1)}{cuda.group(2)}"), "torch matches CUDA"

    users = [value for kind, value in steps if kind == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the image must not run as root"
    assert steps[-1][0] in {"CMD", "ENTRYPOINT"} and ("ENTRYPOINT", '["launcher"]') in steps


def test_readme_says_the_image_was_not_built_here() -> None:
    text = (DOCKER / "README.md").read_text()
    assert "Not built here" in text
    for shown in ("docker build", "--gpus all", "--container-image", "apptainer build", "--nv"):
        assert shown in text


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("n1", ["n1"]),
        ("n[1-2]", ["n1", "n2"]),
        ("gpu[008-011],cpu1", ["gpu008", "gpu009", "gpu010", "gpu011", "cpu1"]),
        ("rack[1-2]-n[01,03]", ["rack1-n01", "rack1-n03", "rack2-n01", "rack2-n03"]),
    ],
)
@pytest.mark.process
def test_node_list_expands_without_scontrol(
    nodelist: str, hosts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image has no SLURM commands; the node task finds the rendezvous host through
    submitit's parser, the way `scontrol show hostnames` would (compared with it where it
    exists)."""
    monkeypatch.setenv("SLURM_JOB_NODELIST", nodelist)
    for name, value in {
        "SLURM_JOB_ID": "7",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NUM_NODES": "4",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    task = slurm_task()
    assert task.hosts == hosts
    assert (task.job_id, task.node_rank, task.num_nodes) == ("7", 1, 4)
    if shutil.which("scontrol"):
        shown = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
        )
        assert shown.stdout.split() == hosts


def test_build_context_leaves_local_files_out() -> None:
    lines = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "start from nothing, then allow what the image copies"
    for kind, value in instructions():
        if kind == "COPY":
            for source in value.split()[:-1]:
                assert f"!{source}" in rules or f"!{source}/**" in rules, f"{source} is ignored"
    assert not [rule for rule in rules if rule.startswith(("!.venv", "!runs", "!.git"))]


@not_against_newest
def test_lock_covers_the_installed_dependency_tree() -> None:
    """Nothing the project or its tests need is left for pip to choose: the locks hold the whole
    tree that `docker/lock.py` walks, not only the top-level names, and nothing twice."""
    lock = load_lock_module()
    runtime = set(lock.closure(project_requirements()))
    assert runtime == set(lock_pins())
    tests = set(lock.closure(lock.project_requirements("test")))
    assert set(lock_pins(TEST_LOCK)) == tests - runtime
    assert {"pytest", "hypothesis", "ruff"} <= set(lock_pins(TEST_LOCK))
