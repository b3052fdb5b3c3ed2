#!/usr/bin/env bash
# First run: set up, write a synthetic head-CT phantom, segment both orbits with the bundled demo model
# and print the per-muscle volumes. Everything lands in ./demo_output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rm -rf demo_output
.venv/bin/headseg phantom -o demo_output/sample --cases 1
.venv/bin/headseg segment demo_output/sample --task orbit -o demo_output/result
echo
echo "Per-structure volumes (demo_output/result/volumes.csv):"
cat demo_output/result/volumes.csv
.venv/bin/headseg evaluate demo_output/result demo_output/sample --task orbit -o demo_output/report.csv
