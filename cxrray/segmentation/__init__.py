"""Segmentation stage: a lung U-Net, its training, post-processing, metrics and mask inference.

Sits between ``data`` and ``representations``: the hide-and-seek
representations need a lung mask for every image, and this stage makes them.
"""
