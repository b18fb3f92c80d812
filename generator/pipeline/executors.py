"""Where the compute of a build runs: in this process (``local``) or on a Dask cluster (``dask``).

The runner plans every job with its content-addressed key (:mod:`generator.pipeline.plan`), serves
what the cache holds, and hands the misses to an executor. An executor only *computes*: it
turns missing jobs into records in the cache. Writing data files, tables, figures and pages
stays with the runner, in plan order, so the outputs do not depend on the executor.

``local``
    Each job's compute thunk runs in this process, in plan order, when the runner asks for
    its record (the behaviour of every build before the Dask executor).

``dask``
    The misses of one model are grouped into tasks of (model, section, chunk of images) and
    submitted to a ``dask.distributed`` cluster: an existing one (``scheduler`` address) or a
    :class:`distributed.LocalCluster` of ``workers`` processes started here. A worker plugin
    (:class:`ModelPlugin`) keeps each model loaded once per worker, keyed by its identity.
    Workers write each record into the result cache, which must be a folder every worker sees
    (a shared filesystem); the runner then reads the records from there. With the cache off
    (``--no-cache``) records travel back with the task result instead. A worker that dies
    mid-task has its task rescheduled on another worker by the scheduler; a task that raises
    outside a job is retried ``retries`` times. Workers pin torch's intra-op thread count (by
    default to this process's), because reductions in a forward or backward pass round
    differently under other thread counts, and the outputs must be byte-identical to a local run.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..store.cache import Record, ResultCache
from .report import trimmed_traceback

if TYPE_CHECKING:
    from ..models.loaded import LoadedModel
    from .plan import Job
    from ..sections import Section
    from ..config.settings import GalleryConfig, ModelConfig

__all__ = ["DaskExecutor", "ExecutorSpec", "LocalExecutor", "ModelPlugin", "Outcome", "PLUGIN_NAME", "WorkItem",
           "compute_chunk", "make_executor"]

#: The worker plugin's name on every worker.
PLUGIN_NAME = "vit-gallery-models"
#: Fault injection for tests: a folder; while ``<folder>/armed`` exists, the first task to create
#: ``<folder>/died`` kills its worker process right after storing a result.
DIE_ONCE_ENV = "VIT_GALLERY_TEST_DIE_ONCE"


@dataclass(frozen=True)
class ExecutorSpec:
    """How and where compute runs (from ``--executor``, ``--scheduler``, ``--workers`` …).

    Attributes:
        kind: "local" (this process) or "dask".
        scheduler: address of a running Dask scheduler to join (``tcp://host:8786``); None starts
            a :class:`distributed.LocalCluster`.
        workers: worker processes of that LocalCluster (one thread each unless ``threads_per_worker``).
        threads_per_worker: Dask task threads per LocalCluster worker.
        chunk_size: images per task; larger chunks mean less scheduling overhead, smaller ones
            better balance and less work lost when a worker dies.
        torch_threads: torch intra-op threads on each worker; None: this process's count (so the
            outputs are byte-identical to a local run on the same kind of machine).
        retries: extra tries of a task that raised outside its jobs.
    """

    kind: str = "local"
    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    chunk_size: int = 8
    torch_threads: int | None = None
    retries: int = 2

    def __post_init__(self) -> None:
        if self.kind not in ("local", "dask"):
            raise ValueError(f"unknown executor {self.kind!r}: use 'local' or 'dask'")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be ≥ 1, got {self.chunk_size}")
        if self.kind == "local" and (self.scheduler or self.workers):
            raise ValueError("--scheduler and --workers need --executor dask")

    def describe(self) -> dict[str, Any]:
        """For the run report."""
        if self.kind == "local":
            return {"kind": "local"}
        return {"kind": "dask", "scheduler": self.scheduler or "LocalCluster", "workers": self.workers,
                "threads_per_worker": self.threads_per_worker if not self.scheduler else None,
                "chunk_size": self.chunk_size, "torch_threads": self.torch_threads, "retries": self.retries}


@dataclass
class WorkItem:
    """One missing job handed to an executor.

    Attributes:
        index: its position in the model's plan (the runner's handle on it).
        section: the section instance (its name travels to workers, not the instance).
        job: the job (section, model, image slug, cache key).
        target: the image (per-image sections) or the unit name (e.g. a dataset).
        compute: the local thunk (only the local executor calls it).
    """

    index: int
    section: Section
    job: Job
    target: Any
    compute: Callable[[], Record]


@dataclass
class Outcome:
    """What became of one job: its record, or an error (failures are data)."""

    record: Record | None
    seconds: float = 0.0
    error: str = ""
    traceback: str = ""
    write_fault: bool = False
    worker: str | None = None
    #: True when the record came from the cache (the runner's lookup, not the executor).
    cached: bool = False
    #: The local executor passes the exception itself, so the runner handles it as it always has.
    exception: BaseException | None = None


class LocalExecutor:
    """Compute in this process, one job at a time, when the runner asks for it."""

    spec = ExecutorSpec()

    def __init__(self, cache: ResultCache):
        self.cache = cache

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return self.spec.describe()

    def submit(self, model: LoadedModel, items: list[WorkItem], progress: Callable[[int], None]) -> "LocalBatch":
        return LocalBatch(self.cache, {item.index: item for item in items}, progress)


class LocalBatch:
    def __init__(self, cache: ResultCache, items: dict[int, WorkItem], progress: Callable[[int], None]):
        self.cache, self.items, self.progress = cache, items, progress

    def result(self, index: int) -> Outcome:
        item = self.items.pop(index)
        start = time.perf_counter()
        try:
            record = item.compute()
            self.cache.put(item.job.key, record)
            return Outcome(record, time.perf_counter() - start)
        except Exception as exc:  # the runner decides: a failure record, a write fault, or fail-fast
            return Outcome(None, time.perf_counter() - start, exception=exc)
        finally:
            self.progress(1)

    def release(self) -> None:
        self.items.clear()


def make_executor(spec: ExecutorSpec, config: GalleryConfig, cache: ResultCache, log: Callable[[str], None]):
    """The executor for ``spec`` (a context manager: a Dask client and cluster close on exit)."""
    if spec.kind == "local":
        return LocalExecutor(cache)
    return DaskExecutor(spec, config, cache, log)


# --------------------------------------------------------------------------- Dask


@dataclass(frozen=True)
class ChunkTask:
    """Everything a worker needs for one task: plain, serialisable data (no module, no tensors)."""

    config: GalleryConfig
    model_config: ModelConfig
    weights_sha256: str
    device: str
    section: str
    #: (job, image item or unit name) per job, in plan order.
    items: tuple
    cache_root: str
    use_cache: bool
    torch_threads: int


@dataclass
class ItemResult:
    """A worker's answer for one job (records travel back only when the cache is off)."""

    key: str
    ok: bool
    seconds: float
    worker: str
    record: Record | None = None
    error: str = ""
    traceback: str = ""
    write_fault: bool = False


class ModelPlugin:
    """Worker plugin: each model loaded once per worker thread, keyed by its identity (config, weights hash, device).

    A worker with several threads holds one copy per thread: the explanation hooks that sections
    put on a module would otherwise see the forward passes of the other thread. At most
    ``max_models`` modules per thread stay loaded (least recently used first out), so a worker's
    memory does not grow with the number of models of a gallery.
    """

    name = PLUGIN_NAME
    #: A build that joins a cluster where an earlier build registered the plugin keeps its loaded models.
    idempotent = True

    def __init__(self, max_models: int = 2):
        self.max_models = max_models
        self.models: dict[tuple, LoadedModel] = {}
        self.loads = 0
        self._lock = threading.Lock()

    def setup(self, worker=None) -> None:
        self.models = {}

    def teardown(self, worker=None) -> None:
        self.models.clear()

    def model(self, config: ModelConfig, weights_sha256: str, device: str, memo_dir: Path | None) -> LoadedModel:
        from ..models.identity import identity_key
        from ..models.loaded import open_model

        thread = threading.get_ident()
        key = (thread, identity_key(config), weights_sha256, device)
        with self._lock:
            model = self.models.pop(key, None)
        if model is None:
            model = open_model(config, device, memo_dir)
            if model.weights_sha256 != weights_sha256:
                raise RuntimeError(f"model {config.name!r}: this worker's weights differ from the client's "
                                   f"(SHA-256 {model.weights_sha256[:12]}… ≠ {weights_sha256[:12]}…); "
                                   "every worker must see the same weights file")
            model.module  # noqa: B018  (load now, once)
            self.loads += 1
        with self._lock:
            self.models[key] = model  # most recent last
            mine = [k for k in self.models if k[0] == thread]
            for old in mine[:max(0, len(mine) - self.max_models)]:
                del self.models[old]
        return model

    def __getstate__(self) -> dict:  # registered from the client: sent without its lock and models
        return {"max_models": self.max_models}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_models"])


def _plugin_class():
    """:class:`ModelPlugin` as a :class:`distributed.WorkerPlugin` (distributed is imported only for Dask runs)."""
    from distributed import WorkerPlugin

    class GalleryModelPlugin(ModelPlugin, WorkerPlugin):
        pass

    return GalleryModelPlugin


def _die_once_for_tests() -> None:
    folder = os.environ.get(DIE_ONCE_ENV)
    if not folder or not os.path.exists(os.path.join(folder, "armed")):
        return
    try:
        fd = os.open(os.path.join(folder, "died"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(17)  # a worker process dying mid-task, as an OOM kill or a lost node would


def compute_chunk(task: ChunkTask) -> list[ItemResult]:
    """Worker entry point: compute one (model, section, chunk of images) task into the shared cache.

    A job that raises becomes an error in its :class:`ItemResult`; the rest of the chunk goes on.
    """
    from distributed import get_worker

    from .plan import compute_job
    from ..relevance.registry import RelevanceStore
    from ..sections import SECTIONS

    worker = get_worker()
    address = worker.address
    import torch

    if torch.get_num_threads() != task.torch_threads:
        torch.set_num_threads(task.torch_threads)
    cache = ResultCache(Path(task.cache_root), enabled=task.use_cache)
    start = time.perf_counter()
    try:
        plugin = worker.plugins[PLUGIN_NAME]
        memo = Path(task.cache_root) / "models" if task.use_cache else None
        model = plugin.model(task.model_config, task.weights_sha256, task.device, memo)
        section = next(cls for cls in SECTIONS if cls.name == task.section)(task.config)
        section.use_cache = task.use_cache
        section.store = RelevanceStore(cache if task.use_cache else None)
    except Exception as exc:  # the model or section cannot be set up here: every job of the chunk fails
        error, tb = f"{type(exc).__name__}: {exc}", trimmed_traceback(exc)
        seconds = (time.perf_counter() - start) / max(1, len(task.items))
        return [ItemResult(job.key, False, seconds, address, error=error, traceback=tb) for job, _ in task.items]
    out = []
    for job, target in task.items:
        start = time.perf_counter()
        try:
            record = compute_job(section, model, target)
            cache.put(job.key, record)
            out.append(ItemResult(job.key, True, time.perf_counter() - start, address,
                                  record=None if task.use_cache else record))
            _die_once_for_tests()  # (tests only) after a first result is stored: truly mid-task
        except Exception as exc:
            from ..store.atomic import write_fault

            fault = write_fault(exc)
            out.append(ItemResult(job.key, False, time.perf_counter() - start, address,
                                  error=fault.strerror if fault is not None else f"{type(exc).__name__}: {exc}",
                                  traceback=trimmed_traceback(exc), write_fault=fault is not None))
    return out


class DaskExecutor:
    """Compute on a Dask cluster: one task per (model, section, chunk of ``chunk_size`` images)."""

    def __init__(self, spec: ExecutorSpec, config: GalleryConfig, cache: ResultCache, log: Callable[[str], None]):
        self.spec, self.config, self.cache, self.log = spec, config, cache, log
        self.client = None
        self.cluster = None
        self.reader = ResultCache(cache.root)  # its hit counts are not the build's: reads of fresh results
        self.torch_threads = spec.torch_threads
        self.tasks_submitted = 0

    def __enter__(self) -> "DaskExecutor":
        return self

    def _connect(self) -> None:
        if self.client is not None:
            return
        from distributed import Client, LocalCluster

        if self.spec.scheduler:
            self.client = Client(self.spec.scheduler)
        else:
            self.cluster = LocalCluster(n_workers=self.spec.workers or 1, threads_per_worker=self.spec.threads_per_worker,
                                        processes=True, host="127.0.0.1", dashboard_address=None)
            self.client = Client(self.cluster)
        self.client.register_plugin(_plugin_class()(), name=PLUGIN_NAME)
        if self.torch_threads is None:
            import torch

            self.torch_threads = torch.get_num_threads()
        self.log(f"dask: {len(self.client.scheduler_info().get('workers', {}))} workers at "
                 f"{self.client.scheduler.address}, torch threads per worker {self.torch_threads}")

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            try:
                self.client.close()
            finally:
                if self.cluster is not None:
                    self.cluster.close()
        self.client = self.cluster = None

    def describe(self) -> dict[str, Any]:
        """The spec, with what was found: the scheduler's address, workers seen, torch threads, tasks."""
        info = {**self.spec.describe(), "torch_threads": self.torch_threads, "tasks": self.tasks_submitted}
        if self.client is not None:
            info["scheduler_address"] = self.client.scheduler.address
            info["workers_seen"] = sorted(self.client.scheduler_info().get("workers", {}))
        return info

    def submit(self, model: LoadedModel, items: list[WorkItem], progress: Callable[[int], None]) -> "DaskBatch":
        """Submit the model's missing jobs now (they run while the runner writes other models' outputs)."""
        from ..models.identity import identity_key

        batch = DaskBatch(self, progress)
        if not items:
            return batch
        self._connect()
        device = model.device_spec if isinstance(model.device_spec, str) else str(model.device_spec)
        by_section: dict[str, list[WorkItem]] = {}
        for item in items:
            by_section.setdefault(item.section.name, []).append(item)
        size = self.spec.chunk_size
        for section, group in by_section.items():
            for start in range(0, len(group), size):
                chunk = group[start:start + size]
                task = ChunkTask(config=self.config, model_config=model.config, weights_sha256=model.weights_sha256,
                                 device=device, section=section, items=tuple((i.job, i.target) for i in chunk),
                                 cache_root=str(self.cache.root), use_cache=self.cache.enabled,
                                 torch_threads=self.torch_threads)
                name = f"vit-gallery-{section}-{identity_key(model.config)[:8]}-{chunk[0].job.key[:16] or start}"
                future = self.client.submit(compute_chunk, task, key=name, pure=False, retries=self.spec.retries)
                future.add_done_callback(lambda f, n=len(chunk): f.status != "cancelled" and progress(n))
                batch.add(future, chunk)
                self.tasks_submitted += 1
        return batch


class DaskBatch:
    def __init__(self, executor: DaskExecutor, progress: Callable[[int], None]):
        self.executor = executor
        self.progress = progress
        self.futures: dict[int, Any] = {}  # plan index → the future of its chunk
        self.chunks: dict[Any, list[WorkItem]] = {}
        self.done: dict[int, Outcome] = {}

    def add(self, future, chunk: list[WorkItem]) -> None:
        self.chunks[future.key] = chunk
        for item in chunk:
            self.futures[item.index] = future

    def result(self, index: int) -> Outcome:
        if index not in self.done:
            self._collect(self.futures[index])
        return self.done.pop(index)

    def _collect(self, future) -> None:
        chunk = self.chunks.pop(future.key)
        try:
            answers = future.result()
        except Exception as exc:  # the task could not finish anywhere (workers died too often, lost cluster …)
            worker = getattr(getattr(exc, "last_worker", None), "address", None)
            error = f"{type(exc).__name__}: {exc}"
            for item in chunk:
                self.done[item.index] = Outcome(None, error=error, traceback=trimmed_traceback(exc), worker=worker)
            return
        reader = self.executor.reader
        for item, answer in zip(chunk, answers):
            if not answer.ok:
                self.done[item.index] = Outcome(None, answer.seconds, error=answer.error, traceback=answer.traceback,
                                                write_fault=answer.write_fault, worker=answer.worker)
                continue
            record = answer.record if answer.record is not None else reader.get(item.job.key)
            if record is None:
                self.done[item.index] = Outcome(
                    None, answer.seconds, worker=answer.worker,
                    error=f"the worker stored this result in {reader.root}, but it cannot be read here: "
                          "the cache folder must be one shared filesystem that every worker and this client see")
            else:
                self.done[item.index] = Outcome(record, answer.seconds, worker=answer.worker)

    def release(self) -> None:
        for future in {id(f): f for f in self.futures.values()}.values():
            future.cancel()
        self.futures.clear()
        self.chunks.clear()
