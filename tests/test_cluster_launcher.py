"""``ray up`` for real: the README's cluster commands, verbatim, against ``sshd`` on 127.0.0.1.

A throwaway user plays every machine's account; its ``sshd`` runs in a mount namespace of its own with a private
``/tmp``, so the Ray it starts never meets another Ray instance's files, and ``ray stop`` as that user signals
only its processes. The yaml is ``cluster.local.yaml`` with exactly the values marked REPLACE changed (head and
worker addresses, user, key). Then: ``ray up``, the README's sweep through ``ray exec`` (its trials must run on
the launched head: their node id), the README's ``ray submit`` of the same sweep (it resumes: nothing reruns),
``ray down`` (no Ray process of that user is left, the GCS port is free).

The node's image carries Ray and cxrray's heavy dependencies (torch, its CUDA libraries, timm, ...: this
environment's, reached through ``PYTHONPATH``, and a ``ray`` command, as the rayproject/ray images have them), so
the yaml's setup creates the venv and installs what is missing (ray's ``default`` extra, cxrray itself) in
seconds; from an empty node the same commands took 289 s, mostly torch's download. Needs root, ``sshd`` and
``rsync`` (``make test`` installs both).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
USER = "cxrnode"
REPLACED = {("provider", "head_ip"), ("provider", "worker_ips"), ("auth", "ssh_user"), ("auth", "ssh_private_key")}


def readme_cluster_commands() -> list[str]:
    """The commands of README's block that follows its ``<!-- cluster test -->`` marker, in order."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- cluster test -->", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip().startswith("ray ")]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _ray_processes() -> list[str]:
    """Ray's processes of the node user (its sshd sessions aside)."""
    out = subprocess.run(["ps", "-u", USER, "-o", "args="], capture_output=True, text=True).stdout
    return [p for p in out.splitlines() if re.search(r"raylet|gcs_server|ray[/:]|dashboard|default_worker", p)]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """sshd on 127.0.0.1:22 for a throwaway user, in its own mount namespace; yields (harness dir, key)."""
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists() or not shutil.which("rsync"):
        pytest.fail("the launcher test needs root, /usr/sbin/sshd and rsync (make test installs them)")
    assert _port_free(22), "port 22 of 127.0.0.1 is taken: the local provider logs in there"
    harness = Path("/var/tmp") / f"cxrray-launcher-{os.getpid()}"  # outside /tmp: the node's /tmp is its own
    shutil.rmtree(harness, ignore_errors=True)
    (harness / "site-src").mkdir(parents=True)
    (harness / "node-site").mkdir()
    harness.chmod(0o755)
    subprocess.run(["userdel", "-r", USER], capture_output=True)
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", USER], check=True)
    subprocess.run(["usermod", "-p", "*", USER], check=True)  # no password, but not locked
    home = Path(pwd.getpwnam(USER).pw_dir)
    for name in ("key", "hostkey"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(harness / name)], check=True)
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    shutil.copy(harness / "key.pub", ssh / "authorized_keys")
    site = Path(sysconfig.get_paths()["purelib"])  # the node image's packages, less cxrray (the yaml installs it)
    for entry in site.iterdir():
        if not re.match(r"(cxrray|__editable__|_cxrray)", entry.name):
            (harness / "node-site" / entry.name).symlink_to(f"/mnt/site-src/{entry.name}")
    (harness / "node-bin").mkdir()  # the image's own `ray` command, as rayproject/ray has it
    (harness / "node-bin" / "ray").write_text('#!/bin/sh\nexec python3 -c "import sys; from ray.scripts.scripts '
                                              'import main; sys.argv[0] = \'ray\'; main()" "$@"\n')
    (harness / "node-bin" / "ray").chmod(0o755)
    bashrc = home / ".bashrc"
    bashrc.write_text("export PYTHONPATH=/mnt/node-site PATH=/mnt/node-bin:$PATH\n"
                      + (bashrc.read_text() if bashrc.exists() else ""))
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(home)], check=True)
    (harness / "sshd_config").write_text("\n".join([
        "Port 22", "ListenAddress 127.0.0.1", "HostKey /mnt/hostkey", "PidFile none", "UsePAM no",
        "AuthorizedKeysFile .ssh/authorized_keys", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        f"AllowUsers {USER}", ""]))
    Path("/run/sshd").mkdir(exist_ok=True)
    inner = (f"mount --bind {harness} /mnt && mount --bind {site} /mnt/site-src && mount -t tmpfs tmpfs /tmp && "
             f"exec /usr/sbin/sshd -D -e -f /mnt/sshd_config")
    log = (harness / "sshd.log").open("w")
    sshd = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 20
    while _port_free(22) and time.time() < deadline:
        time.sleep(0.2)
    assert not _port_free(22), (harness / "sshd.log").read_text()
    yield harness, home
    os.killpg(sshd.pid, signal.SIGTERM)
    sshd.wait(timeout=30)
    subprocess.run(["pkill", "-KILL", "-u", USER], capture_output=True)
    subprocess.run(["userdel", "-r", USER], capture_output=True)
    shutil.rmtree(harness, ignore_errors=True)


def _derived(harness: Path) -> Path:
    """cluster.local.yaml with what README tells a user to change, and nothing else."""
    cfg = yaml.safe_load((ROOT / "cluster.local.yaml").read_text())
    mine = json.loads(json.dumps(cfg))
    mine["provider"] |= {"head_ip": "127.0.0.1", "worker_ips": []}
    mine["auth"] |= {"ssh_user": USER, "ssh_private_key": str(harness / "key")}
    changed = {(k, f) for k in cfg if isinstance(cfg[k], dict) for f in cfg[k] if cfg[k][f] != mine[k][f]}
    assert changed == REPLACED and all(cfg[k] == mine[k] for k in cfg if not isinstance(cfg[k], dict))
    text = (ROOT / "cluster.local.yaml").read_text()
    for _, field in REPLACED:  # the same file, its REPLACE lines edited (comments and order kept)
        assert len(re.findall(rf"^\s+{field}:.*# REPLACE", text, re.M)) == 1, field
    path = harness / "cluster.local.yaml"
    path.write_text(yaml.safe_dump(mine, sort_keys=False))
    return path


def _ray(command: str, config: Path, harness: Path, timeout: float) -> str:
    """One README command, the derived yaml in the place of cluster.local.yaml, from this checkout."""
    args = [str(config) if a == "cluster.local.yaml" else a for a in shlex.split(command)]
    args = [str(Path(sys.executable).parent / "ray"), *args[1:]]
    env = os.environ | {"RAY_TMPDIR": str(harness / "launcher"), "TMPDIR": str(harness / "launcher"),
                        "PYTHONUNBUFFERED": "1"}
    (harness / "launcher").mkdir(exist_ok=True)
    if args[1] == "down":
        args.insert(2, "-y")
    if args[1] == "up":
        args[2:2] = ["-y", "--no-config-cache"]
    t0 = time.time()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    out = proc.stdout + proc.stderr
    print(f"[launcher test] {command}: {time.time() - t0:.0f} s, exit {proc.returncode}")
    assert proc.returncode == 0, f"{command} failed:\n{out[-4000:]}"
    return out


def test_ray_up_sweep_resume_and_down_as_the_readme_says(node):
    harness, home = node
    commands = readme_cluster_commands()
    verbs = [c.split()[1] for c in commands]
    assert verbs == ["up", "exec", "submit", "down"], commands
    config = _derived(harness)
    _ray(commands[0], config, harness, 600)  # ray up
    nodes = _ray("ray exec cluster.local.yaml 'ray list nodes --format json'", config, harness, 120)
    listed = json.loads(next(line.strip() for line in nodes.splitlines() if line.strip().startswith("[{")))
    head = [n["node_id"] for n in listed if n["is_head_node"] and n["state"] == "ALIVE"]
    assert len(head) == 1, listed
    out = _ray(commands[1], config, harness, 600)  # the sweep, through ray exec
    assert re.search(r"\[cxrray\] joined the Ray cluster at \S+:6379 \(--address auto\): 1 node, \d+ CPUs, 0 GPUs",
                     out), out[-3000:]
    run = home / re.search(r"--out ([^\s']+)", commands[1]).group(1)
    results = pl.read_parquet(run / "results.parquet")
    assert set(results["status"]) == {"finished"} and results.height == 2
    assert set(results["node_id"]) == set(head)  # the trials ran on the launched head
    assert (run / "report.html").exists()
    again = _ray(commands[2], config, harness, 600)  # the same sweep, through ray submit: it resumes
    assert "2 trials: 2 already finished, 0 to run" in again, again[-3000:]
    _ray(commands[3], config, harness, 300)  # ray down
    deadline = time.time() + 60
    while (_ray_processes() or not _port_free(6379)) and time.time() < deadline:
        time.sleep(1)
    assert _ray_processes() == [] and _port_free(6379), _ray_processes()
