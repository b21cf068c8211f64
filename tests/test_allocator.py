"""``import cxrray`` has polars hand freed pages back at once (the analysis makes and drops frames per trial: at
10,000 trials the kept pages stacked on each step's peak); a setting of the user's own still wins."""

import os
import subprocess
import sys

import cxrray

BUILD_AND_DROP = """
import os
import cxrray
import polars as pl
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
base = rss()
frames = [pl.DataFrame({'a': range(100_000), 'b': [str(i) for i in range(100_000)]}) for _ in range(20)]
held = rss() - base
del frames
print(held, rss() - base, os.environ['_RJEM_MALLOC_CONF'])
"""


def _held_and_kept(own: str | None) -> tuple[float, float, str]:
    env = {k: v for k, v in os.environ.items() if k != cxrray.ALLOCATOR[0]} | (
        {cxrray.ALLOCATOR[0]: own} if own else {})
    out = subprocess.run([sys.executable, "-c", BUILD_AND_DROP], env=env, capture_output=True, text=True, check=True)
    held, kept, conf = out.stdout.split()
    return float(held), float(kept), conf


def test_dropped_frames_leave_the_process_and_the_users_own_setting_wins():
    held, kept, conf = _held_and_kept(None)
    assert conf.endswith(cxrray.ALLOCATOR[1])  # polars puts its defaults first; the last setting wins
    assert held > 30 and kept < held / 2, (held, kept)
    held, kept, conf = _held_and_kept("dirty_decay_ms:-1,muzzy_decay_ms:-1")  # the user's: keep every page
    assert conf.endswith("dirty_decay_ms:-1,muzzy_decay_ms:-1") and kept > 0.8 * held, (held, kept)
