"""Hardening: shell safety, secrets, private run directories, remote code, and local paths.

One local smoke run carries hostile strings in its paths and environment and secrets in its
environment; the other tests are quick and need no training.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import stat
import sys
from pathlib import Path

import pytest
import yaml
from conftest import RECIPES, REPO, launcher
from slurm_helpers import HOSTILE

from launcher.errors import LauncherError
from launcher.paths import local_path_reason
from launcher.plan.build import build_plan
from launcher.recipe.loader import load_recipe
from launcher.recipe.schema import TokenizerSection
from launcher.secret_env import HIDDEN, mask, presence_line, secret_values

# A folder name that is hostile on its own (no '/'): quotes, `$(...)`, backticks, `;`, a newline.
# Not `$HOME`: the datasets library expands it in data paths, so the preflight refuses it there.
HOSTILE_NAME = HOSTILE.format(marker="PWNED").replace("$HOME", "end")


def no_traceback(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------
# Run names and local paths


@pytest.mark.process
@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "x;touch PWNED"])
def test_run_name_cannot_leave_the_runs_directory(name: str, workdir: Path) -> None:
    result = launcher("run", "mlm-scratch", "--smoke", f"name={name}", cwd=workdir, check=False)
    assert result.returncode == 2, result.stderr
    assert "name:" in result.stderr and "plain folder name" in result.stderr
    no_traceback(result)
    assert list(workdir.parent.rglob("*")) == [workdir], "nothing may be created"


@pytest.mark.process
def test_missing_local_paths_are_refused_before_launch(workdir: Path) -> None:
    """`run` and `submit` check local data, model and tokenizer paths; `plan` only resolves."""
    (workdir / "models").mkdir()
    overrides = [
        "data.files.train=corpus.txt",
        "model.pretrained=./models/missing-bert",
        "tokenizer.train=null",
        "tokenizer.pretrained=models/missing-tokenizer",
    ]
    for command in (["run"], ["submit", "--cluster", "dev"]):
        result = launcher(*command, "mlm-scratch", *overrides, cwd=workdir, check=False)
        assert result.returncode == 2, result.stdout + result.stderr
        no_traceback(result)
        error = result.stderr
        assert f"data.files.train: {workdir / 'corpus.txt'} does not exist" in error
        assert (
            "model.pretrained: ./models/missing-bert does not exist (a local folder, since it "
            "starts with ./); hub ids look like org/name" in error
        )
        assert (
            "tokenizer.pretrained: models/missing-tokenizer does not exist (a local folder, "
            "since it starts with models/, a folder here)" in error
        )
        assert not (workdir / "runs").exists(), "refused before the run directory is made"
    assert launcher("plan", "mlm-scratch", *overrides, cwd=workdir).returncode == 0

    (workdir / "corpus.txt").write_text("some text\n")
    result = launcher("run", "mlm-scratch", *overrides[:2], cwd=workdir, check=False)
    assert result.returncode == 2 and "data.files.train" not in result.stderr


@pytest.mark.process
@pytest.mark.parametrize(
    ("path", "what"),
    [("$HOME/corpus.txt", "a $ before a name"), ("c*.txt", "the glob character *")],
)
def test_data_paths_the_datasets_library_would_rewrite_are_refused(
    path: str, what: str, workdir: Path
) -> None:
    (workdir / path).parent.mkdir(parents=True, exist_ok=True)
    (workdir / path).write_text("some text\n")  # it exists; datasets would still read another
    result = launcher("run", "mlm-scratch", f"data.files.train={path}", cwd=workdir, check=False)
    assert result.returncode == 2, result.stderr
    assert f"data.files.train: {workdir / path} holds {what}" in result.stderr
    no_traceback(result)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("gpt2", None),
        ("distilbert/distilbert-base-uncased", None),
        ("models/bert", "starts with models/, a folder here"),
        ("./bert", "starts with ./"),
        ("../bert", "starts with ../"),
        ("/opt/models/bert", "starts with /"),
        ("~/bert", "starts with ~"),
        ("a/b/c", "has more than one '/'"),
    ],
)
def test_local_paths_and_hub_ids_are_told_apart(
    name: str, reason: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert local_path_reason(name) == reason


# ---------------------------------------------------------------------------------------------
# Remote code


def custom_code_folder(folder: Path) -> Path:
    """A local "hub repository" whose model, config and tokenizer classes are its own code."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder.mkdir()
    (folder / "configuration_tiny.py").write_text(
        "from transformers import MistralConfig\n\n\n"
        "class TinyConfig(MistralConfig):\n    model_type = 'tiny-custom'\n"
    )
    (folder / "modeling_tiny.py").write_text(
        "from transformers import MistralForCausalLM\n\n"
        "from .configuration_tiny import TinyConfig\n\n\n"
        "class TinyForCausalLM(MistralForCausalLM):\n    config_class = TinyConfig\n"
    )
    (folder / "tokenization_tiny.py").write_text(
        "from transformers import PreTrainedTokenizerFast\n\n\n"
        "class TinyTokenizerFast(PreTrainedTokenizerFast):\n    pass\n"
    )
    config = {
        "model_type": "tiny-custom",
        "architectures": ["TinyForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_tiny.TinyConfig",
            "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM",
        },
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "vocab_size": 16,
    }
    (folder / "config.json").write_text(json.dumps(config))
    vocab = {token: i for i, token in enumerate(["[UNK]", "[PAD]", "</s>", "a", "b", "c"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "TinyTokenizerFast",
        "auto_map": {"AutoTokenizer": [None, "tokenization_tiny.TinyTokenizerFast"]},
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "eos_token": "</s>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    # Weights, written by the folder's own classes (trusted here: the test wrote that code).
    from transformers import AutoConfig, AutoModelForCausalLM

    loaded = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    AutoModelForCausalLM.from_config(loaded, trust_remote_code=True).save_pretrained(folder)
    return folder


def test_remote_code_runs_only_when_the_recipe_trusts_it(tmp_path: Path) -> None:
    """The rank's own model and tokenizer loaders, real transformers: a folder that ships code
    is refused by default with the recipe key named, and loads with model.trust_remote_code."""
    from launcher.ranks.model import build_model
    from launcher.ranks.tokenizer import prepare_tokenizer
    from launcher.ranks.tokenizer_stage import load_saved_tokenizer, save_tokenizer

    folder = custom_code_folder(tmp_path / "custom-repo")
    recipe = load_recipe(RECIPES / "sft-mistral.yaml", [f"model.pretrained={folder}"])
    assert recipe.model.trust_remote_code is False
    assert "remote code    off" in build_plan(recipe, tmp_path / "run").summary()

    def tokenizer(trust: bool):
        return prepare_tokenizer(
            TokenizerSection(), model_pretrained=str(folder), texts=list, trust_remote_code=trust
        )

    with pytest.raises(LauncherError, match=r"model\.trust_remote_code=true") as refused:
        tokenizer(False)
    assert str(refused.value).startswith("model.pretrained (tokenizer.pretrained is not set):")
    trusted_tokenizer = tokenizer(True)
    assert type(trusted_tokenizer).__name__ == "TinyTokenizerFast"

    with pytest.raises(LauncherError, match=r"model\.trust_remote_code=true") as refused:
        build_model(recipe, trusted_tokenizer)
    assert str(refused.value).startswith(f"model.pretrained: {str(folder)!r} ships its own")

    recipe.model.trust_remote_code = True
    assert "remote code    trusted" in build_plan(recipe, tmp_path / "run").summary()
    model = build_model(recipe, trusted_tokenizer)
    assert type(model).__name__ == "TinyForCausalLM"
    assert model.config.pad_token_id == trusted_tokenizer.pad_token_id

    # The run's saved copy keeps the code, and the same trust is needed to load it again.
    save_tokenizer(trusted_tokenizer, tmp_path / "saved")
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_saved_tokenizer(tmp_path / "saved")
    saved = load_saved_tokenizer(tmp_path / "saved", trust_remote_code=True)
    assert type(saved).__name__ == "TinyTokenizerFast"


# ---------------------------------------------------------------------------------------------
# Secrets


def test_rank_log_hides_secret_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from launcher.ranks.logs import guard_secrets, rank_log

    token, own = f"hf_{secrets.token_hex(12)}", f"own-{secrets.token_hex(12)}"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("MY_SECRET", own)
    monkeypatch.delenv("UNSET_SECRET", raising=False)
    log = tmp_path / "rank-0.log"
    with rank_log(log):
        print(f"a library printed HF_TOKEN={token}")
        print(f"too early to know {own} is secret")
        line = guard_secrets(["MY_SECRET", "UNSET_SECRET"])
        print(line)
        print(f"now hidden: {own}", file=sys.stderr)
    text = log.read_text()
    assert token not in text and f"HF_TOKEN={HIDDEN}" in text
    assert f"too early to know {own}" in text, "declared secrets are hidden once declared"
    assert own not in text.split("too early")[1].split("\n", 1)[1]
    assert f"now hidden: {HIDDEN}" in text
    assert "secrets in the environment: HF_TOKEN, MY_SECRET" in line
    assert line.endswith("declared but not set: UNSET_SECRET")
    assert secret_values(["SHORT"], {"SHORT": "12345"}) == [], "too short to be a real secret"
    assert mask(f"{token}!", secret_values([], {"HF_TOKEN": token})) == f"{HIDDEN}!"
    assert presence_line([], {}) == "secrets in the environment: none (values never written)"


@pytest.mark.parametrize("value", ["s3cr3t", "s3cr3tX"], ids=["6 characters", "7 characters"])
def test_short_real_secrets_are_masked_everywhere_in_a_line(value: str) -> None:
    """Six characters is the shortest value hidden (a short API key or password); shorter ones
    ("1", "true", "12345") would garble the logs and are left alone."""
    environ = {"MY_SECRET": value, "FLAG": "true1"}
    values = secret_values(["MY_SECRET", "FLAG"], environ)
    assert values == [value]
    assert mask(f"pw={value}, again {value}.", values) == f"pw={HIDDEN}, again {HIDDEN}."
    assert mask("flag true1", values) == "flag true1"


def test_a_secret_containing_another_is_masked_whole() -> None:
    """Each value nests the next shorter one: masking a shorter one first would leave the rest
    of the longer ones in the log (``hf_***XYZ``). Whatever order the environment gives them
    in, the longest goes first."""
    names = ["A_SECRET", "B_SECRET", "C_SECRET", "HF_TOKEN"]
    nested = ["abcdef", "abcdef12", "hf_abcdef12XYZ", "user:hf_abcdef12XYZ@host"]
    for order in (nested, nested[::-1], [nested[2], nested[0], nested[3], nested[1]]):
        environ = dict(zip(names, order, strict=True))
        values = secret_values(names[:3], environ)
        assert values == nested[::-1]
        line = " ".join(f"[{value}]" for value in order)
        assert mask(line, values) == " ".join(f"[{HIDDEN}]" for _ in order)


def tree_modes(root: Path) -> dict[str, int]:
    paths = [p for p in [root, *root.rglob("*")] if not p.is_symlink()]
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in paths}


@pytest.mark.integration
def test_hostile_values_and_secrets_in_a_local_run(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One smoke run whose folders, data paths and environment spell shell commands, with
    secrets in its environment: nothing they spell runs, training works, the ranks get the
    secrets, no file of the run holds one, and the run directory is private to its owner."""
    marker = tmp_path / "PWNED"
    assert " " not in str(marker), "a space would split the command the marker test relies on"
    odd = workdir / HOSTILE_NAME
    (odd / "data").mkdir(parents=True)
    for split, count in (("train", 48), ("test", 16)):
        rows = ["text,label"] + [
            f"{'good fine great' if i % 2 else 'bad awful poor'} review {i},{i % 2}"
            for i in range(count)
        ]
        (odd / "data" / f"{split}.csv").write_text("\n".join(rows) + "\n")
    recipe = yaml.safe_load((RECIPES / "classification-imdb.yaml").read_text())
    recipe["data"].update(dataset=None, files={"train": "data/train.csv", "test": "data/test.csv"})
    recipe["secrets"] = ["LAUNCHER_TEST_SECRET", "LAUNCHER_UNSET_SECRET"]
    recipe["smoke"] = {"max_steps": 2, "checkpoint_every": 2, "num_samples": 32}
    (odd / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run_dir = odd / HOSTILE_NAME / "run"

    values = {
        "HF_TOKEN": f"hf_{secrets.token_hex(16)}",
        "WANDB_API_KEY": secrets.token_hex(20),
        "LAUNCHER_TEST_SECRET": f"{secrets.token_hex(16)} {HOSTILE.format(marker=marker)}",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LAUNCHER_TEST_VALUE", HOSTILE.format(marker=marker))
    monkeypatch.delenv("LAUNCHER_UNSET_SECRET", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    previous = os.umask(0)  # the most permissive umask: privacy must not depend on the user's
    try:
        out = launcher(
            "run", str(odd / "recipe.yaml"), "--smoke", "--run-dir", str(run_dir), cwd=odd
        )
    finally:
        os.umask(previous)

    assert json.loads((run_dir / "result.json").read_text())["global_step"] == 2
    rank_log = (run_dir / "logs" / "rank-0.log").read_text()
    assert (
        "secrets in the environment: HF_TOKEN, WANDB_API_KEY, LAUNCHER_TEST_SECRET (values never "
        "written); declared but not set: LAUNCHER_UNSET_SECRET" in rank_log
    )
    script = (run_dir / "plan" / "command.sh").read_text()
    command = shlex.split(script.split("\nexec ", 1)[1])  # the path's newline stays quoted
    assert command[-1] == str(run_dir) and command[-4] == str(run_dir / "plan" / "accelerate.yaml")
    assert not list(tmp_path.rglob("PWNED")), "a hostile string ran as a command"

    # Every byte the run wrote, and what the launcher printed: the random part of each secret
    # (found even if a file escaped the rest) appears nowhere.
    written = [(p, p.read_bytes()) for p in run_dir.rglob("*") if p.is_file()]
    written.append((Path("<launcher output>"), (out.stdout + out.stderr).encode()))
    assert len(written) > 20
    for name, value in values.items():
        core = value.split(" ")[0].removeprefix("hf_").encode()
        leaks = [str(path) for path, data in written if core in data]
        assert not leaks, f"{name} was written into {leaks}"

    modes = tree_modes(run_dir)
    for path, mode in modes.items():
        is_dir = (run_dir / path).is_dir()
        assert mode == 0o700 if is_dir else mode & 0o077 == 0, f"{path}: {oct(mode)}"
    assert {"checkpoints", "model", "tokenizer", "logs"} <= set(modes)


# ---------------------------------------------------------------------------------------------
# Batch scripts (no cluster needed: `plan --cluster` only writes the script)

needs_slurm_tools = pytest.mark.skipif(
    shutil.which("srun") is None, reason="submitit needs the SLURM tools (srun) to make a script"
)


def profile_with(workdir: Path, **changes: object) -> Path:
    data = yaml.safe_load((REPO / "cluster" / "dev.yaml").read_text())
    data.update(changes)
    path = workdir / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.process
@needs_slurm_tools
def test_batch_script_quotes_the_interpreter(workdir: Path) -> None:
    python = str(workdir / f"{HOSTILE_NAME.splitlines()[0]} env" / "bin" / "python")
    profile = profile_with(workdir, python=python)
    out = launcher("plan", "mlm-scratch", "--smoke", "--cluster", str(profile), cwd=workdir)
    script = out.stdout.split("batch script for cluster dev:\n", 1)[1]
    (line,) = [line for line in script.splitlines() if "submitit.core._submit" in line]
    words = shlex.split(line)
    assert words[words.index("-u") - 1] == python


@pytest.mark.process
@needs_slurm_tools
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"env": {"HF_TOKEN": "hf_x"}}, "env.HF_TOKEN: is a secret"),
        ({"env": {"X;touch PWNED": "1"}}, "env.X;touch PWNED: not an environment variable"),
        ({"partition": "debug\ntouch PWNED"}, "partition: 'debug\\ntouch PWNED' holds a line"),
    ],
)
def test_batch_script_refuses_what_quoting_cannot_fix(
    changes: dict, message: str, workdir: Path
) -> None:
    profile = profile_with(workdir, **changes)
    result = launcher(
        "plan", "mlm-scratch", "--smoke", "--cluster", str(profile), cwd=workdir, check=False
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
    no_traceback(result)


@pytest.mark.process
@needs_slurm_tools
def test_batch_script_refuses_a_run_dir_with_a_line_break(workdir: Path) -> None:
    run_dir = workdir / HOSTILE_NAME
    result = launcher(
        "submit", "mlm-scratch", "--smoke", "--cluster", "dev", "--run-dir", str(run_dir),
        cwd=workdir, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "--run-dir:" in result.stderr, result.stderr
    assert "holds a line break" in result.stderr
    assert not run_dir.exists()
    no_traceback(result)


@pytest.mark.process
def test_output_into_a_closed_pipe_ends_quietly() -> None:
    """``launcher recipes | head -1``: the reader leaves early; no traceback, the shell's 141."""
    import subprocess

    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "launcher", "recipes"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
    finally:
        os.close(write)
    assert result.returncode == 141, result.stderr
    assert result.stderr == ""
