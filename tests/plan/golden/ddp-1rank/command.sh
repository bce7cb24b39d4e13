#!/usr/bin/env bash
set -euo pipefail
exec python -m accelerate.commands.launch --config_file /runs/golden/plan/accelerate.yaml -m launcher.ranks.entry /runs/golden
