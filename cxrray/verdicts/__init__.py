"""Verdicts: the rules that turn an interval into a claim (``verdict``), the vocabularies later stages branch on
(``Verdict``, ``StepWord``), and what the rules guarantee: simulation with known truth (``simulate``), patients
needed (``patients``, ``plan``). Functions of arrays and frozen records; no run folder is read here."""
