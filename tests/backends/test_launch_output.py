"""What a local launch shows of its agent's output: the lines below are real (a 2-rank and a
1-rank smoke run whose data held a label the recipe does not name; torch 2.13, accelerate 1.15).
A failed run shows its error once; accelerate's traceback, torchrun's ``ChildFailedError`` box
and the elastic agent's log lines stay in ``logs/launcher.log``."""

from __future__ import annotations

from launcher.backends.launch_output import LaunchOutput

RANK_LINES = """\
[launcher] world size 2, CPU, task classification
[launcher] rank 0: error: data.labels: label 'MAYBE' in the data is not one of ['NEGATIVE', 'POSITIVE']
"""
RANK_TRACEBACK = """\
[launcher] rank 1 failed:
Traceback (most recent call last):
  File "/work/main/launcher/ranks/entry.py", line 46, in main
    train(layout)
  File "/work/main/.venv/lib/python3.11/site-packages/torch/distributed/c10d_logger.py", line 83, in wrapper
    return func(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^^^
RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:7088.

"""
TORCHRUN = """\
W1202 08:28:02.901000 2560 .venv/lib/python3.11/site-packages/torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 2565 closing signal SIGTERM
E1202 08:28:02.920000 2560 .venv/lib/python3.11/site-packages/torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 1) local_rank: 0 (pid: 2564) of binary: /work/main/.venv/bin/python
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/work/main/.venv/lib/python3.11/site-packages/torch/distributed/launcher/api.py", line 383, in launch_agent
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
launcher.ranks.entry FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-12-02_08:28:02
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -15 (pid: 2565)  (SIGTERM)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 2565
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-02_08:28:02
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 2564)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""
ACCELERATE_ONE_PROCESS = """\
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/work/main/.venv/lib/python3.11/site-packages/accelerate/commands/launch.py", line 999, in simple_launcher
    raise subprocess.CalledProcessError(returncode=process.returncode, cmd=cmd)
subprocess.CalledProcessError: Command '['/work/main/.venv/bin/python', '-m', 'launcher.ranks.entry', '/tmp/failrun']' returned non-zero exit status 1.
"""


def sort(text: str) -> tuple[str, str]:
    """(what the terminal shows, what the log gets) of ``text`` streamed line by line."""
    output = LaunchOutput()
    pairs = [pair for line in text.splitlines(keepends=True) for pair in output.lines(line)]
    pairs += list(output.end())
    return "".join(line for line, shown in pairs if shown), "".join(line for line, _ in pairs)


def test_torchrun_repeating_a_failure_stays_in_the_log() -> None:
    text = RANK_LINES + TORCHRUN + "a late line of a rank\n"
    shown, logged = sort(text)
    assert shown == RANK_LINES + "a late line of a rank\n"
    assert logged == text  # the launcher log keeps every line, in order


def test_accelerates_one_process_traceback_stays_in_the_log() -> None:
    shown, logged = sort(RANK_LINES + ACCELERATE_ONE_PROCESS)
    assert shown == RANK_LINES
    assert logged == RANK_LINES + ACCELERATE_ONE_PROCESS


def test_a_ranks_own_traceback_is_shown_whole() -> None:
    shown, logged = sort(RANK_TRACEBACK + RANK_LINES)
    assert shown == logged == RANK_TRACEBACK + RANK_LINES


def test_a_traceback_cut_off_by_the_end_of_the_output_is_shown() -> None:
    """A launch killed mid-traceback: what was held is released, not lost."""
    cut = ACCELERATE_ONE_PROCESS.splitlines(keepends=True)[:3]
    shown, logged = sort("".join(cut))
    assert shown == logged == "".join(cut)


# The start of a 2-rank ZeRO-2 smoke run on CPU (torch 2.13, accelerate 1.15, DeepSpeed 0.19).
START_UP_NOISE = """\
[2026-12-03 07:38:02,412] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.
W1203 07:38:03.474000 32531 torch/distributed/run.py:874] 
W1203 07:38:03.474000 32531 torch/distributed/run.py:874] *****************************************
W1203 07:38:03.474000 32531 torch/distributed/run.py:874] Setting OMP_NUM_THREADS environment variable for each process to be 1 in default, to avoid your system being overloaded, please further tune the variable for optimal performance in your application as needed. 
W1203 07:38:03.474000 32531 torch/distributed/run.py:874] *****************************************
"""  # noqa: W291 (torchrun's own trailing spaces)


def test_start_up_noise_of_the_launch_stays_in_the_log() -> None:
    text = START_UP_NOISE + RANK_LINES
    shown, logged = sort(text)
    assert shown == RANK_LINES
    assert logged == text
    # A rank's own warning in the same form is shown.
    other = "[2026-12-03 07:38:02,412] [WARNING] [engine.py:1:x] Something about this run\n"
    assert sort(other) == (other, other)
