"""Which lines of a local launch's output reach the terminal, and which only its log.

``accelerate launch`` and torchrun's elastic agent report a failed rank in their own way after
the rank has reported it: agent log lines (``E1202 ... failed (exitcode: 1) local_rank: 0``), a
Python traceback of the launcher itself, and torchrun's ``ChildFailedError`` box. They repeat the
rank's error in worse words, so they go to ``logs/launcher.log`` only. So do two start-up lines
that say nothing about the run: torchrun's ``OMP_NUM_THREADS`` banner and DeepSpeed's "Setting
accelerator to CPU" (accelerate imports DeepSpeed in the launch process too; the ranks quiet their
own, ``ranks/quiet.py``). Everything else, a rank's own traceback included, is shown as it comes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# torch.distributed.elastic logs as glog: "E1202 08:28:02.920000 2560 .../elastic/...py:1002] ..."
AGENT_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S*torch/distributed/elastic/")
# torchrun's banner: "W1203 07:38:03.474000 32531 .../torch/distributed/run.py:874] ****..."
TORCHRUN_BANNER = re.compile(
    r"^W\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S*torch/distributed/run\.py:\d+\] "
)
# "[2026-12-03 07:38:02,412] [WARNING] [real_accelerator.py:213:get_accelerator] Setting ..."
DEEPSPEED_ON_CPU = re.compile(
    r"^\[[^]]*\] \[WARNING\] \[real_accelerator\.py:\d+:get_accelerator\] Setting accelerator to CPU\."
)
TRACEBACK = "Traceback (most recent call last):"
# The last line of the agent's own traceback after a rank failed: torchrun's, or accelerate's
# when it runs one process without torchrun.
AGENT_FAILURE = re.compile(
    r"^(torch\.distributed\.elastic\.multiprocessing\.errors\.ChildFailedError:"
    r"|subprocess\.CalledProcessError: Command .*launcher\.ranks\.entry)"
)
BOX_EDGE = re.compile(r"^={20,}$")


class LaunchOutput:
    """Sorts the launch's lines as they come: ``lines(line)`` yields ``(line, shown)`` pairs, in
    order, with ``shown`` False for the agent's repetition of a failure. A traceback is held
    until its last line tells whose it is; ``end()`` releases whatever is still held."""

    def __init__(self) -> None:
        self.held: list[str] = []
        self.box_edges_left = 0  # the ChildFailedError box: its two "====" edges

    def lines(self, line: str) -> Iterator[tuple[str, bool]]:
        if self.box_edges_left:
            self.box_edges_left -= bool(BOX_EDGE.match(line.rstrip("\n")))
            yield line, False
        elif self.held:
            self.held.append(line)
            if not line[:1].isspace():  # the exception line ends the traceback
                agent = bool(AGENT_FAILURE.match(line))
                if agent and line.startswith("torch.distributed.elastic"):
                    self.box_edges_left = 2
                yield from self.release(shown=not agent)
        elif line.startswith(TRACEBACK):
            self.held.append(line)
        else:
            noise = AGENT_LOG, TORCHRUN_BANNER, DEEPSPEED_ON_CPU
            yield line, not any(pattern.match(line) for pattern in noise)

    def end(self) -> Iterator[tuple[str, bool]]:
        yield from self.release(shown=True)

    def release(self, shown: bool) -> Iterator[tuple[str, bool]]:
        held, self.held = self.held, []
        for line in held:
            yield line, shown
