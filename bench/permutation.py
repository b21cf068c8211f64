"""The Monte Carlo permutation test of an AUROC at one-sided scale: 9 positive patients against 60,000 negatives,
the drawn-subset sampler (``stats.exact``) against the matrix of random keys it replaced, side by side in one
run, each in a fresh process so that its peak memory is its own.

Goals (issue 39): time and memory linear in patients; at 60,009 patients >= 20x faster and >= 10x less memory.
"""

from __future__ import annotations

import json
import subprocess
import sys

CASE = """
import json, resource, time
import numpy as np
from cxrray.stats import exact

rng = np.random.default_rng(0)
y = np.zeros(60_009, bool); y[:9] = True
s = rng.normal(0, 1, len(y)) + y
if MATRIX:  # the sampler before: a CHUNK x units matrix of random keys per chunk, every unit ranked
    def keys(n_units, k, rng, limit=exact.ENUMERATE):
        done = 0
        while done < exact.DRAWS:
            n = min(exact.CHUNK, exact.DRAWS - done)
            yield np.argpartition(rng.random((n, n_units)), k, axis=1)[:, :k]
            done += n
    exact._subsets = lambda n_units, k, rng: keys(n_units, k, rng)
t = time.perf_counter()
p = exact.permutation_auroc(y, s, np.arange(len(y))).p_two
print(json.dumps({"s": time.perf_counter() - t, "mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "p": p}))
"""


def _measure(matrix: bool) -> dict:
    code = CASE.replace("if MATRIX:", f"if {matrix}:")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run() -> list[dict]:
    new, old = _measure(False), _measure(True)
    speed, memory = old["s"] / new["s"], old["mb"] / new["mb"]
    return [
        {"benchmark": "permutation 9 vs 60k: time", "value": speed, "unit": "x", "goal": ">= 20", "ok": speed >= 20,
         "detail": f"keys matrix {old['s']:.1f} s, drawn subsets {new['s']:.2f} s (p {new['p']:.4f})"},
        {"benchmark": "permutation 9 vs 60k: peak memory", "value": memory, "unit": "x", "goal": ">= 10",
         "ok": memory >= 10, "detail": f"keys matrix {old['mb']:.0f} MB, drawn subsets {new['mb']:.0f} MB (process)"},
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
