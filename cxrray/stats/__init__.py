"""The statistics cxrray's verdicts rest on, as pure functions of arrays: AUROC ranks and placements, DeLong's
variance (clustered by patient), exact and permutation tests, multiplicity. No run folders, no I/O, no import of
any other part of cxrray: the analysis steps call them, never the reverse."""
