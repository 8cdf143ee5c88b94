#!/usr/bin/env bash
# Run the quick 48-run screen, then write its report to reports/quick/report.md.
# Extra arguments are passed to the training sweep, e.g. trainer.max_tokens=200000.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m gpt5_ablate +experiment=quick "$@"
python -m gpt5_ablate.report experiment=quick
