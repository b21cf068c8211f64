"""Opening a W&B run that never costs a sweep its results: online within a stated time budget, else offline.

Against a server that fails (a 502, a proxy, an outage) W&B retries for minutes and then fails the trial with a
page of lines. ``open_run`` gives W&B ``ONLINE_BUDGET_S`` seconds to start an online run; past it the run is
logged offline in the same folder, said in one line (``wandb sync`` uploads it later). W&B's own error reporting
to its servers is off (``WANDB_ERROR_REPORTING``): it prints a line per retry against a failing server, and a
CXR run's errors stay on the machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ONLINE_BUDGET_S = 30.0  # seconds W&B has to open (and to finish) an online run before it is logged offline
QUIET_ENV = {"WANDB_ERROR_REPORTING": "false", "WANDB_SILENT": "true"}  # set for the driver and every worker


def open_run(mode: str, *, directory: Path, name: str, **init: Any) -> Any:
    """``wandb.init`` in ``mode`` (online, offline) with cxrray's quiet settings; online falls back to offline
    after ``ONLINE_BUDGET_S`` or any W&B error, in one line naming the run and where its files are."""
    import wandb

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    common: dict[str, Any] = {"dir": str(directory), "name": name, "resume": "allow",
                              "reinit": "finish_previous"} | init
    if mode == "online":
        try:
            return wandb.init(mode="online", **common, settings=wandb.Settings(
                console="off", x_disable_stats=True, silent=True, init_timeout=ONLINE_BUDGET_S,
                finish_timeout=ONLINE_BUDGET_S))
        except Exception as exc:  # noqa: BLE001  (wandb raises CommError, UsageError, its own Error ...)
            wandb.teardown()  # the failed run keeps its id registered otherwise ("run ID ... is in use")
            why = " ".join(str(exc).split())[:160]
            print(f"[cxrray] W&B online failed for {name} ({why}); logged offline in {directory}/wandb instead "
                  f"(upload later: wandb sync {directory}/wandb/offline-run-*)", flush=True)
            mode = "offline"
    return wandb.init(mode="offline" if mode == "offline" else "disabled", **common,
                      settings=wandb.Settings(console="off", x_disable_stats=True, silent=True))


def wandb_key() -> str:
    """The W&B API key this process would use: ``WANDB_API_KEY``, else the one ``wandb login`` wrote to ~/.netrc."""
    import netrc

    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    try:
        auth = netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1])
    except (OSError, netrc.NetrcParseError):
        return ""
    return auth[2] if auth else ""


KEY_REJECTED = "W&B rejected the API key"
NO_KEY = "no W&B API key (set WANDB_API_KEY or run `wandb login`)"


def key_problem(why: str) -> bool:
    """Whether ``why`` (``NO_KEY`` or ``wandb_reachable``'s answer) is the key's fault, the user's to fix, rather
    than a server that is down or failing."""
    return why.startswith((NO_KEY, KEY_REJECTED))


def wandb_reachable(timeout: float = 10.0) -> str:
    """'' when W&B's server answers this key within ``timeout`` seconds, else why not (asked once, before any trial
    starts): a GraphQL ``viewer`` query, so a server that accepts connections but answers 502 counts as down."""
    import base64
    import json
    import urllib.error
    import urllib.request

    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").rstrip("/")
    host = base.split("//")[-1]
    auth = base64.b64encode(f"api:{wandb_key()}".encode()).decode()
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": "{ viewer { id } }"}).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return f"{KEY_REJECTED} (HTTP {exc.code} from {host}; check WANDB_API_KEY or run `wandb login`)"
        return f"{host} answered HTTP {exc.code} ({exc.reason})"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{host} cannot be reached ({getattr(reason, 'strerror', None) or reason})"
    return ""
