"""What a label map measures: volumes, metrics, the normal bands, quality flags and plausibility."""
