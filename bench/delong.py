"""DeLong speed: the midrank form against the O(mn) kernel, side by side in one run.

Goals (issue 8): 1M cases < 1.5 s; >= 50x the naive form at 10k cases.
"""

from __future__ import annotations

import time

import numpy as np

from cxrray.stats.delong import auroc_cov, naive_auroc_var


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    return y, rng.normal(size=n) + 0.8 * y


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run() -> list[dict]:
    y, s = _data(10_000)
    fast = _best(lambda: auroc_cov(y, s))
    naive = _best(lambda: naive_auroc_var(y, s), repeat=1)
    y2, s2 = _data(100_000)
    mid = _best(lambda: auroc_cov(y2, s2), repeat=2)
    y1, s1 = _data(1_000_000)
    big = _best(lambda: auroc_cov(y1, s1), repeat=2)
    return [
        {"benchmark": "DeLong 10k: naive / fast", "value": naive / fast, "unit": "x", "goal": ">= 50",
         "ok": naive / fast >= 50, "detail": f"naive {naive:.3f} s, fast {fast * 1e3:.1f} ms"},
        {"benchmark": "DeLong 100k cases", "value": mid, "unit": "s", "goal": "info", "ok": True,
         "detail": "one score vector"},
        {"benchmark": "DeLong 1M cases", "value": big, "unit": "s", "goal": "< 1.5", "ok": big < 1.5,
         "detail": "one score vector"},
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
