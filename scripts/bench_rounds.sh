#!/usr/bin/env bash
# Runs `cargo bench --bench admission` ROUNDS times (default 3), each round saved as the
# criterion baseline `roundN`, for `scripts/bench_report.py`, which takes the median over the
# rounds and discards a round whose two-thread control did not scale.
#
#   scripts/bench_rounds.sh [ROUNDS] [criterion arguments...]
#   scripts/bench_rounds.sh 3 --warm-up-time 1 --measurement-time 3    # about 12 minutes
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
shift || true
cargo bench --bench admission --no-run --quiet
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    cargo bench --quiet --bench admission -- --save-baseline "round$round" "$@"
done
python3 scripts/bench_report.py
