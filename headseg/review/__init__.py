"""What a reader looks at after a run: compare two scans, the HTML report, evaluation, the scorecard."""
