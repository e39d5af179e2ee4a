"""Audits at scale: ``collapseguard audit`` as datatrove pipeline steps, run by its Local, Slurm or Ray executor.

The single-process audit (:func:`collapseguard.audit.audit_path`) reads the data once and re-reads only what
its near-duplicate check needs; here each pass is a datatrove stage over N shards (the data's files dealt out
to N tasks, as datatrove's readers do), and datatrove's own MinHash stages propose the near-duplicate pairs:

1. ``scan`` (N tasks): reader -> :class:`AuditScanStep`, a datatrove ``MinhashDedupSignature`` that also
   measures every text into a mergeable :class:`~collapseguard.audit.ShardScan` (counts, provenance from
   ``Document.metadata``, outliers, gold leakage, exact-copy hashes, the diversity sample) and signs it with
   the single-process audit's own MinHash (same shingles, same 64 permutations, 16 bands of 4 rows);
2. ``buckets`` (one task per band): datatrove ``MinhashDedupBuckets``: texts whose band agrees;
3. ``pairs`` (1 task): :class:`AuditPairsStep` turns each band's matches into the very candidate pairs the
   single process proposes (:func:`~collapseguard.audit.shingles.group_pairs`, the same MinHash pre-filter);
4. ``verify`` (N tasks): reader -> :class:`AuditVerifyStep`: the shingles of the texts in candidate pairs.

The driver then checks every candidate's exact Jaccard similarity, merges the shards' states and judges
them with :func:`collapseguard.audit.judge`, as the single-process audit does. Each task writes its state
atomically and datatrove marks a task done only when it finishes, so a killed audit resumes where it
stopped: run the same command again.

Equal to the single-process audit: every count and finding exactly, near-duplicates included (the same
candidates, checked exactly against the same bound: :data:`~collapseguard.audit.dataset.NEAR_DUPLICATE_DEFINITION`),
and the diversity metrics too (the same sample, measured in the same order).

Importing this module needs datatrove (``pip install 'collapseguard[distributed]'``); the core does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from collapseguard.audit.dataset import (
    BANDS,
    MINHASH_PREFILTER,
    NEAR_DUPLICATE_JACCARD,
    NUM_PERM,
    SHINGLE,
    AuditResult,
    AuditSettings,
    DataSource,
    GoldChecks,
    Sample,
    ShardScan,
    judge,
    text_of,
)
from collapseguard.audit.shingles import (
    MAX_GROUP,
    components,
    gram_hashes,
    group_pairs,
    jaccard,
    permutations,
    shingle_hashes,
    signature,
    word_hashes,
    words_of,
)
from collapseguard.gold.goldset import GoldSet
from collapseguard.gold.provenance import normalize_label

INSTALL = "pip install 'collapseguard[distributed]'"
try:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.base import PipelineStep
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets, MinhashDedupSignature
    from datatrove.pipeline.readers import JsonlReader, ParquetReader
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.logging import DATATROVE_COLORIZE_LOGS
    from datatrove.utils.word_tokenizers import WordTokenizer
    from loguru import logger
except ImportError as exc:  # pragma: no cover - exercised where datatrove is absent
    raise ImportError(f"audits at scale run on datatrove, which is not installed ({exc}): {INSTALL}") from None

EXECUTORS = ("local", "slurm", "ray")
STAGES = ("scan", "buckets", "pairs", "verify")
#: datatrove's MinHash layout for the single-process audit's signatures: 16 bands ("buckets") of 4 rows of
#: 61-bit hashes, so that both audits band the very same values
MINHASH = MinhashConfig(n_grams=SHINGLE, num_buckets=BANDS, hashes_per_bucket=NUM_PERM // BANDS, seed=0,
                        hash_config=HashConfig(precision=64, hash_fc="sha1"))
_ROW = NUM_PERM * 8  # bytes of one text's signature


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
    sample_size: int
    tasks: int

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

    def scan_states(self) -> list[dict[str, Any]]:
        return [json.loads(self.path(f"scan/{rank:05d}.json").read_text()) for rank in range(self.tasks)]

    def scans(self) -> ShardScan:
        merged = ShardScan(sample=Sample(self.sample_size, self.seed))
        for state in self.scan_states():
            merged.merge(ShardScan.from_dict(state["scan"]))
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
    """(file index, index in the file) of each document of a task's stream, in order; ``runs``: the stream as
    (file index, documents) runs, from which the pairs stage maps a task's k-th document to its global index."""

    def __init__(self, files: dict[str, int]) -> None:
        self.files, self.counts, self.runs = files, {}, []

    def __call__(self, doc: Any) -> tuple[int, int]:
        fi = self.files[doc.metadata["cg_file"]]
        li = self.counts.get(fi, 0)
        self.counts[fi] = li + 1
        if self.runs and self.runs[-1][0] == fi:
            self.runs[-1][1] += 1
        else:
            self.runs.append([fi, 1])
        return fi, li


class _AuditStep(PipelineStep):
    type = "📊 - STATS"

    def __init__(self, job: AuditJob) -> None:
        super().__init__()
        self.job = job


class AuditScanStep(MinhashDedupSignature):
    """Pass 1 over a shard: every text into a :class:`~collapseguard.audit.ShardScan`, and datatrove's MinHash
    signature files, written from the single-process audit's signature of the same shingles (one computation
    of words, shingles and signature serves both). The full 64-row signatures are also kept in document
    order (``sigs/RANK.u64``) for the pairs stage's pre-filter."""

    name = "🔎 collapseguard scan + MinHash signatures"

    def __init__(self, job: AuditJob) -> None:
        super().__init__(str(Path(job.work_dir, "minhash", "signatures")), config=MINHASH, language=ProjectWords())
        self.job = job
        self._sig: np.ndarray | None = None

    def get_shingles(self, text: str) -> np.ndarray:
        return np.zeros((1, 1), dtype=np.uint64)  # non-empty: the signature was computed from the real shingles

    def get_signature(self, shingles: np.ndarray) -> list[list[int]]:
        return [band.tolist() for band in np.split(self._sig, MINHASH.num_buckets)]

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> None:
        job = self.job
        checks = GoldChecks(job.gold().texts, leak_containment=job.leak_containment)
        scan = ShardScan(sample=Sample(job.sample_size, job.seed))
        position, (a, b) = _Positions(job.files()), permutations(NUM_PERM)
        sig_path = job.path("sigs", f"{rank:05d}.u64")
        sig_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = sig_path.with_name(f".{sig_path.name}.{os.getpid()}.tmp")

        def scanned(sigs: Any) -> Any:
            for doc in data:
                words = words_of(doc.text)
                hashes = word_hashes(words)
                grams = gram_hashes(words, SHINGLE, hashes)
                self._sig = signature(grams, a, b)
                sigs.write(self._sig.tobytes())
                scan.add(position(doc), doc.text, doc.metadata.get("provenance"), checks, words, grams, hashes)
                self.stat_update("texts")
                yield doc

        with open(tmp, "wb") as sigs:
            super().run(scanned(sigs), rank, world_size)
        os.replace(tmp, sig_path)
        job.save(f"scan/{rank:05d}.json",
                 lambda fh: fh.write(json.dumps({"scan": scan.to_dict(), "runs": position.runs}).encode()))


class _Layout:
    """Where each text is: its global index (0-based, in reading order) from (task, k-th document of the
    task's stream), and back; and its signature row in ``sigs/TASK.u64``."""

    def __init__(self, job: AuditJob) -> None:
        states = job.scan_states()
        counts: dict[int, int] = {}
        for state in states:
            for fi, n in state["scan"]["files"]:
                counts[fi] = counts.get(fi, 0) + n
        offsets, total = {}, 0
        for fi in sorted(counts):
            offsets[fi], total = total, total + counts[fi]
        parts = [np.concatenate([offsets[fi] + np.arange(n, dtype=np.int64) for fi, n in state["runs"]])
                 if state["runs"] else np.empty(0, np.int64) for state in states]
        self.base = np.cumsum([0] + [p.size for p in parts])
        self.glob = np.concatenate(parts) if parts else np.empty(0, np.int64)  # stream position -> global index
        self.where = np.empty(total, dtype=np.int64)
        self.where[self.glob] = np.arange(self.glob.size)  # global index -> stream position
        self.job = job

    def rank_k(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.where[g]
        rank = np.searchsorted(self.base, p, side="right") - 1
        return rank, p - self.base[rank]

    def agreement(self, pairs: np.ndarray) -> np.ndarray:
        """Share of signature rows each pair (global indices) agrees on, as the single process computes it."""
        rows, inverse = np.unique(pairs, return_inverse=True)
        rank, k = self.rank_k(rows)
        fds: dict[int, int] = {}
        try:
            raw = []
            for r, kk in zip(rank.tolist(), k.tolist(), strict=True):
                if r not in fds:
                    fds[r] = os.open(self.job.path("sigs", f"{r:05d}.u64"), os.O_RDONLY)
                raw.append(os.pread(fds[r], _ROW, kk * _ROW))
        finally:
            for fd in fds.values():
                os.close(fd)
        sig = np.frombuffer(b"".join(raw), dtype=np.uint64).reshape(len(rows), NUM_PERM)
        where = inverse.reshape(pairs.shape)
        return (sig[where[:, 0]] == sig[where[:, 1]]).mean(axis=1)


class AuditPairsStep(_AuditStep):
    """The candidate near-duplicate pairs, from datatrove's band matches: each band's matches are chains through
    the texts that share the band, so their connected components are the band's groups; each group gives the
    pairs the single process takes (:func:`~collapseguard.audit.shingles.group_pairs`), kept where the
    signatures agree on at least :data:`~collapseguard.audit.dataset.MINHASH_PREFILTER` of their rows. Writes
    the pairs and, per task, the documents whose shingles the verify stage must collect."""

    name = "🧩 collapseguard candidate pairs"

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        job, layout = self.job, _Layout(self.job)
        kept = [np.empty((0, 2), dtype=np.int64)]
        with self.track_time():
            for dups in sorted(job.path("minhash", "buckets").glob("*.dups")):
                raw = np.fromfile(dups, dtype="<u4").reshape(-1, 4).astype(np.int64)
                if not raw.size:
                    continue
                ends = np.concatenate((layout.glob[layout.base[raw[:, 0]] + raw[:, 1]],
                                       layout.glob[layout.base[raw[:, 2]] + raw[:, 3]]))
                nodes, local = np.unique(ends, return_inverse=True)
                m = len(raw)
                graph = coo_matrix((np.ones(m), (local[:m], local[m:])), shape=(nodes.size, nodes.size))
                _, label = connected_components(graph, directed=False)
                order = np.argsort(label, kind="stable")
                cuts = np.flatnonzero(np.diff(label[order])) + 1
                band = [group_pairs(nodes[members], MAX_GROUP) for members in np.split(order, cuts)]
                band_pairs = np.concatenate(band)
                kept.append(band_pairs[layout.agreement(band_pairs) >= MINHASH_PREFILTER])
                self.stat_update("band_matches", value=m)
            pairs = np.unique(np.concatenate(kept), axis=0)
            self.stat_update("candidate_pairs", value=len(pairs))
            job.save("pairs/candidates.npy", lambda fh: np.save(fh, pairs))
            texts = np.unique(pairs)
            ranks, k = layout.rank_k(texts)
            for r in range(job.tasks):
                mine = ranks == r
                need = np.column_stack((k[mine], texts[mine]))
                need = need[np.argsort(need[:, 0])]
                job.save(f"pairs/need-{r:05d}.npy", lambda fh, need=need: np.save(fh, need))


class AuditVerifyStep(_AuditStep):
    """Pass 2 over a shard: the shingles of the texts in candidate pairs (reading stops after the last)."""

    name = "🧪 collapseguard near-duplicate shingles"

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> None:
        job = self.job
        need = np.load(job.path("pairs", f"need-{rank:05d}.npy"))
        ids, arrays = [], []
        if len(need):
            wanted = dict(zip(need[:, 0].tolist(), need[:, 1].tolist(), strict=True))
            last = int(need[-1, 0])
            for k, doc in enumerate(data):  # k: the document's place in the stream, as the scan numbered it
                with self.track_time():
                    if k in wanted:
                        ids.append(wanted[k])
                        arrays.append(shingle_hashes(doc.text, SHINGLE))
                if k >= last:
                    break
        flat = np.concatenate(arrays) if arrays else np.empty(0, np.uint64)
        lengths = np.array([a.size for a in arrays], dtype=np.int64)
        job.save(f"verify/{rank:05d}.npz", lambda fh: np.savez(fh, ids=np.array(ids, dtype=np.int64),
                                                                   shingles=flat, lengths=lengths))


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove's local executor with its INFO logs kept in the stage's log folder (``logs/STAGE/logs``) and
    only warnings and errors on the console, where the audit prints one line per stage."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1) -> Any:
        try:
            # datatrove sends a task's logs to the console only for local_rank 0; the task log file gets them all
            return super()._run_for_rank(rank, local_rank + 1, node_rank)
        finally:
            quiet_console()  # closing the task's log re-adds datatrove's default console handler (all levels)


def quiet_console() -> None:
    """Console handler of datatrove's logger (loguru) at WARNING."""
    logger.remove()
    logger.add(sys.stderr, level="WARNING", colorize=DATATROVE_COLORIZE_LOGS)


# -------------------------------------------------------------------- driver
def _fingerprint(source: DataSource, gold: GoldSet, job: AuditJob) -> dict[str, Any]:
    """Everything the stages' outputs depend on: a work folder is resumed only under the same."""
    files = [[name, (source.root / name).stat().st_size, (source.root / name).stat().st_mtime_ns]
             for name in source.files]
    settings = {k: v for k, v in asdict(job).items() if k != "work_dir"}
    return {"version": 2, "data_files": files, "gold": gold.fingerprint, "minhash": str(MINHASH), **settings}


def _prepare(data: str | Path, gold: GoldSet, tasks: int | None, work_dir: str | Path | None, job_args: dict
             ) -> AuditJob:
    source = DataSource(data, text_field=job_args["text_field"], provenance_field=job_args["provenance_field"])
    if source.kind == "text":
        raise ValueError(f"DATA={str(data)!r} is plain text, which only the single-process audit reads: drop "
                         "--executor, or write it as JSONL ({\"text\": ...} per line) to audit it at scale")
    next(iter(source.records()), None)  # a wrong --text-field fails here, before any task starts
    files = len(source.files)
    if tasks is not None and tasks > files > 1:  # with one file there is nothing to deal out: nothing to say
        _say(f"note: --tasks {tasks} for {files} files: a task reads whole files, so {files} tasks will run")
    tasks = min(tasks or files, files)
    job = AuditJob("", str(source.root.resolve()), source.kind, tasks=tasks, **job_args)
    finger = _fingerprint(source, gold, job)
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
    return AuditJob(str(work), **{k: v for k, v in asdict(job).items() if k != "work_dir"})


def _pipelines(job: AuditJob) -> dict[str, tuple[list[Any], int]]:
    """Each stage's pipeline and its task count."""
    mh = job.path("minhash")
    return {
        "scan": ([job.reader(), AuditScanStep(job)], job.tasks),
        "buckets": ([MinhashDedupBuckets(str(mh / "signatures"), str(mh / "buckets"), config=MINHASH)],
                    MINHASH.num_buckets),
        "pairs": ([AuditPairsStep(job)], 1),
        "verify": ([job.reader(), AuditVerifyStep(job)], job.tasks),
    }


def _executors(job: AuditJob, kind: str, workers: int | None, slurm: dict[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for stage, (pipeline, n) in _pipelines(job).items():
        logs = str(job.path("logs", stage))
        if kind == "local":
            ex = QuietLocalExecutor(pipeline, tasks=n, workers=min(workers or os.cpu_count() or 1, n), logging_dir=logs)
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


def _say(message: str, end: str = "\n") -> None:
    print(message, file=sys.stderr, flush=True, end=end)


def verified_pairs(job: AuditJob) -> list[tuple[int, int, float]]:
    """The candidate pairs whose exact word 5-gram Jaccard similarity reaches the bound, (i, j, Jaccard), sorted."""
    candidates = np.load(job.path("pairs", "candidates.npy"))
    shingles: dict[int, np.ndarray] = {}
    for rank in range(job.tasks):
        with np.load(job.path("verify", f"{rank:05d}.npz")) as part:
            ends = np.cumsum(part["lengths"])
            for g, arr in zip(part["ids"].tolist(), np.split(part["shingles"], ends[:-1]) if ends.size else [],
                              strict=True):
                shingles[g] = arr
    out = []
    for i, j in candidates.tolist():
        jac = jaccard(shingles[i], shingles[j])
        if jac >= NEAR_DUPLICATE_JACCARD:
            out.append((i, j, jac))
    return out


def _merge(job: AuditJob, gold: GoldSet, settings: AuditSettings, engine: str) -> AuditResult:
    pairs = verified_pairs(job)
    return judge(job.scans(), settings.monitor(gold), settings, near_duplicates=components(pairs),
                 near_duplicate_examples=pairs, engine=engine)


def run_audit(data: str | Path, gold: GoldSet, *, executor: str = "local", tasks: int | None = None,
              workers: int | None = None, work_dir: str | Path | None = None, text_field: str = "text",
              provenance_field: str | None = "provenance", max_length: int = 64, seed: int = 0,
              sample_size: int | None = None, slurm: dict[str, Any] | None = None, **settings: Any
              ) -> AuditResult | None:
    """Audit ``data`` (a file or folder of JSONL or parquet files) as datatrove stages; the verdict and findings
    of :func:`collapseguard.audit.audit_path` on the same data.

    ``executor``: ``"local"`` (processes on this machine), ``"ray"`` (the cluster at ``RAY_ADDRESS``, else a
    local one) or ``"slurm"`` (jobs on ``slurm["partition"]``; needs ``sbatch``). ``tasks``: shards (default and
    most: one per file, as a task reads whole files); ``workers``: tasks at once. ``work_dir``: states and logs
    (datatrove's own logs under ``logs/STAGE``); the same command with the same folder resumes.
    ``settings``: the audit's (``thresholds``, ``max_near_duplicates``, ...).

    Returns the result, or None for Slurm when the jobs were submitted (run it again once they have
    finished to merge and judge).

    Raises:
        ValueError / ImportError: a bad setting or a missing requirement, named, before anything runs.
        RuntimeError: a stage left tasks unfinished (its logs are named).
    """
    slurm = slurm or {}
    _check_executor(executor, slurm)
    if sample_size is not None:
        settings["sample_size"] = sample_size
    config = AuditSettings(max_length=max_length, seed=seed, **settings)
    config.monitor(gold)  # a gold set that cannot serve (arrays, too few texts) fails before any task
    job_args = {"text_field": text_field, "provenance_field": provenance_field, "max_length": max_length,
                "seed": seed, "leak_containment": config.leak_containment, "sample_size": config.sample_size}
    job = _prepare(data, gold, tasks, work_dir, job_args)
    engine = f"datatrove {executor} executor, {job.tasks} tasks (work dir {job.work_dir})"
    stages = _executors(job, executor, workers, slurm)
    if all(not ex.get_incomplete_ranks() for _, ex in stages):
        _say(f"all stages already done in {job.work_dir}: merging")
        return _merge(job, gold, config, engine)
    if executor == "slurm":
        stages[-1][1].run()  # submits every unfinished stage, each depending on the one before
        _say(f"submitted the audit's Slurm jobs ({' -> '.join(STAGES)}); logs in {job.path('logs')}. Run this same "
             "command again once they have finished: it merges the shards and prints the verdict")
        return None
    if executor == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
    if executor == "local":
        quiet_console()
    try:
        for number, (stage, ex) in enumerate(stages, 1):
            left = ex.get_incomplete_ranks()
            if not left:
                _say(f"[{stage}] done earlier: skipped")
                continue
            start = time.perf_counter()
            # one line per stage: its start, then (on the same line) its end
            _say(f"[{stage}] {len(left)} of {ex.world_size} task(s) to run (stage {number} of {len(stages)}) ...", end="")
            ex.run()
            unfinished = ex.get_incomplete_ranks()
            if unfinished:
                _say(" failed")
                raise RuntimeError(f"the audit's {stage} stage left task(s) {unfinished} unfinished: see "
                                   f"{job.path('logs', stage, 'logs')}; run the same command again to resume")
            _say(f" done in {time.perf_counter() - start:.1f}s")
    finally:
        if executor == "local":
            logger.remove()
            logger.add(sys.stderr, colorize=DATATROVE_COLORIZE_LOGS)  # datatrove's default console handler
    return _merge(job, gold, config, engine)
