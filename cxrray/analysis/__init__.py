"""Analysis stage: statistics from stored per-image predictions (no retraining)."""
