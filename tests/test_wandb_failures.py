"""W&B failures are one line and never cost a result (issue 42, item 5): a server answering 502 used to fail both
trials after 200 s with 226 lines; a missing or rejected key made ``cxrray workspace`` a traceback. Here a real
HTTP server on 127.0.0.1 answers every request with the status under test."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from cxrray import wandb_run
from cxrray.registry import UserError
from cxrray.tuning.precheck import wandb_mode

ROOT = Path(__file__).resolve().parents[1]


def _server(status: int) -> http.server.ThreadingHTTPServer:
    class Answer(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no")

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture()
def failing_wandb(request, monkeypatch):
    """W&B's base URL pointing at a server that answers ``request.param`` to everything; a key is set."""
    server = _server(request.param)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.parametrize("failing_wandb", [502], indirect=True)
def test_a_failing_server_means_offline_in_one_line_before_any_trial(failing_wandb, capsys):
    assert wandb_mode("online") == "offline" and wandb_mode("auto") == "offline"
    said = capsys.readouterr().out.strip().splitlines()
    assert said == [f"[cxrray] --wandb {mode}: {failing_wandb} answered HTTP 502 (Bad Gateway); logging offline "
                    f"(upload later with `wandb sync`)" for mode in ("online", "auto")]


@pytest.mark.parametrize("failing_wandb", [401], indirect=True)
def test_a_rejected_key_is_refused_for_online_and_offline_for_auto(failing_wandb, capsys):
    with pytest.raises(UserError, match=r"^--wandb online: W&B rejected the API key \(HTTP 401 from "):
        wandb_mode("online")
    assert wandb_mode("auto") == "offline"


@pytest.mark.parametrize("failing_wandb", [502], indirect=True)
def test_a_run_that_cannot_open_online_is_logged_offline_within_the_budget(failing_wandb, tmp_path, capsys,
                                                                            monkeypatch):
    """The server failed after the sweep's check (mid-sweep outage): the trial's run waits the stated budget,
    then logs offline in the same folder, in one line; nothing is lost."""
    monkeypatch.setattr(wandb_run, "ONLINE_BUDGET_S", 4.0)
    start = time.perf_counter()
    run = wandb_run.open_run("online", directory=tmp_path, name="original.basecnn.none.s0", id="trial1",
                             project="p", group="g")
    run.log({"val_auroc": 0.9}, step=0)
    run.finish()
    assert time.perf_counter() - start < 30
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("[cxrray] W&B online failed for original.basecnn.none.s0 (")
    assert said[0].endswith(f"logged offline in {tmp_path}/wandb instead (upload later: wandb sync "
                            f"{tmp_path}/wandb/offline-run-*)")
    assert len(list((tmp_path / "wandb").glob("offline-run-*/run-trial1.wandb"))) == 1


def test_workspace_without_a_key_is_one_line(tmp_path, monkeypatch, capsys):
    from cxrray.analysis.__main__ import main
    from cxrray.config import RunLayout
    from cxrray.report.dashboard import dashboard_of

    dashboard_of("hide_seek", "cxr", {"cell_verdicts"}, set(), entity="lab").write(RunLayout(tmp_path).workspace)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    assert main(["workspace", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"python -m cxrray.analysis workspace: error: no W&B API key (set WANDB_API_KEY or run `wandb login`); the "
        f"workspace stays defined in {RunLayout(tmp_path).workspace}"]


@pytest.mark.parametrize("failing_wandb, code", [(401, 2), (502, 1)], indirect=["failing_wandb"])
def test_workspace_with_a_rejected_key_or_a_failing_server_is_one_line(failing_wandb, code, tmp_path, capsys):
    from cxrray.analysis.__main__ import main
    from cxrray.config import RunLayout
    from cxrray.report.dashboard import dashboard_of

    dashboard_of("hide_seek", "cxr", {"cell_verdicts"}, set(), entity="lab").write(RunLayout(tmp_path).workspace)
    assert main(["workspace", str(tmp_path)]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m cxrray.analysis workspace: error: "), err
    assert ("W&B rejected the API key" if code == 2 else f"{failing_wandb} answered HTTP 502") in err[0]


@pytest.mark.slow
@pytest.mark.parametrize("failing_wandb", [502], indirect=True)
def test_an_online_sweep_against_a_failing_server_finishes_offline_and_its_last_line_is_true(failing_wandb,
                                                                                              tmp_path):
    env = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--smoke-test", "--wandb",
                           "online", "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert f"[cxrray] --wandb online: {failing_wandb} answered HTTP 502 (Bad Gateway); logging offline (upload " \
           f"later with `wandb sync`)" in lines
    assert pl.read_parquet(tmp_path / "run" / "results.parquet")["status"].to_list() == ["finished"] * 2
    assert lines[-1].startswith("[cxrray] ") and "report:" in lines[-1]
    assert len(list((tmp_path / "run").rglob("offline-run-*"))) >= 3  # two trials and the summary
    assert "Transient error" not in proc.stdout + proc.stderr
