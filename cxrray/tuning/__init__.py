"""Tuning stage: studies -> lists of trial specs -> Ray Tune, with resume and W&B."""
