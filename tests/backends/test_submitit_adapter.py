"""The adapter around submitit's private functions holds for the submitit versions it supports.

When submitit moves past that range, these fail first (the range in ``pyproject.toml`` keeps pip
from installing such a version meanwhile), saying which private part changed.
"""

from __future__ import annotations

import inspect
from importlib import metadata
from pathlib import Path

import tomllib
from conftest import REPO
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from launcher.backends import submitit_adapter
from launcher.backends.submitit_adapter import SUPPORTED_SUBMITIT


def test_installed_submitit_is_in_the_supported_range_and_pyproject_asks_for_it() -> None:
    installed = Version(metadata.version("submitit"))
    assert installed in SpecifierSet(SUPPORTED_SUBMITIT), installed
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (wanted,) = [Requirement(r) for r in project["dependencies"] if r.startswith("submitit")]
    assert wanted.specifier == SpecifierSet(SUPPORTED_SUBMITIT)


def test_the_private_functions_it_calls_still_have_their_shape() -> None:
    import submitit
    from submitit.slurm import slurm

    assert list(inspect.signature(slurm._make_sbatch_string).parameters)[:2] == [
        "command",
        "folder",
    ]
    executor_class = submitit.SlurmExecutor
    assert list(inspect.signature(executor_class._make_submission_file_text).parameters) == [
        "self",
        "command",
        "uid",
    ]
    assert isinstance(inspect.getattr_static(executor_class, "_submitit_command_str"), property)
    assert "self.affinity()" in inspect.getsource(executor_class.__init__)  # the srun check


def test_scripts_come_out_with_the_job_lines_and_the_command(tmp_path: Path) -> None:
    parameters = {"job_name": "adapter", "nodes": 2, "ntasks_per_node": 1, "time": 5}
    script = submitit_adapter.standalone_script("python -m x 'a b'", tmp_path, parameters)
    assert script.startswith("#!/bin/bash")
    for line in ("#SBATCH --nodes=2", "#SBATCH --job-name=adapter", "#SBATCH --time=5"):
        assert line in script
    assert "srun" in script and "python -m x 'a b'" in script

    executor = submitit_adapter.script_executor(tmp_path, "python", max_num_timeout=3)
    executor.update_parameters(**parameters)
    submitted = submitit_adapter.submission_script(executor)
    assert "#SBATCH --nodes=2" in submitted and "submitit.core._submit" in submitted
    assert "%j" in submitted  # the job id is filled in by sbatch
