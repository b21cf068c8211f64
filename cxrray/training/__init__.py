"""Training stage: pure loops and metrics (no Ray) and the Ray Train worker."""
