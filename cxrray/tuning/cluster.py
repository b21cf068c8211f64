"""What a sweep learns of the Ray it runs on, before any trial: which cluster it joined (one line), and whether one
trial's reservation can ever be granted there. Tune waits without a word for a reservation no node can hold
(``--gpu`` on a cluster without a GPU hung silently), so a reservation that cannot fit is one line instead.

An autoscaling cluster can grow: the node types its autoscaler may add count as well as the nodes alive now,
read from what Ray publishes (the autoscaler's cluster config) or from the launcher's
``~/ray_bootstrap_config.yaml`` on the head, where ``ray up`` puts it and the driver runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cxrray.registry import UserError
from cxrray.tuning.study import Resources

Bundle = Mapping[str, float]
BOOTSTRAP = Path("~/ray_bootstrap_config.yaml")  # where `ray up` leaves the cluster's config on the head


@dataclass(frozen=True)
class ClusterView:
    """The Ray cluster a sweep runs on: its address, each alive node's CPUs and GPUs, and the nodes its
    autoscaler may add (per node type: its resources)."""

    address: str
    node_cpus: tuple[float, ...]
    node_gpus: tuple[float, ...]
    local: bool = True  # a Ray instance of the sweep's own, started on this machine
    can_add: tuple[Bundle, ...] = ()

    @property
    def cpus(self) -> float:
        return sum(self.node_cpus)

    @property
    def gpus(self) -> float:
        return sum(self.node_gpus)

    def describe(self) -> str:
        """'1 node, 2 CPUs, 0 GPUs' (and what the autoscaler may add)."""
        n = len(self.node_cpus)
        grows = ""
        if self.can_add:
            kinds = ", ".join("{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(b.items()) if math.isfinite(v)) + "}"
                              for b in self.can_add)
            grows = f"; the autoscaler may add nodes of {kinds}"
        return f"{n} node{'s' * (n != 1)}, {self.cpus:g} CPUs, {self.gpus:g} GPUs{grows}"

    def where(self) -> str:
        return "the local Ray instance (this machine)" if self.local else f"the Ray cluster at {self.address}"


def reservations(resources: Resources) -> list[Bundle]:
    """Every bundle one trial reserves: its trial actor's (inline: the worker itself) and, for a Ray Train fit,
    the data bundle and one bundle per training worker."""
    gpu = float(resources.use_gpu)
    worker = {"CPU": resources.cpus_per_worker, "GPU": gpu}
    if resources.inline():
        return [worker]
    data = [{"CPU": resources.data_cpus}] if resources.data_cpus > 0 else []
    return [{"CPU": 0.01}, *data, *[worker] * resources.num_workers]


def _fits(bundle: Bundle, cpus: float, gpus: float) -> bool:
    return bundle.get("CPU", 0) <= cpus + 1e-9 and bundle.get("GPU", 0) <= gpus + 1e-9


def unfit(view: ClusterView, bundles: Sequence[Bundle]) -> str:
    """Why a trial's ``bundles`` can never be granted on ``view`` ('' when they can): a bundle that no alive node
    and no node type the autoscaler may add can hold, or more in all than the cluster has and can grow to."""
    nodes = list(zip(view.node_cpus, view.node_gpus, strict=True))
    grown = [(b.get("CPU", 0.0), b.get("GPU", 0.0)) for b in view.can_add]
    for bundle in bundles:
        if not any(_fits(bundle, c, g) for c, g in nodes + grown):
            return f"needs {bundle.get('CPU', 0):g} CPU(s) and {bundle.get('GPU', 0):g} GPU(s) on one node"
    need_cpu, need_gpu = sum(b.get("CPU", 0) for b in bundles), sum(b.get("GPU", 0) for b in bundles)
    grows_cpu, grows_gpu = any(c > 0 for c, _ in grown), any(g > 0 for _, g in grown)
    if (need_cpu > view.cpus + 1e-9 and not grows_cpu) or (need_gpu > view.gpus + 1e-9 and not grows_gpu):
        return f"needs {need_cpu:g} CPUs and {need_gpu:g} GPUs in all"
    return ""


def check_fits(view: ClusterView, resources: Resources) -> None:
    """One line, before any trial, when a trial's reservation can never be granted on ``view`` (Tune would wait
    forever): what the trial asks, what the cluster has, and what to change."""
    why = unfit(view, reservations(resources))
    if not why:
        return
    fix = ("drop --gpu or add GPU nodes" if resources.use_gpu and view.gpus == 0 and not view.can_add
           else "lower --num-workers or --cpus-per-worker, or add nodes")
    raise UserError(f"{'--gpu: ' * resources.use_gpu}a trial {why}, but {view.where()} has {view.describe()}: {fix}")


def autoscaled_types(published: Mapping[str, float] | None = None, bootstrap: Path = BOOTSTRAP) -> tuple[Bundle, ...]:
    """The node types an autoscaler may add: from the maximum resources Ray publishes for an autoscaling cluster
    (``published``), else from the launcher's bootstrap config on the head (types with max_workers > 0 and their
    declared resources); () for a fixed cluster."""
    if published:
        return ({k: float(v) for k, v in published.items() if k in ("CPU", "GPU")},)
    path = bootstrap.expanduser()
    if not path.exists():
        return ()
    import yaml

    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return ()
    head = config.get("head_node_type")
    types = []
    for name, node in (config.get("available_node_types") or {}).items():
        declared = {k: float(v) for k, v in (node.get("resources") or {}).items() if k in ("CPU", "GPU")}
        if name != head and node.get("max_workers", 0) > 0 and declared:
            types.append({"CPU": math.inf} | declared)  # CPUs left to Ray's detection: not a limit here
    return tuple(types)


def cluster_view(local: bool) -> ClusterView:
    """The Ray this process is connected to (``ray.init`` done), alive nodes only."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]  # Ray is untyped
    published = None
    if not local:
        try:  # Ray's own record of an autoscaler's reach (private API: absent on some versions and clusters)
            from ray._private.state import state

            published = state.get_max_resources_from_cluster_config()
        except Exception:  # noqa: BLE001  (an unknown reach reads as a fixed cluster, the bootstrap file aside)
            published = None
    address = ray.get_runtime_context().gcs_address
    return ClusterView(address, tuple(float(n["Resources"].get("CPU", 0)) for n in alive),
                       tuple(float(n["Resources"].get("GPU", 0)) for n in alive), local,
                       () if local else autoscaled_types(published))


def unshared(folders: Sequence[Path], timeout: float = 120.0) -> str:
    """'' when every alive node of the joined cluster sees each of ``folders`` as the driver does (a marker file
    written here, read by a task pinned to each node), else which node does not see which folder."""
    import secrets
    import socket

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]  # Ray is untyped
    if len(alive) < 2:
        return ""
    token = secrets.token_hex(8)
    markers = [Path(f) / f".cxrray-shared-{token}" for f in folders]
    for m in markers:
        m.parent.mkdir(parents=True, exist_ok=True)
        m.write_text(token)

    @ray.remote(num_cpus=0)
    def sees(paths: list[str]) -> tuple[str, list[bool]]:
        return socket.gethostname(), [Path(p).exists() and Path(p).read_text() == token for p in paths]

    try:
        refs = [sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote([str(m) for m in markers]) for n in alive]
        seen = ray.get(refs, timeout=timeout)
    finally:
        for m in markers:
            m.unlink(missing_ok=True)
    for node, (host, ok) in zip(alive, seen, strict=True):
        for folder, found in zip(folders, ok, strict=True):
            if not found:
                return f"{folder} is not the same folder on node {node['NodeManagerAddress']} ({host})"
    return ""


def check_shared(out: Path, storage: str | None) -> None:
    """Several nodes need ``--out`` (and a local ``--storage``) on storage every node mounts at the same path: one
    line before any trial when a node does not see it (its trials would write where the driver never looks)."""
    folders = [out] + ([Path(storage)] if storage and "://" not in storage else [])
    why = unshared(folders)
    if why:
        raise UserError(f"--out / --storage on a cluster of several nodes must be a folder every node mounts at "
                        f"the same path (README: Shared storage), or --storage a cloud URI: {why}")
