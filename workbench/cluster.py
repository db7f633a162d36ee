"""Run the workbench's batch loops and target-device jobs on a Dask cluster (``dask.distributed``).

``connect(address)`` takes a scheduler address the user gives (``tcp://host:port``, ``tls://host:port``; never a
default port) or ``local[:N]`` (a ``LocalCluster`` of N worker processes on 127.0.0.1). A :class:`Cluster` says
which workers it has, what each machine offers (TensorRT flavour and version, GPU model and compute capability,
as Dask worker *resources* such as ``trt_rtx=1`` or ``trt_sm86=1``: :func:`machine_resources`), what runs where,
and links Dask's own dashboard. :meth:`Cluster.ordered_map` is :func:`workbench.parallel.ordered_map` on the
cluster: results in input order (so sums merge exactly as in the local run), a bounded number of tasks in flight,
the large shared objects (models, data) sent to every worker once (:meth:`Cluster.share`); a worker that dies
mid-run has its tasks rescheduled by Dask and the caller is told (``notify``).

Dask is imported only when a cluster is used (the ``cluster`` extra: ``pip install 'onnx-trt-workbench[cluster]'``).
Results come back through Dask's own protocol only; the workbench's tasks return plain data (numpy arrays,
dicts, bytes), and target-device results are vetted like any foreign engine (:mod:`workbench.remote`).
TLS: pass ``security=distributed.Security(...)`` or set Dask's ``distributed.comm.tls`` settings (docs/cluster.md).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from .errors import WorkbenchError

__all__ = [
    "ClusterError",
    "Cluster",
    "ClusterInfo",
    "Gpu",
    "MachineInfo",
    "WorkerInfo",
    "connect",
    "parse_address",
    "machine_info",
    "machine_resources",
    "LOCAL_HOST",
    "fan_out",
    "SweepTimes",
]

T = TypeVar("T")
R = TypeVar("R")
LOCAL_HOST = "127.0.0.1"
_ADDRESS = re.compile(r"^(?:(tcp|tls|ucx|ws|wss)://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class ClusterError(WorkbenchError):
    """A cluster that cannot be reached, used or asked for what it does not have."""


def _dask() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ClusterError(f"Dask's 'distributed' package is not installed here ({exc})",
                           hint="pip install 'onnx-trt-workbench[cluster]', or run without --cluster") from exc
    return distributed


def parse_address(address: str) -> tuple[str, int | None]:
    """``("local", N or None)`` for ``local`` / ``local:N``, else ``(scheduler address, None)``.

    A remote address needs an explicit port (no default open port is assumed); ``host:port`` means ``tcp://``.
    """
    text = str(address).strip()
    if text == "local" or text.startswith("local:"):
        count = text.partition(":")[2]
        if count and (not count.isdigit() or int(count) < 1):
            raise ClusterError(f"bad local cluster size in '{text}'", hint="use local or local:N with N >= 1 workers")
        return "local", int(count) if count else None
    m = _ADDRESS.match(text)
    if not m or not 0 < int(m.group(3)) < 65536:
        raise ClusterError(f"'{text}' is not a scheduler address",
                           hint="give the address the scheduler printed, e.g. tcp://10.0.0.5:8786 or "
                                "tls://sched.example:8786, or local[:N] for worker processes on this machine")
    return (text if m.group(1) else f"tcp://{text}"), None


# --- what a machine offers -----------------------------------------------------------------------------


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@dataclass(frozen=True)
class Gpu:
    """One GPU as ``nvidia-smi`` names it, with its compute capability (``"8.6"``)."""

    name: str
    compute_capability: str


@dataclass(frozen=True)
class MachineInfo:
    """What a machine offers the workbench (:func:`machine_info`): host, cores, TensorRT flavours and their versions
    (``{"tensorrt-rtx": "1.2.0"}``), GPUs, ONNX Runtime and workbench versions. ``to_dict()`` is its JSON, the plain
    data a worker sends back (:meth:`from_dict` reads it)."""

    host: str
    cores: int
    tensorrt: dict[str, str] = field(default_factory=dict)
    gpus: tuple[Gpu, ...] = ()
    onnxruntime: str | None = None
    workbench: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON types (``gpus`` a list of ``{name, compute_capability}``)."""
        return {**asdict(self), "tensorrt": dict(self.tensorrt), "gpus": [asdict(g) for g in self.gpus]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MachineInfo:
        """The :class:`MachineInfo` of its :meth:`to_dict`."""
        return cls(host=str(d.get("host", "")), cores=int(d.get("cores") or 1),
                   tensorrt={str(k): str(v) for k, v in (d.get("tensorrt") or {}).items()},
                   gpus=tuple(Gpu(str(g["name"]), str(g["compute_capability"])) for g in d.get("gpus") or ()),
                   onnxruntime=d.get("onnxruntime"), workbench=d.get("workbench"))


def _gpus() -> tuple[Gpu, ...]:
    """The GPUs ``nvidia-smi`` lists (none when it is absent or fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in out.splitlines():
        name, _, cc = (p.strip() for p in line.rpartition(","))
        if name and re.fullmatch(r"\d+\.\d+", cc):
            gpus.append(Gpu(name, cc))
    return tuple(gpus)


def machine_info() -> MachineInfo:
    """What this machine offers the workbench: TensorRT flavours importable here and their versions (read from
    package metadata, without loading the libraries), GPUs (``nvidia-smi``), cores, workbench version."""
    tensorrt = {}
    for flavour, module, dists in (("tensorrt", "tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13")),
                                   ("tensorrt-rtx", "tensorrt_rtx", ("tensorrt-rtx", "tensorrt_rtx"))):
        if importlib.util.find_spec(module) is not None:
            tensorrt[flavour] = _package_version(*dists) or "unknown"
    import platform

    return MachineInfo(host=platform.node(), cores=os.cpu_count() or 1, tensorrt=tensorrt, gpus=_gpus(),
                       onnxruntime=_package_version("onnxruntime", "onnxruntime-gpu"),
                       workbench=_package_version("onnx-trt-workbench"))


def _machine_data() -> dict[str, Any]:
    """:func:`machine_info` as plain data: what a worker sends back (:meth:`Cluster.probe`)."""
    return machine_info().to_dict()


def machine_resources(info: MachineInfo | None = None) -> dict[str, float]:
    """Dask worker resources for a machine (:func:`machine_info`): ``trt=1`` / ``trt_rtx=1`` per TensorRT flavour,
    ``gpu=N`` and ``trt_sm86=1`` (compute capability 8.6) where a GPU and a TensorRT are present."""
    info = machine_info() if info is None else info
    res: dict[str, float] = {}
    if "tensorrt" in info.tensorrt:
        res["trt"] = 1
    if "tensorrt-rtx" in info.tensorrt:
        res["trt_rtx"] = 1
    if info.gpus:
        res["gpu"] = len(info.gpus)
        if info.tensorrt:
            for g in info.gpus:
                res["trt_sm" + g.compute_capability.replace(".", "")] = 1
    return res


# --- the cluster -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerInfo:
    """One worker: its address, name, host, threads, Dask resources, (after :meth:`Cluster.probe`) machine, and
    how many tasks it is running."""

    address: str
    name: str
    host: str
    nthreads: int
    resources: dict[str, float] = field(default_factory=dict)
    machine: MachineInfo | None = None
    running: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON types (``machine`` ``{}`` until probed)."""
        return {**asdict(self), "resources": dict(self.resources),
                "machine": self.machine.to_dict() if self.machine is not None else {}}


@dataclass(frozen=True)
class ClusterInfo:
    """A cluster now (:meth:`Cluster.describe`): its address, whether the workbench started it (``local``), Dask's
    dashboard link (None without one), its workers and what the user should know (workers lost, in order)."""

    address: str
    local: bool
    dashboard: str | None
    workers: tuple[WorkerInfo, ...]
    events: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON types."""
        return {"address": self.address, "local": self.local, "dashboard": self.dashboard,
                "workers": [w.to_dict() for w in self.workers], "events": list(self.events)}


class Cluster:
    """A connected Dask client (and the ``LocalCluster`` it started, for ``local[:N]``). Close it when done
    (also a context manager)."""

    def __init__(self, client: Any, address: str, local: Any = None) -> None:
        self.client = client
        self.address = address
        self._local = local
        self._machines: dict[str, MachineInfo] = {}
        self.events: list[str] = []  # what the user should know (workers lost, tasks rescheduled), in order
        self._lock = threading.Lock()
        #: ONNX Runtime threads per task; None: the hosts' cores shared by their task threads (:meth:`task_threads`)
        self.threads_per_task: int | None = None
        self._broadcast: bool | None = None  # whether share() may broadcast (no Active Memory Manager running)
        self._shared: weakref.WeakKeyDictionary[Any, dict[Any, list[Any]]] = weakref.WeakKeyDictionary()
        #: where the last sweep's time went (:func:`fan_out`), None before one
        self.last_sweep: SweepTimes | None = None

    # -- description ------------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        """Whether this is a ``local[:N]`` cluster the workbench started (closed with it)."""
        return self._local is not None

    @property
    def dashboard_link(self) -> str | None:
        """Dask's own dashboard (needs ``bokeh`` on the scheduler), else None."""
        info = self.client.scheduler_info()
        if "dashboard" not in (info.get("services") or {}) or importlib.util.find_spec("bokeh") is None:
            return None  # the HTTP server runs, but without bokeh it serves no dashboard
        try:
            return str(self.client.dashboard_link)
        except Exception:  # no dashboard service after all
            return None

    def workers(self) -> list[WorkerInfo]:
        """The workers now, with what each is running (task count) and, once probed, its machine."""
        info = self.client.scheduler_info(n_workers=-1) if _takes_n_workers(self.client) \
            else self.client.scheduler_info()
        processing = self.client.processing()
        out = []
        for addr, w in sorted(info.get("workers", {}).items()):
            out.append(WorkerInfo(addr, str(w.get("name", addr)), str(w.get("host", "")), int(w.get("nthreads", 1)),
                                  dict(w.get("resources") or {}), self._machines.get(addr),
                                  len(processing.get(addr, ()))))
        return out

    def probe(self) -> dict[str, MachineInfo]:
        """Ask every worker what its machine offers (:func:`machine_info`), by worker address; kept for
        :meth:`workers`."""
        found = self.client.run(_machine_data)  # plain data back through Dask's protocol
        self._machines.update({addr: MachineInfo.from_dict(d) for addr, d in found.items()})
        return dict(self._machines)

    def running(self) -> dict[str, list[str]]:
        """What runs where: {worker address: [task keys it is processing]}."""
        return {k: [str(t) for t in v] for k, v in self.client.processing().items()}

    def threads(self) -> int:
        """Task threads over all workers."""
        return sum(w.nthreads for w in self.workers())

    def describe(self) -> ClusterInfo:
        """Address, local, dashboard link, workers (with resources, machine, running task count) and events."""
        return ClusterInfo(self.address, self.is_local, self.dashboard_link, tuple(self.workers()), tuple(self.events))

    def require(self, resources: Mapping[str, float] | None) -> list[WorkerInfo]:
        """The workers offering ``resources``; a :class:`ClusterError` naming what the workers do offer when none
        does (Dask itself would wait for such a worker forever)."""
        workers = self.workers()
        if not workers:
            raise ClusterError(f"the cluster at {self.address} has no workers",
                               hint="start one with `workbench worker SCHEDULER_ADDRESS`, or run locally")
        fit = [w for w in workers if all(w.resources.get(k, 0) >= v for k, v in (resources or {}).items())]
        if not fit:
            offered = sorted({f"{k}={v:g}" for w in workers for k, v in w.resources.items()}) or ["nothing"]
            raise ClusterError(f"no worker of {self.address} offers {dict(resources or {})}",
                               hint=f"its workers offer {', '.join(offered)}; start `workbench worker` on a machine "
                                    "that has it (it advertises its TensorRT and GPU), or ask for one of those")
        return fit

    # -- work ------------------------------------------------------------------------------------------
    def share(self, value: Any) -> Any:
        """Send ``value`` (a model's bytes, a batch) to every worker once; returns a future for task arguments.

        A broadcast needs the scheduler's Active Memory Manager off: its ReduceReplicas policy removes the copies a
        broadcast makes while the broadcast still makes them, and the scatter hangs (dask/distributed#8796).
        ``connect("local[:N]")`` starts its scheduler without it; on a scheduler that runs it the value goes to one
        worker and the others fetch it when their first task needs it."""
        if self._broadcast is None:
            try:
                self._broadcast = not bool(self.client.amm.running())
            except Exception:  # an old scheduler without the AMM: a broadcast is safe
                self._broadcast = True
        return self.client.scatter(value, broadcast=self._broadcast, hash=False)

    def share_each(self, owner: Any, tag: Any, make: Callable[[], Iterable[Any]]) -> list[Any]:
        """One :meth:`share` per item of ``make()``, done once per (``owner``, ``tag``) while ``owner`` lives: e.g. a
        dataset's batches, reused by every plan evaluated on them."""
        with self._lock:
            per_owner = self._shared.setdefault(owner, {})
        if tag not in per_owner:
            per_owner[tag] = [self.share(item) for item in make()]
        return per_owner[tag]

    def task_threads(self) -> int:
        """ONNX Runtime threads for each task: :attr:`threads_per_task`, else a host's cores shared by the task
        threads of its workers."""
        if self.threads_per_task:
            return int(self.threads_per_task)
        if not self._machines:
            self.probe()
        per_host: dict[str, int] = {}
        cores: dict[str, int] = {}
        for w in self.workers():
            per_host[w.host] = per_host.get(w.host, 0) + w.nthreads
            cores[w.host] = w.machine.cores if w.machine is not None else 1
        return max(1, min((cores[h] // n for h, n in per_host.items()), default=1))

    def submit(self, fn: Callable[..., R], *args: Any, resources: Mapping[str, float] | None = None) -> Any:
        """``fn(*args)`` as one Dask task (a future), on a worker offering ``resources`` (checked first)."""
        if resources:
            self.require(resources)
        return self.client.submit(fn, *args, resources=dict(resources) if resources else None, pure=False)

    def ordered_map(self, fn: Callable[..., R], items: Iterable[Any], *, shared: Sequence[Any] = (),
                    window: int | None = None, resources: Mapping[str, float] | None = None,
                    cancel: Callable[[], bool] | None = None,
                    notify: Callable[[str], Any] | None = None) -> Iterator[R]:
        """``fn(*shared, item)`` for each item as Dask tasks, results in input order (like
        :func:`workbench.parallel.ordered_map`), at most ``window`` (default 2x the cluster's threads) in flight.
        ``shared``: futures from :meth:`share`. A worker lost mid-run: Dask reruns its tasks elsewhere, the result is
        the same, and ``notify`` (and :attr:`events`) says so. ``cancel()`` true: the remaining tasks are cancelled
        and a :class:`ClusterError` raised."""
        if resources:
            self.require(resources)
        window = max(1, window or 2 * max(1, self.threads()))
        lost: list[str] = []
        seen: set[tuple[Any, Any]] = set()
        start = _now()

        # per-worker topics, not "all": Dask's "replicate" event (from share's broadcast) cannot be serialised
        addresses = [w.address for w in self.workers()]

        def on_event(address: str, event: Any) -> None:
            _, msg = event if isinstance(event, tuple) and len(event) == 2 else (None, event)
            if isinstance(msg, dict) and msg.get("action") == "remove-worker" and not msg.get("expected"):
                key = (address, msg.get("stimulus_id"))
                if key in seen:
                    return
                seen.add(key)
                tasks = len(msg.get("processing-tasks") or ()) + len(msg.get("lost-computed-tasks") or ())
                lost.append(f"worker {address} was lost; Dask reran its {tasks} task(s) on the other "
                            "workers (the result is unchanged)")

        subscribed = []
        for address in addresses:
            try:
                self.client.subscribe_topic(address, functools.partial(on_event, address))
                subscribed.append(address)
            except Exception:  # no live event stream: the losses are read at the end
                break
        pending: deque[Any] = deque()
        reported = 0

        def report(final: bool = False) -> None:
            nonlocal reported
            if final:  # events the live stream had not delivered yet
                for address in addresses:
                    try:
                        for when, msg in self.client.get_events(address):
                            if when >= start:
                                on_event(address, (when, msg))
                    except Exception:
                        pass
            while reported < len(lost):
                with self._lock:
                    self.events.append(lost[reported])
                if notify is not None:
                    notify(lost[reported])
                reported += 1

        def take() -> R:
            fut = pending.popleft()
            result = fut.result()
            fut.release()
            report()
            return result

        kw = {"resources": dict(resources)} if resources else {}
        try:
            for item in items:
                if cancel is not None and cancel():
                    raise ClusterError("the cluster run was cancelled", hint="run it again to finish")
                pending.append(self.client.submit(fn, *shared, item, pure=False, **kw))
                if len(pending) >= window:
                    yield take()
            while pending:
                if cancel is not None and cancel():
                    raise ClusterError("the cluster run was cancelled", hint="run it again to finish")
                yield take()
            report(final=True)
        finally:
            if pending:
                self.client.cancel(list(pending))
            for address in subscribed:
                try:
                    self.client.unsubscribe_topic(address)
                except Exception:
                    pass

    def close(self) -> None:
        """Close the client, and the local cluster it started."""
        try:
            self.client.close()
        finally:
            if self._local is not None:
                self._local.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cluster({self.address!r}, workers={len(self.workers())})"


def _now() -> float:
    import time

    return time.time()


def _apply(fn: Callable[[Any], R], item: Any) -> R:
    return fn(item)


# --- a task pickled once, unpickled once per worker process --------------------------------------------------


@dataclass(frozen=True)
class _Packed:
    """A task pickled once on the client (cloudpickle, Dask's own task format), sent to the workers as bytes: Dask
    passes bytes from worker to worker without pickling them again (a dataclass of ONNX models re-serialised its
    protobufs on every hop), and each worker process unpickles it once (:func:`_unpack`, by ``token``)."""

    token: str
    data: bytes | memoryview

    def __reduce_ex__(self, protocol: Any) -> Any:  # the bytes out of band: Dask sends them as frames, uncopied
        import pickle

        data = pickle.PickleBuffer(self.data) if isinstance(protocol, int) and protocol >= 5 else bytes(self.data)
        return _Packed, (self.token, data)


#: per worker process: the tasks unpickled from :class:`_Packed` values, most recent last (a few kept: a plan
#: search runs one task per plan in turn), and how many were unpickled and how many batches ran (the tests read it)
_TASKS: dict[str, Any] = {}
_TASKS_KEPT = 4
_TASKS_LOCK = threading.Lock()
_COUNTS = {"unpacked": 0, "applied": 0}


def _unpack(packed: _Packed) -> Any:
    """The task of ``packed``, unpickled on its first use in this process and kept (with the sessions it opens)."""
    with _TASKS_LOCK:
        task = _TASKS.pop(packed.token, None)
        if task is None:
            import cloudpickle

            task = cloudpickle.loads(packed.data)
            _COUNTS["unpacked"] += 1
        _TASKS[packed.token] = task
        while len(_TASKS) > _TASKS_KEPT:
            del _TASKS[next(iter(_TASKS))]
    return task


def _counts() -> dict[str, int]:
    """How many tasks this process unpickled (:func:`_unpack`) and how many items it ran; read by the tests."""
    return dict(_COUNTS)


def _warm_up(packed: _Packed) -> float:
    """Unpickle the task on this worker and let it open what it needs (its ``warm_up()``, e.g. ONNX Runtime
    sessions); the seconds it took."""
    import time

    t = time.perf_counter()
    task = _unpack(packed)
    warm = getattr(task, "warm_up", None)
    if callable(warm):
        warm()
    return time.perf_counter() - t


def _apply_packed(packed: _Packed, item: Any) -> Any:
    task = _unpack(packed)
    with _TASKS_LOCK:
        _COUNTS["applied"] += 1
    return task(item)


@dataclass(frozen=True)
class SweepTimes:
    """Where the time of the last :func:`fan_out` on a cluster went (:attr:`Cluster.last_sweep`), in seconds from
    its start: ``pack`` pickling the task once on the client; ``share`` sending it to one worker; ``ready`` until
    every worker had unpickled it and opened its sessions (``warm_up``: each worker's own seconds, the copies to the
    other workers and their warm-ups overlapping, the batches sent after); ``done`` until the last result was merged (``done - ready``: the
    batches once every worker is warm, the part that scales with the workers)."""

    tasks: int
    pack: float
    share: float
    warm_up: tuple[float, ...]
    ready: float
    done: float

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON types."""
        return {**asdict(self), "warm_up": list(self.warm_up)}


def fan_out(fn: Callable[[T], R], items: Iterable[T], workers: int, cluster: Cluster | None = None, *,
            notify: Callable[[str], Any] | None = None) -> Iterator[R]:
    """:func:`workbench.parallel.ordered_map` on ``workers`` threads, or with ``cluster`` the same ``fn`` as Dask
    tasks: ``fn`` (a picklable object holding the models) is pickled once and sent to one worker; every worker
    fetches it from the workers that have it (Dask's own transfers), unpickles it once and warms up (``fn.warm_up()``
    where defined: opening its sessions), then the batches run. Results come back in input order, so sums
    merged from them are the same bits. A dataclass ``fn`` with a ``threads`` field gets the cluster's
    :meth:`Cluster.task_threads` there. The phases' times: :attr:`Cluster.last_sweep`."""
    if cluster is None:
        from .parallel import ordered_map

        return ordered_map(fn, items, workers)
    return _fan_out(cluster, fn, items, notify)


def _fan_out(cluster: Cluster, fn: Callable[[T], R], items: Iterable[T],
             notify: Callable[[str], Any] | None) -> Iterator[R]:
    import dataclasses
    import time
    import uuid

    import cloudpickle

    task: Any = fn
    if dataclasses.is_dataclass(task) and not isinstance(task, type) and any(f.name == "threads"
                                                                             for f in dataclasses.fields(task)):
        task = dataclasses.replace(task, threads=cluster.task_threads())
    t0 = time.perf_counter()
    packed = _Packed(uuid.uuid4().hex, cloudpickle.dumps(task, protocol=5))
    t_pack = time.perf_counter()
    # to one worker, not a broadcast: the warm-ups below fetch it worker from worker (no K copies from here, no
    # conflict with an Active Memory Manager) and each worker opens its sessions as soon as its copy lands
    # (straight from here to the worker on a local cluster; through the scheduler, which any client reaches, else)
    shared = cluster.client.scatter(packed, hash=False, direct=cluster.is_local)
    t_share = time.perf_counter()
    warm = [cluster.client.submit(_warm_up, shared, workers=[w.address], allow_other_workers=True, pure=False)
            for w in cluster.workers()]
    # the batches after the warm-ups: Dask places a task where its inputs are, so batches queued while only the first
    # worker had the task would all have gone there; now every worker has it (and has opened its sessions)
    warm_up = tuple(cluster.client.gather(warm, errors="skip"))  # a worker that failed: its batches will say why
    t_ready = time.perf_counter()
    done = None
    count = 0
    try:
        for r in cluster.ordered_map(_apply_packed, items, shared=[shared], notify=notify):
            count += 1
            yield r
        done = time.perf_counter()
    finally:
        end = done or time.perf_counter()
        cluster.last_sweep = SweepTimes(count, t_pack - t0, t_share - t_pack, warm_up,
                                        t_ready - t0, end - t0)


def _takes_n_workers(client: Any) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False


def connect(address: str | Cluster, *, security: Any = None, timeout: float = 10.0,
            threads_per_worker: int = 1, resources: Mapping[str, float] | None = None) -> Cluster:
    """A :class:`Cluster` for ``address``: a scheduler the user runs (``tcp://host:port``, ``tls://...`` with
    ``security`` or Dask's TLS settings) or ``local[:N]`` (N worker processes on 127.0.0.1, default one per core;
    each advertises this machine's :func:`machine_resources`, or ``resources``). An unreachable scheduler
    raises a :class:`ClusterError` that offers the local run."""
    if isinstance(address, Cluster):
        return address
    distributed = _dask()
    target, count = parse_address(address)
    if target == "local":
        n = count or max(1, os.cpu_count() or 1)
        res = dict(machine_resources() if resources is None else resources)
        # the scheduler's HTTP server (Dask's dashboard where bokeh is installed) on a free loopback port, never
        # Dask's default :8787 on every interface
        import dask

        # the Active Memory Manager off: it would undo Cluster.share's broadcasts and hang them (see share)
        with dask.config.set({"distributed.scheduler.active-memory-manager.start": False}):
            local = distributed.LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True,
                                             host=LOCAL_HOST, dashboard_address=f"{LOCAL_HOST}:0",
                                             resources=res or None, silence_logs=40, worker_dashboard_address=None)
        client = distributed.Client(local, set_as_default=False)
        return Cluster(client, f"local:{n}", local)
    try:
        client = distributed.Client(target, security=security, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {target} ({type(exc).__name__}: {exc})",
                           hint="check the address and that `dask scheduler` runs there (TLS: the certificates in "
                                "Dask's distributed.comm.tls settings), or run locally: leave out --cluster, or "
                                "--cluster local[:N] for worker processes on this machine") from exc
    return Cluster(client, target)
