"""Audits at scale: datatrove's Local executor (2 tasks, real processes), a Ray local cluster and Slurm's
job chain (with a stand-in sbatch) give the single-process audit's verdict and findings; a killed audit
resumes to the same result; bad input is refused early, by name.

Equal means equal: every count and finding (near-duplicates included: both audits check the same MinHash LSH
candidates exactly) and the diversity metrics (the same sample, measured in the same order). Near the
near-duplicate bound, in other orders and shardings: tests/test_audit_agreement.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("datatrove", reason="audits at scale need datatrove: pip install 'collapseguard[distributed]'")

from collapseguard import GoldSet
from collapseguard.cli import main
from tests.audit_data import corpora, shard, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "DATATROVE_COLORIZE_LOGS": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


def _audit(*args: str | Path, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collapseguard", "audit", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A leaky dataset (4 JSONL files, one gzipped, provenance labels, a few exact copies) and a clean one
    (3 parquet files), with the gold set they are judged against."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    root = tmp_path_factory.mktemp("audit-data")
    clean, leaky, gold, _, _ = corpora()
    leaky = leaky + leaky[5:40:5]  # a few copies for the near-duplicate stages to find
    labels = ["synthetic" if i % 5 == 0 else "human" for i in range(len(leaky))]
    shard(root / "leaky", leaky, 4, labels=labels, gz_first=True)
    (root / "clean").mkdir()
    for p, part in enumerate(np.array_split(np.arange(len(clean)), 3)):
        pq.write_table(pa.table({"text": [clean[i] for i in part]}), root / "clean" / f"part-{p}.parquet")
    return {"leaky": root / "leaky", "clean": root / "clean", "gold": write_jsonl(root / "gold.jsonl", gold)}


def _assert_same_audit(single: dict, scaled: dict) -> None:
    assert scaled["passed"] == single["passed"]
    assert json.dumps({k: v for k, v in scaled.items() if k != "engine"}, sort_keys=True) == json.dumps(
        {k: v for k, v in single.items() if k != "engine"}, sort_keys=True)  # NaN (null in strict JSON) included
    assert all(jac >= 0.8 for _, _, jac in scaled["near_duplicate_examples"])
    assert "datatrove" in scaled["engine"] and single["engine"] == "single process"


@pytest.mark.parametrize("name", ["leaky", "clean"])
def test_local_executor_with_two_tasks_equals_the_single_process_audit(name, data, tmp_path):
    one = _audit(data[name], "--gold", data["gold"], "--json", tmp_path / "one.json", cwd=tmp_path)
    two = _audit(data[name], "--gold", data["gold"], "--json", tmp_path / "two.json", "--executor", "local",
                 "--tasks", "2", "--work-dir", tmp_path / "work", cwd=tmp_path)
    assert one.returncode == two.returncode == (1 if name == "leaky" else 0), two.stderr[-3000:]
    single, scaled = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    _assert_same_audit(single, scaled)
    if name == "leaky":
        assert scaled["gold_leakage"]["leaked"] == 50 and scaled["provenance"]["synthetic"] > 0
        assert scaled["near_duplicate_fraction"] > 0
    # two real tasks, each with its share of the files, and the merged table printed as the single audit prints it
    assert "[scan] 2 of 2 task(s) to run" in two.stderr
    # the console shows one line per stage; datatrove's INFO logs stay in the work folder
    assert [line.split("]")[0] for line in two.stderr.splitlines()] == ["[scan", "[buckets", "[pairs", "[verify"]
    assert "INFO" not in two.stderr and "INFO" in (tmp_path / "work" / "logs" / "scan" / "logs" / "task_00000.log"
                                                   ).read_text()
    for rank in (0, 1):
        assert (tmp_path / "work" / "logs" / "scan" / "completions" / f"{rank:05d}").is_file()
    if name == "clean":  # the table below the first line (which names the engine) as the single audit prints it
        assert two.stdout.split("\n", 1)[1] == one.stdout.split("\n", 1)[1]
    # run again: every stage is done, so it only merges
    again = _audit(data[name], "--gold", data["gold"], "--executor", "local", "--tasks", "2", "--work-dir",
                   tmp_path / "work", cwd=tmp_path)
    assert again.returncode == one.returncode and "all stages already done" in again.stderr


def test_a_killed_audit_resumes_to_the_same_result(data, tmp_path):
    clean = corpora()[0]
    rng = np.random.default_rng(3)  # 10,000 documents of three paragraphs each: a task takes seconds
    docs = [" ".join(clean[i] for i in rng.choice(len(clean), 3, replace=False)) for _ in range(10_000)]
    shard(tmp_path / "data", docs, 2)
    args = [tmp_path / "data", "--gold", data["gold"], "--executor", "local", "--tasks", "2", "--workers", "1"]
    whole = _audit(*args, "--work-dir", tmp_path / "whole", "--json", tmp_path / "whole.json", cwd=tmp_path)
    assert whole.returncode in (0, 1), whole.stderr[-3000:]

    work = tmp_path / "killed"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "collapseguard", "audit", *map(str, args), "--work-dir",
                                 str(work), "--json", str(tmp_path / "killed.json")], cwd=tmp_path, env=ENV,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        first = work / "logs" / "scan" / "completions" / "00000"
        deadline = time.monotonic() + 240
        while not first.exists():
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the audit and every process it started
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (work / "logs" / "scan" / "completions" / "00001").exists()  # killed while task 1 ran
    assert not (tmp_path / "killed.json").exists()
    done_at = (work / "scan" / "00000.json").stat().st_mtime_ns

    resumed = _audit(*args, "--work-dir", work, "--json", tmp_path / "resumed.json", cwd=tmp_path)
    assert resumed.returncode == whole.returncode, resumed.stderr[-3000:]
    assert "[scan] 1 of 2 task(s) to run" in resumed.stderr  # the finished task is not run again
    assert (work / "scan" / "00000.json").stat().st_mtime_ns == done_at
    want, got = (json.loads((tmp_path / f).read_text()) for f in ("whole.json", "resumed.json"))
    assert {k: v for k, v in got.items() if k != "engine"} == {k: v for k, v in want.items() if k != "engine"}
    assert got["num_texts"] == 10_000


def test_ray_local_cluster_gives_the_single_process_verdict(data, tmp_path):
    pytest.importorskip("ray")
    one = _audit(data["leaky"], "--gold", data["gold"], "--json", tmp_path / "one.json", cwd=tmp_path)
    env_cluster = {k: v for k, v in ENV.items() if k != "RAY_ADDRESS"}  # a local cluster, started and stopped here
    ray = subprocess.run([sys.executable, "-m", "collapseguard", "audit", str(data["leaky"]), "--gold",
                          str(data["gold"]), "--json", str(tmp_path / "ray.json"), "--executor", "ray", "--tasks", "2",
                          "--work-dir", str(tmp_path / "work")], cwd=tmp_path, env=env_cluster, capture_output=True,
                         text=True, timeout=400, check=False)
    assert ray.returncode == one.returncode == 1, ray.stderr[-3000:]
    _assert_same_audit(json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "ray.json").read_text()))
    assert "datatrove ray executor, 2 tasks" in ray.stdout


def test_slurm_submits_the_stages_as_dependent_jobs_and_their_tasks_give_the_same_verdict(data, tmp_path,
                                                                                           monkeypatch, capsys):
    """sbatch and scontrol are stand-ins (no Slurm here); each task then runs as a Slurm array task would:
    the pickled executor loaded and run with SLURM_ARRAY_TASK_ID set."""
    import dill

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\nn=$(ls "$SBATCH_LOG" | wc -l)\necho "$@" > "$SBATCH_LOG/$n"\n'
                                    'echo "Submitted batch job $((n + 100))"\n')
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    for tool in ("sbatch", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    (tmp_path / "sbatch-log").mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_LOG", str(tmp_path / "sbatch-log"))
    work = tmp_path / "work"
    args = ["audit", str(data["leaky"]), "--gold", str(data["gold"]), "--executor", "slurm", "--tasks", "2",
            "--partition", "cpu", "--work-dir", str(work), "--json", str(tmp_path / "slurm.json")]
    assert main(args) == 3  # submitted: the verdict comes once the jobs have run
    assert "Run this same command again once they have finished" in capsys.readouterr().err
    calls = [(tmp_path / "sbatch-log" / str(i)).read_text() for i in range(len(os.listdir(tmp_path / "sbatch-log")))]
    assert len(calls) == 8  # 4 stages, each followed by datatrove's stats-merging job
    stage_jobs = [c for c in calls if "RUN_OFFSET=0" in c]
    assert len(stage_jobs) == 4 and "--dependency" not in stage_jobs[0]
    assert all("--dependency=afterok:" in c for c in stage_jobs[1:])  # each stage waits for the one before

    monkeypatch.setenv("SLURM_NODELIST", "localhost")
    usr1 = signal.getsignal(signal.SIGUSR1)  # a Slurm task installs datatrove's requeue handler
    for stage, tasks in (("scan", 2), ("buckets", 16), ("pairs", 1), ("verify", 2)):
        for task in range(tasks):
            monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
            with open(work / "logs" / stage / "executor.pik", "rb") as fh:
                dill.load(fh).run()
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    signal.signal(signal.SIGUSR1, usr1)
    assert main(args) == 1  # all done: merged and judged
    assert main(["audit", str(data["leaky"]), "--gold", str(data["gold"]), "--json", str(tmp_path / "one.json")]) == 1
    _assert_same_audit(json.loads((tmp_path / "one.json").read_text()),
                       json.loads((tmp_path / "slurm.json").read_text()))


def test_bad_settings_for_an_audit_at_scale_fail_early_by_name(data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # where a default work folder would go
    base = ["audit", str(data["leaky"]), "--gold", str(data["gold"])]
    assert main([*base, "--executor", "local", "--tasks", "0"]) == 2
    assert "--tasks=0 is invalid: --tasks must be an int >= 1" in capsys.readouterr().err

    def error(*args: str) -> str:
        assert main([*base, *args]) == 2
        return capsys.readouterr().err

    assert "add --executor local" in error("--tasks", "2")
    assert "--executor slurm needs --partition NAME" in error("--executor", "slurm")
    with monkeypatch.context() as m:
        m.setenv("PATH", str(tmp_path))  # no sbatch
        assert "sbatch, which is not on PATH" in error("--executor", "slurm", "--partition", "cpu")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "ray", None)  # as if ray were not installed
        assert "--executor ray needs ray, which is not installed: pip install 'collapseguard[distributed]'" in error(
            "--executor", "ray")
    with monkeypatch.context() as m:
        m.delitem(sys.modules, "collapseguard.audit.distributed", raising=False)
        for name in [k for k in sys.modules if k.split(".")[0] == "datatrove"]:  # as if datatrove were not installed
            m.setitem(sys.modules, name, None)
        assert "pip install 'collapseguard[distributed]'" in error("--executor", "local")
    assert not (tmp_path / "runs").exists()  # nothing was started
    text = tmp_path / "data.txt"
    text.write_text("\n".join(corpora()[0]))
    assert main(["audit", str(text), "--gold", str(data["gold"]), "--executor", "local"]) == 2
    assert "plain text" in capsys.readouterr().err
    assert "no string field 'body'" in error("--executor", "local", "--text-field", "body", "--work-dir",
                                             str(tmp_path / "w0"))
    assert not (tmp_path / "w0").exists()  # refused before any work
    assert main([*base, "--executor", "local", "--tasks", "1", "--work-dir", str(tmp_path / "w1"),
                 "--max-gold-leakage", "1", "--max-near-duplicates", "1"]) == 0
    capsys.readouterr()
    assert "holds an audit with other settings or data (tasks differ)" in error(
        "--executor", "local", "--tasks", "2", "--work-dir", str(tmp_path / "w1"))


def test_audit_benchmark_smoke_both_audits_agree(tmp_path):
    pytest.importorskip("gensim", reason="the benchmark's corpus is the Lee news corpus inside gensim's wheel")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_audit.py"), "--smoke", "--out",
                           str(tmp_path)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "audit.json").read_text())
    assert result["environment"]["mode"] == "smoke" and len(result["runs"]) == 4
    assert result["runs"][1]["run"].startswith("datatrove MinhashDedupSignature alone")
    assert result["runs"][1]["signature_files"] == 1  # datatrove's stage ran and wrote its one task's signatures
    for check in result["agreement"]:  # the script itself exits non-zero when the audits disagree
        assert check["reports_equal"] and check["leaked"] >= 40 and not check["passed"]
        assert check["exact_duplicate_fraction"] == 0.01 and check["near_duplicate_fraction"] == 0.02  # as planted
    assert all(r["peak_rss_tree_bytes"] > 0 and r["docs_per_s"] > 0 for r in result["runs"])
    assert set(result["runs"][3]["stages_s"]) == {"scan", "buckets", "pairs", "verify"}
    assert (tmp_path / "audit.md").read_text().startswith("**Smoke run: correctness only")


def test_one_file_has_nothing_to_deal_out_so_nothing_is_said(data, tmp_path, capsys):
    from collapseguard.audit.distributed import _prepare

    one = write_jsonl(tmp_path / "one.jsonl", corpora()[0])
    args = {"text_field": "text", "provenance_field": "provenance", "max_length": 64, "seed": 0,
            "leak_containment": 0.5, "sample_size": 2000}
    gold = GoldSet.from_jsonl(data["gold"])
    assert _prepare(one, gold, 2, tmp_path / "w", args).tasks == 1  # a task reads whole files: one file, one task
    assert capsys.readouterr().err == ""
    assert _prepare(data["leaky"], gold, 6, tmp_path / "w6", args).tasks == 4
    assert "--tasks 6 for 4 files" in capsys.readouterr().err
