"""What a rank says when it fails for a reason the libraries word badly: a collective that timed
out (who did not arrive) and a full disk (what is safe, what to free). The real faults (a rank
stopped with SIGSTOP, a tmpfs that fills up) are in tests/e2e (shared_runs.py, test_disk_full.py).
"""

from __future__ import annotations

import errno
import io
import json
import time
from pathlib import Path

import pytest

from launcher.checkpoints import write_manifest
from launcher.contract import RunLayout
from launcher.ranks.disk_full import disk_full_report, is_disk_full
from launcher.ranks.heartbeat import is_collective_timeout, missing_ranks, timeout_report
from launcher.ranks.logs import Tee, rank_log

GLOO_TIMEOUT = RuntimeError(
    "[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
    "30000ms for recv operation to complete"
)


def beat(layout: RunLayout, rank: int, step: int, age_s: float) -> None:
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    record = {"rank": rank, "host": f"node{rank}", "pid": 100 + rank, "step": step}
    record["time"] = time.time() - age_s
    (layout.logs_dir / f"heartbeat-rank-{rank}.json").write_text(json.dumps(record))


def test_the_ranks_that_did_not_arrive_are_the_silent_and_the_late(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    beat(layout, 0, step=12, age_s=1)  # the rank that timed out
    beat(layout, 1, step=12, age_s=2)  # waiting in the collective too: its heartbeat goes on
    beat(layout, 2, step=12, age_s=40)  # stopped: its heartbeat thread stopped with it
    beat(layout, 3, step=9, age_s=1)  # alive, but three steps behind (stuck in its data loader)
    (layout.logs_dir / "heartbeat-rank-4.json").write_text("{cut")  # a torn file is skipped
    assert [b["rank"] for b in missing_ranks(layout, me=0, now=time.time())] == [2, 3]
    report = timeout_report(layout, 0, 0.5, GLOO_TIMEOUT)
    assert report.startswith(
        "a collective waited longer than distributed.timeout_min (0.5 min) on rank 0; ranks that "
        "did not arrive: rank 2 (host node2, pid 102, last finished step 12, silent for 40 s); "
        "rank 3 (host node3, pid 103, last finished step 9, silent for 1 s)."
    ), report
    assert "Timed out waiting 30000ms" in report and "resume with the same command" in report


def test_a_timeout_where_every_heartbeat_is_fresh_says_so(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    beat(layout, 0, step=3, age_s=0)
    beat(layout, 1, step=3, age_s=1)
    assert "ranks that did not arrive: not known" in timeout_report(layout, 0, 30, GLOO_TIMEOUT)


def test_collective_timeouts_are_told_from_other_errors() -> None:
    assert is_collective_timeout(GLOO_TIMEOUT)
    nccl = RuntimeError("[Rank 1] Watchdog caught collective operation timeout: WorkNCCL(...)")
    assert is_collective_timeout(nccl)
    assert not is_collective_timeout(RuntimeError("CUDA out of memory"))
    assert not is_collective_timeout(ValueError("Timed out"))  # not from a backend


def test_full_disks_in_each_librarys_words(tmp_path: Path) -> None:
    """Python's errno, safetensors' text, a quota; torch.save's "unexpected pos" counts only
    when the disk really is (nearly) full, which is not the case here."""
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path)
    safetensors = "Error while serializing: I/O error: No space left on device (os error 28)"
    assert is_disk_full(RuntimeError(safetensors), tmp_path)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as cause:
            raise RuntimeError("saving failed") from cause
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped, tmp_path)
    assert not is_disk_full(RuntimeError("unexpected pos 576 vs 534"), tmp_path)


def test_the_full_disk_report_names_what_is_safe_and_what_to_free(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    complete = checkpoints / "checkpoint-2"
    complete.mkdir(parents=True)
    (complete / "model.safetensors").write_bytes(b"w" * 3000)
    write_manifest(complete, 2, world_size=1)
    cut = checkpoints / "checkpoint-4"
    cut.mkdir()
    (cut / "model.safetensors").write_bytes(b"w" * 1000)
    error = RuntimeError("Error while serializing: No space left on device (os error 28)")
    report = disk_full_report(checkpoints, error)
    assert report.startswith(f"the disk of {checkpoints} is full: ")
    assert "one checkpoint of this run takes 2.93 KiB." in report
    assert "The newest complete checkpoint, checkpoint-2, is intact." in report
    assert "checkpoint-4 was cut short (1000 B written)" in report
    assert "then run the same command to resume. (Error while serializing" in report


class FullFile(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_rank_log_that_cannot_be_written_leaves_the_terminal_going() -> None:
    terminal = io.StringIO()
    tee = Tee(terminal, FullFile())
    tee.write("step 1\n")
    tee.write("step 2\n")
    tee.flush()
    assert terminal.getvalue() == (
        "step 1\n[launcher] the rank log stopped (No space left on device); output goes on "
        "here\nstep 2\n"
    )


def test_a_late_message_after_the_log_closed_is_not_noise() -> None:
    """Library handlers bound to the tee may write at interpreter exit, after the file closed."""
    terminal, log = io.StringIO(), io.StringIO()
    tee = Tee(terminal, log)
    log.close()
    tee.write("bye\n")
    assert terminal.getvalue() == "bye\n"


GLOO_LOST_PEER = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by "
    "peer [127.0.0.1]:7088. This is typically caused by a remote worker crashing."
)


def fail_in_rank(layout: RunLayout, rank: int, error: BaseException) -> None:
    """``error`` raised and reported inside a rank's log, as ``entry.main`` does."""
    from launcher.ranks.entry import report_failure

    with rank_log(layout.rank_log(rank)):
        try:
            raise error
        except BaseException as raised:
            report_failure(layout, rank, raised)


def test_a_rank_that_only_lost_its_peer_names_the_rank_that_failed_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rank 0 failed on the data; rank 1's barrier then lost its peer. Its traceback says only
    that a connection closed: the terminal gets one line, the rank log keeps the traceback."""
    layout = RunLayout(tmp_path / "run")
    fail_in_rank(layout, 0, ValueError("label 'MAYBE' is not one of the labels"))
    shown = capsys.readouterr().err
    assert "Traceback" in shown and "ValueError: label 'MAYBE'" in shown  # unexplained: shown
    fail_in_rank(layout, 1, RuntimeError(GLOO_LOST_PEER))
    shown = capsys.readouterr().err
    assert shown == "[launcher] rank 1: stopped after rank 0 failed\n"
    logged = layout.rank_log(1).read_text()
    assert "Traceback" in logged and "Connection closed by peer" in logged
    records = [json.loads(layout.failure_file(rank).read_text()) for rank in (0, 1)]
    assert "after_rank" not in records[0] and records[1]["after_rank"] == 0


def test_a_lost_peer_with_no_earlier_failure_and_other_errors_are_shown_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no other rank's error on record, a lost peer is this rank's own news (a node that
    vanished); and an error of another kind is never taken for a consequence."""
    layout = RunLayout(tmp_path / "run")
    fail_in_rank(layout, 1, RuntimeError(GLOO_LOST_PEER))
    assert "Traceback" in capsys.readouterr().err
    fail_in_rank(layout, 2, ValueError("Connection closed by peer, in a ValueError"))
    assert "Traceback" in capsys.readouterr().err
    records = [json.loads(layout.failure_file(rank).read_text()) for rank in (1, 2)]
    assert [record.get("after_rank") for record in records] == [None, None]


def test_a_log_only_line_is_masked_and_stays_off_the_terminal() -> None:
    terminal, log = io.StringIO(), io.StringIO()
    tee = Tee(terminal, log, hidden=["hf_abcdefgh"])
    tee.write_log_only("token hf_abcdefgh in a traceback\n")
    assert terminal.getvalue() == ""
    assert log.getvalue() == "token *** in a traceback\n"
