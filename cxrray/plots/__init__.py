"""Plots: one visual language for every figure (``palette``) and the figures the steps draw (``figures``,
``steps``). matplotlib (Agg) only; each function writes one PNG from the tables it is given."""
