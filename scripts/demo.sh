#!/usr/bin/env bash
# First run: set up .venv with what HeadSeg needs to run (no test tools), write a synthetic head-CT phantom,
# segment both orbits with the default orbit model, print the volumes and the evaluation against the
# phantom's truth, and end with the HTML report and the line to open it. Everything lands in ./demo_output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rm -rf demo_output
.venv/bin/headseg phantom -o demo_output/sample --cases 1
.venv/bin/headseg segment demo_output/sample --task orbit -o demo_output/result
echo
echo "Per-structure volumes (demo_output/result/volumes.csv):"
cat demo_output/result/volumes.csv
echo
.venv/bin/headseg evaluate demo_output/result demo_output/sample --task orbit -o demo_output/evaluation.csv
.venv/bin/headseg report demo_output/result -o demo_output/report.html
echo
echo "Open the report (pictures, volumes, flags):  xdg-open $(pwd)/demo_output/report.html"
echo "  or paste into a browser:  file://$(pwd)/demo_output/report.html"
