"""Audits at scale: ``collapseguard audit`` as datatrove pipeline steps, run by its Local, Slurm or Ray executor.

The single-process audit (:func:`collapseguard.audit.audit_path`) reads the data twice; here each pass is a
datatrove stage over N shards (the data's files dealt out to N tasks, as datatrove's readers do), and
datatrove's own MinHash stages find near-duplicates across shards:

1. ``scan`` (N tasks): reader -> :class:`AuditScanStep` (every text into a mergeable
   :class:`~collapseguard.audit.ShardScan`: counts, provenance from ``Document.metadata``, outliers, gold
   leakage) -> datatrove ``MinhashDedupSignature``;
2. ``buckets`` (one task per MinHash bucket) and 3. ``cluster`` (1 task): datatrove ``MinhashDedupBuckets``
   and ``MinhashDedupCluster``;
4. ``sample`` (N tasks): reader -> :class:`AuditSampleStep`: the diversity sample (the same texts the
   single-process audit picks) measured into the project's mergeable metric states.

The driver then merges the shards' states and judges them with :func:`collapseguard.audit.judge`, as the
single-process audit does. Each task writes its state atomically and datatrove marks a task done only
when it finishes, so a killed audit resumes where it stopped: run the same command again.

Equal to the single-process audit: every count, outlier, provenance and leakage finding exactly; the
diversity metrics to float rounding (shards' sums added in another order, relative 1e-9); the
near-duplicate share is a sketch here (LSH without the exact Jaccard check, see :data:`MINHASH`).

Importing this module needs datatrove (``pip install 'collapseguard[distributed]'``); the core does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from collapseguard.audit.dataset import (
    AuditResult,
    AuditSettings,
    DataSource,
    GoldChecks,
    ShardScan,
    judge,
    sample_indices,
    text_of,
)
from collapseguard.audit.shingles import jaccard, shingle_hashes, words_of
from collapseguard.gold.goldset import GoldSet
from collapseguard.gold.provenance import normalize_label
from collapseguard.metrics.suite import MetricSuite

INSTALL = "pip install 'collapseguard[distributed]'"
try:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.base import PipelineStep
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader, ParquetReader
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer
except ImportError as exc:  # pragma: no cover - exercised where datatrove is absent
    raise ImportError(f"audits at scale run on datatrove, which is not installed ({exc}): {INSTALL}") from None

EXECUTORS = ("local", "slurm", "ray")
STAGES = ("scan", "buckets", "cluster", "sample")
#: datatrove MinHash for near-duplicates, over the project's shingles (word 5-grams, 61-bit hashes); 9 buckets
#: of 10 hashes put the LSH threshold at (1/9)^(1/10) ≈ 0.80, the single-process audit's Jaccard bound.
#: Without its exact check a pair at Jaccard 0.9 is found with probability 0.98, one at 0.7 with 0.23.
MINHASH = MinhashConfig(n_grams=5, num_buckets=9, hashes_per_bucket=10, seed=1,
                        hash_config=HashConfig(precision=64, hash_fc="sha1"))
EXAMPLE_CLUSTERS = 5


class ProjectWords(WordTokenizer):
    """The words of the project's shingles (lower-cased ``\\w+`` runs): no language model to load."""

    def __init__(self) -> None:
        super().__init__("collapseguard")

    def word_tokenize(self, text: str) -> list[str]:
        return words_of(text)

    def sent_tokenize(self, text: str) -> list[str]:  # pragma: no cover - MinHash uses words only
        raise NotImplementedError

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:  # pragma: no cover
        raise NotImplementedError


class ShingledMinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash signature stage over the project's shingles, so that both audits compare the very
    same word 5-gram sets (and a text of fewer than 5 words is one shingle, as in the single-process audit)."""

    def __init__(self, output_folder: str, config: MinhashConfig) -> None:
        super().__init__(output_folder, config=config, language=ProjectWords())

    def get_shingles(self, text: str) -> np.ndarray:
        return shingle_hashes(text).reshape((-1, 1))


@dataclass(frozen=True)
class AuditJob:
    """What every task needs: where the data and the work folder are, and how texts are read and measured."""

    work_dir: str
    data_root: str
    kind: str
    text_field: str
    provenance_field: str | None
    max_length: int
    seed: int
    leak_containment: float

    def path(self, *parts: str) -> Path:
        return Path(self.work_dir, *parts)

    def files(self) -> dict[str, int]:
        names = self.path("paths.txt").read_text(encoding="utf-8").splitlines()
        return {name: i for i, name in enumerate(names)}

    def gold(self) -> GoldSet:
        return GoldSet.from_jsonl(self.path("gold.jsonl"))

    def save(self, relative: str, write: Callable[[Any], None]) -> None:
        """Write a task's state under the work folder atomically: a killed task leaves no half-written state."""
        dest = self.path(relative)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, dest)

    def save_scan(self, rank: int, scan: ShardScan) -> None:
        self.save(f"scan/{rank:05d}.json", lambda fh: fh.write(json.dumps(scan.to_dict()).encode()))

    def scans(self, tasks: int) -> ShardScan:
        merged = ShardScan()
        for rank in range(tasks):
            merged.merge(ShardScan.from_dict(json.loads(self.path(f"scan/{rank:05d}.json").read_text())))
        return merged

    def reader(self) -> PipelineStep:
        adapter = DocumentAdapter(self.text_field, self.provenance_field, self.kind)
        paths = str(self.path("paths.txt"))
        if self.kind == "jsonl":
            return JsonlReader(self.data_root, paths_file=paths, adapter=adapter, text_key=self.text_field,
                               add_file_path=False)
        return ParquetReader(self.data_root, paths_file=paths, adapter=adapter, text_key=self.text_field)


class DocumentAdapter:
    """Record -> datatrove Document fields: the text, and the file and provenance label in ``metadata``.

    Reads records as :class:`~collapseguard.audit.DataSource` does: a record without a string text field
    is an error naming the file and the field; an empty text is skipped (datatrove skips it).
    """

    def __init__(self, text_field: str, provenance_field: str | None, kind: str = "jsonl") -> None:
        self.text_field, self.provenance_field, self.kind = text_field, provenance_field, kind

    def __call__(self, reader: Any, data: dict, path: str, id_in_file: int | str) -> dict[str, Any]:
        where = f"{path}:{int(id_in_file) + 1}" if self.kind == "jsonl" else f"{path}: record {id_in_file}"
        text = text_of(data, self.text_field, where)
        pf = self.provenance_field
        label = normalize_label(data.get(pf)) if pf and pf in data else None
        return {"text": text or "", "id": f"{path}/{id_in_file}", "metadata": {"cg_file": path, "provenance": label}}


class _Positions:
    """(file index, index in the file) of each document of a task's stream, in order."""

    def __init__(self, files: dict[str, int]) -> None:
        self.files, self.counts = files, {}

    def __call__(self, doc: Any) -> tuple[int, int]:
        fi = self.files[doc.metadata["cg_file"]]
        li = self.counts.get(fi, 0)
        self.counts[fi] = li + 1
        return fi, li


class _AuditStep(PipelineStep):
    type = "📊 - STATS"

    def __init__(self, job: AuditJob) -> None:
        super().__init__()
        self.job = job


class AuditScanStep(_AuditStep):
    """Pass 1 over a shard: every text into a :class:`~collapseguard.audit.ShardScan`; documents go on."""

    name = "🔎 collapseguard scan"

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        checks = GoldChecks(self.job.gold().texts, leak_containment=self.job.leak_containment)
        position, scan = _Positions(self.job.files()), ShardScan()
        for doc in data:
            with self.track_time():
                scan.add(position(doc), doc.text, doc.metadata.get("provenance"), checks)
                self.stat_update("texts")
            yield doc
        self.job.save_scan(rank, scan)


class AuditSampleStep(_AuditStep):
    """Pass 2 over a shard: the shard's part of the diversity sample, measured into mergeable metric states,
    and the texts of the first near-duplicate clusters (examples)."""

    name = "🧪 collapseguard sample"

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> None:
        job = self.job
        scan = job.scans(world_size)
        offsets = scan.offsets()
        monitor = AuditSettings(max_length=job.max_length).monitor(job.gold())
        wanted = set(sample_indices(scan.num_texts, min(scan.num_texts, len(monitor.split)), job.seed).tolist())
        clusters = iter(_read_pairs(job.path("minhash", "clusters", f"{rank:06d}.clusters")))
        nxt = next(clusters, None)
        position, picked, members = _Positions(job.files()), [], {}
        for k, doc in enumerate(data):  # k: the document's index in the stream, as MinHash numbered it
            with self.track_time():
                fi, li = position(doc)
                g = offsets[fi] + li
                if g in wanted:
                    picked.append(doc.text)
                while nxt is not None and nxt[0] < k:
                    nxt = next(clusters, None)
                if nxt is not None and nxt[0] == k and nxt[1] < EXAMPLE_CLUSTERS:
                    kept = members.setdefault(nxt[1], [])
                    if len(kept) < 2:
                        kept.append((g, doc.text))
        suite, extra = monitor.measure(picked), {"clusters": {str(c): kept for c, kept in members.items()}}
        job.save(f"sample/{rank:05d}.npz", lambda fh: save_states(fh, suite, extra))


def _pack(key: str, value: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"kind": "array"}
    if isinstance(value, tuple):
        return {"kind": "tuple", "items": [_pack(f"{key}.{i}", v, arrays) for i, v in enumerate(value)]}
    if isinstance(value, list) and all(isinstance(v, bytes) for v in value):
        arrays[key] = np.frombuffer(b"".join(value), dtype=np.uint8)
        arrays[f"{key}.len"] = np.array([len(v) for v in value], dtype=np.int64)
        return {"kind": "bytes"}
    if isinstance(value, list) and all(isinstance(v, np.ndarray) and v.ndim == 1 for v in value):
        arrays[key] = np.concatenate(value) if value else np.empty(0, np.int64)
        arrays[f"{key}.len"] = np.array([v.size for v in value], dtype=np.int64)
        return {"kind": "arrays"}
    if isinstance(value, bool | int | float | np.integer | np.floating):
        return {"kind": "scalar", "value": value.item() if isinstance(value, np.generic) else value}
    raise TypeError(f"metric state {key} is a {type(value).__name__}, which cannot be stored")


def _unpack(key: str, spec: dict[str, Any], arrays: Any) -> Any:
    kind = spec["kind"]
    if kind == "array":
        return arrays[key]
    if kind == "tuple":
        return tuple(_unpack(f"{key}.{i}", s, arrays) for i, s in enumerate(spec["items"]))
    if kind in ("bytes", "arrays"):
        flat, ends = arrays[key], np.cumsum(arrays[f"{key}.len"])
        parts = np.split(flat, ends[:-1]) if ends.size else []
        return [p.tobytes() for p in parts] if kind == "bytes" else [p.copy() for p in parts]
    return spec["value"]


def save_states(fh: Any, suite: MetricSuite, extra: dict[str, Any]) -> None:
    """A metric suite's states (and JSON ``extra``) as one ``.npz``: arrays and JSON only, nothing executable."""
    arrays: dict[str, np.ndarray] = {}
    layout = {f"{name}/{state}": _pack(f"{name}/{state}", value, arrays)
              for name, metric in suite.metrics.items() for state, value in metric.states().items()}
    arrays["layout"] = np.frombuffer(json.dumps({"layout": layout, "extra": extra}).encode(), dtype=np.uint8)
    np.savez(fh, **arrays)


def load_states(path: Path, suite: MetricSuite) -> dict[str, Any]:
    """Set ``suite``'s states from :func:`save_states`'s file; returns its ``extra``."""
    with np.load(path, allow_pickle=False) as arrays:
        meta = json.loads(arrays["layout"].tobytes())
        for key, spec in meta["layout"].items():
            name, state = key.split("/")
            setattr(suite.metrics[name], state, _unpack(key, spec, arrays))
    return meta["extra"]


def _read_pairs(path: Path) -> list[tuple[int, int]]:
    if not path.is_file():
        return []
    raw = path.read_bytes()
    return list(struct.iter_unpack("<2I", raw))


# -------------------------------------------------------------------- driver
def _fingerprint(source: DataSource, gold: GoldSet, job: AuditJob, tasks: int) -> dict[str, Any]:
    """Everything the stages' outputs depend on: a work folder is resumed only under the same."""
    files = [[name, (source.root / name).stat().st_size, (source.root / name).stat().st_mtime_ns]
             for name in source.files]
    settings = {k: v for k, v in asdict(job).items() if k != "work_dir"}
    return {"version": 1, "data_files": files, "gold": gold.fingerprint, "tasks": tasks, "minhash": str(MINHASH),
            **settings}


def _prepare(data: str | Path, gold: GoldSet, tasks: int | None, work_dir: str | Path | None, job_args: dict
             ) -> tuple[AuditJob, int]:
    source = DataSource(data, text_field=job_args["text_field"], provenance_field=job_args["provenance_field"])
    if source.kind == "text":
        raise ValueError(f"DATA={str(data)!r} is plain text, which only the single-process audit reads: drop "
                         "--executor, or write it as JSONL ({\"text\": ...} per line) to audit it at scale")
    next(iter(source.records()), None)  # a wrong --text-field fails here, before any task starts
    tasks = tasks or len(source.files)
    job = AuditJob("", str(source.root.resolve()), source.kind, **job_args)
    finger = _fingerprint(source, gold, job, tasks)
    digest = hashlib.sha256(json.dumps(finger, sort_keys=True).encode()).hexdigest()[:10]
    work = Path(work_dir) if work_dir else Path("runs") / f"audit-{Path(data).resolve().name}-{digest}"
    work = work.resolve()
    stamp = work / "audit.json"
    if stamp.is_file():
        before = json.loads(stamp.read_text(encoding="utf-8"))
        differ = sorted(k for k in finger.keys() | before.keys() if before.get(k) != json.loads(json.dumps(finger.get(k))))
        if differ:
            raise ValueError(f"--work-dir {str(work)!r} holds an audit with other settings or data ({', '.join(differ)} "
                             "differ): pass another --work-dir, or delete it to start over")
    else:
        work.mkdir(parents=True, exist_ok=True)
        (work / "paths.txt").write_text("".join(f"{name}\n" for name in source.files), encoding="utf-8")
        (work / "gold.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in gold.texts), encoding="utf-8")
        stamp.write_text(json.dumps(finger, indent=1), encoding="utf-8")
    if tasks > len(source.files):
        _say(f"note: {tasks} tasks for {len(source.files)} file(s): a task reads whole files, so "
             f"{tasks - len(source.files)} task(s) will have nothing to read")
    return AuditJob(str(work), **{k: v for k, v in asdict(job).items() if k != "work_dir"}), tasks


def _pipelines(job: AuditJob) -> dict[str, tuple[list[Any], Callable[[int], int]]]:
    """Each stage's pipeline and its task count (given the data's)."""
    mh = job.path("minhash")
    return {
        "scan": ([job.reader(), AuditScanStep(job),
                  ShingledMinhashSignature(str(mh / "signatures"), MINHASH)],
                 lambda n: n),
        "buckets": ([MinhashDedupBuckets(str(mh / "signatures"), str(mh / "buckets"), config=MINHASH)],
                    lambda n: MINHASH.num_buckets),
        "cluster": ([MinhashDedupCluster(str(mh / "buckets"), str(mh / "clusters"), config=MINHASH,
                                         save_cluster_id=True)], lambda n: 1),
        "sample": ([job.reader(), AuditSampleStep(job)], lambda n: n),
    }


def _executors(job: AuditJob, kind: str, tasks: int, workers: int | None, slurm: dict[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for stage, (pipeline, count) in _pipelines(job).items():
        n, logs = count(tasks), str(job.path("logs", stage))
        if kind == "local":
            ex = LocalPipelineExecutor(pipeline, tasks=n, workers=min(workers or os.cpu_count() or 1, n),
                                       logging_dir=logs)
        elif kind == "ray":
            from datatrove.executor.ray import RayPipelineExecutor

            ex = RayPipelineExecutor(pipeline, tasks=n, workers=min(workers or n, n), logging_dir=logs)
        else:
            from datatrove.executor.slurm import SlurmPipelineExecutor

            ex = SlurmPipelineExecutor(pipeline, tasks=n, workers=workers or -1, logging_dir=logs,
                                       time=slurm["time"], partition=slurm["partition"],
                                       job_name=f"collapseguard-audit-{stage}", depends=out[-1][1] if out else None)
        out.append((stage, ex))
    return out


def _check_executor(kind: str, slurm: dict[str, Any]) -> None:
    if kind not in EXECUTORS:
        raise ValueError(f"--executor {kind!r} is not one of {', '.join(EXECUTORS)}")
    if kind == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ImportError(f"--executor ray needs ray, which is not installed: {INSTALL}") from None
    if kind == "slurm":
        if not slurm.get("partition"):
            raise ValueError("--executor slurm needs --partition NAME: the Slurm partition the tasks run on")
        if shutil.which("sbatch") is None:
            raise ValueError("--executor slurm submits jobs with Slurm's sbatch, which is not on PATH: run the command "
                             "on a cluster login node, or use --executor local")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _merge(job: AuditJob, tasks: int, gold: GoldSet, settings: AuditSettings, engine: str) -> AuditResult:
    scan = job.scans(tasks)
    monitor = settings.monitor(gold)
    suite = monitor.new_suite()
    members: dict[int, list[tuple[int, str]]] = {}
    for rank in range(tasks):
        part = monitor.new_suite()
        extra = load_states(job.path("sample", f"{rank:05d}.npz"), part)
        suite.merge(part)
        for cid, kept in extra["clusters"].items():
            members.setdefault(int(cid), []).extend(tuple(k) for k in kept)
    removed = sum(p.stat().st_size // 4 for p in job.path("minhash", "clusters").glob("*.remove"))
    examples = []
    for cid in sorted(members):
        kept = sorted(members[cid])
        if len(kept) > 1:
            (i, a), (j, b) = kept[:2]
            examples.append((i, j, jaccard(shingle_hashes(a), shingle_hashes(b))))
    return judge(scan, suite, monitor, settings, near_duplicates=removed, near_duplicate_examples=examples,
                 engine=engine)


def run_audit(data: str | Path, gold: GoldSet, *, executor: str = "local", tasks: int | None = None,
              workers: int | None = None, work_dir: str | Path | None = None, text_field: str = "text",
              provenance_field: str | None = "provenance", max_length: int = 64, seed: int = 0,
              slurm: dict[str, Any] | None = None, **settings: Any) -> AuditResult | None:
    """Audit ``data`` (a file or folder of JSONL or parquet files) as datatrove stages; the verdict of
    :func:`collapseguard.audit.audit_path` on the same data.

    ``executor``: ``"local"`` (processes on this machine), ``"ray"`` (the cluster at ``RAY_ADDRESS``, else a
    local one) or ``"slurm"`` (jobs on ``slurm["partition"]``; needs ``sbatch``). ``tasks``: shards (default:
    one per file); ``workers``: tasks at once. ``work_dir``: states and logs; the same command with the same
    folder resumes. ``settings``: the audit's (``thresholds``, ``max_near_duplicates``, ...).

    Returns the result, or None for Slurm when the jobs were submitted (run it again once they have
    finished to merge and judge).

    Raises:
        ValueError / ImportError: a bad setting or a missing requirement, named, before anything runs.
        RuntimeError: a stage left tasks unfinished (its logs are named).
    """
    slurm = slurm or {}
    _check_executor(executor, slurm)
    config = AuditSettings(max_length=max_length, seed=seed, **settings)
    config.monitor(gold)  # a gold set that cannot serve (arrays, too few texts) fails before any task
    job_args = {"text_field": text_field, "provenance_field": provenance_field, "max_length": max_length,
                "seed": seed, "leak_containment": config.leak_containment}
    job, tasks = _prepare(data, gold, tasks, work_dir, job_args)
    engine = f"datatrove {executor} executor, {tasks} tasks (work dir {job.work_dir})"
    stages = _executors(job, executor, tasks, workers, slurm)
    if all(not ex.get_incomplete_ranks() for _, ex in stages):
        _say(f"all stages already done in {job.work_dir}: merging")
        return _merge(job, tasks, gold, config, engine)
    if executor == "slurm":
        stages[-1][1].run()  # submits every unfinished stage, each depending on the one before
        _say(f"submitted the audit's Slurm jobs ({' -> '.join(STAGES)}); logs in {job.path('logs')}. Run this same "
             "command again once they have finished: it merges the shards and prints the verdict")
        return None
    if executor == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
    for stage, ex in stages:
        left = ex.get_incomplete_ranks()
        if not left:
            _say(f"[{stage}] done earlier: skipped")
            continue
        start = time.perf_counter()
        _say(f"[{stage}] {len(left)} of {ex.world_size} task(s) to run")
        ex.run()
        unfinished = ex.get_incomplete_ranks()
        if unfinished:
            raise RuntimeError(f"the audit's {stage} stage left task(s) {unfinished} unfinished: see "
                               f"{job.path('logs', stage, 'logs')}; run the same command again to resume")
        _say(f"[{stage}] done in {time.perf_counter() - start:.1f}s")
    return _merge(job, tasks, gold, config, engine)
