"""Where a plan runs: this machine (``local``); the run directory is prepared the same way for all."""
