"""The command line: exit codes, messages, the demo, reports (read back and rendered in Chromium), audits."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from collapseguard import GenerationSettings, GoldSet, Thresholds
from collapseguard.audit import audit_texts, minhash_signatures, near_duplicate_pairs, read_texts
from collapseguard.cli import Progress, main
from collapseguard.demos.data import train_gold_split
from collapseguard.demos.trigram import collapsed_corpus
from collapseguard.detection.calibration import calibrate
from collapseguard.reporting.alertlog import read_alert_log
from collapseguard.reporting.runlog import read_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--generations", "3", "--out", str(out)]) == 0
    return out


def _gold_file(tmp_path: Path) -> Path:
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in train_gold_split()[1]), encoding="utf-8")
    return path


# ------------------------------------------------------------------ errors and help
def test_errors_are_one_line_with_exit_2_and_debug_shows_the_traceback(tmp_path):
    run = [sys.executable, "-m", "collapseguard"]
    proc = subprocess.run([*run, "report", str(tmp_path / "missing")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([*run, "--debug", "report", str(tmp_path / "missing")], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr
    proc = subprocess.run([*run, "thresholds", "nonsense"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "unknown" in proc.stderr.lower() and "Traceback" not in proc.stderr
    proc = subprocess.run([*run, "demo", "--generations", "0"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "--generations=0 is invalid: --generations must be an int >= 1" in proc.stderr


def test_console_script_is_installed():
    exe = shutil.which("collapseguard")
    assert exe is not None, "pip install -e . installs the collapseguard console script"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and all(c in proc.stdout for c in ("demo", "report", "audit", "thresholds"))


def test_empty_run_folder_says_what_it_looks_for(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no run logs" in err and "metrics.csv" in err and "trainer_state.json" in err


# ------------------------------------------------------------------ thresholds
def test_thresholds_table_lists_every_field(capsys):
    assert main(["thresholds", "strict"]) == 0
    out = capsys.readouterr().out
    for name, _default, _doc in Thresholds.describe():
        assert name in out
    assert "0.85" in out  # strict's diversity_warn


def test_thresholds_yaml_and_json_round_trip(tmp_path, capsys):
    assert main(["thresholds", "lenient", "--format", "yaml", "--out", str(tmp_path / "t.yaml")]) == 0
    assert Thresholds.from_file(tmp_path / "t.yaml") == Thresholds.preset("lenient")
    assert main(["thresholds", str(tmp_path / "t.yaml"), "--format", "json"]) == 0
    assert Thresholds.from_dict(json.loads(capsys.readouterr().out)) == Thresholds.preset("lenient")
    # a user's hand-written YAML: a preset base and one override
    (tmp_path / "mine.yml").write_text("preset: strict\nalert_patience: 3\n", encoding="utf-8")
    assert Thresholds.coerce(str(tmp_path / "mine.yml")) == Thresholds.preset("strict").replace(alert_patience=3)


@pytest.mark.parametrize(("content", "message"), [
    ("- a\n- b\n", "must hold a mapping"),
    ("diversity_wrn: 0.5\n", "unknown threshold field"),
    ("diversity_warn: [\n", "not valid YAML"),
    ("diversity_warn: 0.3\n", "diversity_critical=0.5 is invalid: it must be below diversity_warn=0.3"),
])
def test_bad_thresholds_files_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as err:
        Thresholds.from_file(path)
    assert str(path) in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Thresholds.from_file(tmp_path / "absent.yaml")


def test_calibration_sets_bounds_beyond_split_half_noise_and_still_catches_collapse(tmp_path, capsys):
    gold = GoldSet.from_texts(train_gold_split()[1])
    cal = calibrate(gold, rounds=12)
    d2 = cal.scores["distinct_2"]
    assert len(d2) == 12 and 0.8 < np.median(d2) < 1.2
    # the suggested warn bound lies below the chosen quantile of every diversity ratio, by the margin
    low = min(np.quantile(cal.scores[m], cal.quantile) for m in ("distinct_2", "vendi", "compression_ratio"))
    assert cal.thresholds.diversity_warn == pytest.approx(round(low - 0.05, 2))
    assert cal.thresholds.diversity_critical < cal.thresholds.diversity_warn
    # human text from outside gold passes the calibrated bounds; the collapsed corpus does not
    human = audit_texts(train_gold_split()[0][::2], gold, thresholds=cal.thresholds, fail_on="warn",
                        max_near_duplicates=1.0)
    collapsed = audit_texts(collapsed_corpus(8, 300), gold, thresholds=cal.thresholds, fail_on="warn")
    assert not [a for a in human.alerts if a.metric in ("distinct_2", "vendi")]
    assert {a.metric for a in collapsed.alerts} >= {"self_bleu", "distinct_2"}
    # the CLI prints the spread and writes the calibrated file
    assert main(["thresholds", "--calibrate", str(_gold_file(tmp_path)), "--format", "yaml",
                 "--out", str(tmp_path / "cal.yaml")]) == 0
    assert "split-half calibration" in capsys.readouterr().err
    assert Thresholds.from_file(tmp_path / "cal.yaml").diversity_warn > 0.5


def test_calibration_of_a_small_gold_set_keeps_what_it_cannot_estimate_and_says_how_many_texts(tmp_path, capsys):
    """60 texts: tail coverage's split-half spread reaches past its critical bound, so a calibrated bound would
    switch the early phase off; it keeps the preset's bounds and says how many texts calibration needs."""
    small = train_gold_split()[1][:60]
    cal = calibrate(GoldSet.from_texts(small), rounds=10)
    assert cal.thresholds.tail_coverage_warn == Thresholds().tail_coverage_warn
    assert cal.thresholds.tail_coverage_critical == Thresholds().tail_coverage_critical
    note, = [n for n in cal.notes if n.startswith("tail_coverage")]
    needed = int(note.split("needs about ")[1].split()[0])
    assert needed > 60 and "60 gold texts" in note
    # half of the texts long enough give prompts (one of the 60 is too short); a round judges half of a half
    assert cal.guard_prompts == 29 and cal.prompts <= 15
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in small), encoding="utf-8")
    assert main(["thresholds", "--calibrate", str(path), "--format", "yaml", "--out", str(tmp_path / "c.yaml")]) == 0
    err = capsys.readouterr().err
    assert "judge 29 prompts, fewer than --num-samples 64" in err and err.count("warning: tail_coverage") == 1
    assert f"needs about {needed} gold texts" in err


def test_the_trail_and_the_report_give_the_prompts_a_check_judges(tmp_path):
    """num_samples=64 on a 60-text gold set judges 30 prompts (with this tokenizer): the trail and report say 30."""
    pytest.importorskip("lightning")
    from collapseguard.integrations.lightning import CollapseGuard
    from tests import tiny_runs as tr

    run_dir = tmp_path / "run"
    guard = CollapseGuard(GoldSet.from_texts(train_gold_split()[1][:60]), tokenizer=tr.tokenizer(), alert_log=run_dir / "alerts.jsonl", generation=GenerationSettings(num_samples=64))
    tr.lightning_fit(run_dir, "varied", 1, [guard])
    config = next(r for r in read_alert_log(run_dir / "alerts.jsonl") if r["type"] == "config")
    assert config["guard"]["num_samples"] == 64 and config["guard"]["prompts_per_check"] == 30
    assert guard.engine.monitor.checks[0]["metrics"]["num_outputs"] == 30
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    assert "each check judges <b>30</b> prompts" in page and "num_samples=64" in page


# ------------------------------------------------------------------ progress bar
def test_progress_bar_draws_on_a_terminal_and_stays_silent_in_logs():
    stream = io.StringIO()
    bar = Progress(4, "demo", stream=stream, force=True)
    bar.advance("generation 0")
    bar.advance()
    assert "2/4" in stream.getvalue() and "[" + "#" * 15 + "." * 15 + "]" in stream.getvalue()
    quiet = io.StringIO()
    Progress(4, "demo", stream=quiet).advance()  # StringIO is not a terminal
    assert quiet.getvalue() == ""


# ------------------------------------------------------------------ demo and report
def test_demo_prints_a_live_table_and_writes_trails_data_and_report(demo_dir, capsys):
    for track in ("replace", "reweight"):
        assert (demo_dir / track / "alerts.jsonl").is_file()
        rows = [json.loads(x) for x in (demo_dir / track / "train_gen4.jsonl").read_text().splitlines()]
        assert rows and {r["provenance"] for r in rows} <= {"human", "synthetic"}
    reweight = [json.loads(x) for x in (demo_dir / "reweight" / "train_gen4.jsonl").read_text().splitlines()]
    assert 0 < sum(r["provenance"] == "human" for r in reweight) < len(reweight)
    assert (demo_dir / "report.html").stat().st_size > 50_000


def test_report_reads_the_demo_trails_exactly(demo_dir):
    runs = {r.name: r for r in read_run(demo_dir)}
    assert set(runs) == {"replace", "reweight"}
    trail = [json.loads(x) for x in (demo_dir / "replace" / "alerts.jsonl").read_text().splitlines()]
    checks = [t for t in trail if t["type"] == "check"]
    assert runs["replace"].series["health"] == [(float(c["step"]), c["health"]) for c in checks]
    assert runs["replace"].series["distinct_2"][-1][1] == checks[-1]["metrics"]["distinct_2"]
    assert runs["reweight"].series["human_fraction_target"]  # the reweight track's share is reported
    assert runs["replace"].config["guard"]["on_collapse"] == "warn"
    assert runs["reweight"].config["guard"]["on_collapse"] == "reweight"
    assert len(runs["replace"].alerts) == sum(t["type"] == "alert" for t in trail)


def test_check_bounds_sit_where_the_severity_changes():
    gold = GoldSet.from_texts(train_gold_split()[1])
    from collapseguard import CollapseMonitor

    monitor = CollapseMonitor(gold)
    monitor.start_from_gold(64)  # a corpus, judged against gold from the first check
    result = monitor.check(collapsed_corpus(8, 64), step=0)
    b = result.bounds["distinct_2"]
    th = Thresholds()
    assert b["direction"] == "low"
    assert b["warn"] == pytest.approx(th.diversity_warn * result.reference["distinct_2"])
    assert b["critical"] == pytest.approx(th.diversity_critical * result.reference["distinct_2"])
    sb = result.bounds["self_bleu"]
    assert sb["direction"] == "high" and sb["warn"] == pytest.approx(result.reference["self_bleu"] + th.self_bleu_rise_warn)
    worst = {a.metric: a.severity for a in result.alerts}
    value = result.metrics["self_bleu"]
    expected = "critical" if value > sb["critical"] else "warn" if value > sb["warn"] else None
    assert worst.get("self_bleu") == expected
    # compression_ratio (judged as gold / value: more compressible is worse) is bad above its bounds
    cr = result.bounds["compression_ratio"]
    assert cr["direction"] == "high" and cr["critical"] > cr["warn"] > cr["reference"]
    assert cr["warn"] == pytest.approx(result.reference["compression_ratio"] / th.diversity_warn)
    value = result.metrics["compression_ratio"]
    expected = "critical" if value > cr["critical"] else "warn" if value > cr["warn"] else None
    assert worst.get("compression_ratio") == expected


def _browser() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert exe, "no Chromium: `bash scripts/setup.sh dev` installs Debian's chromium package (apt-get install chromium)"
    return exe


def _screenshot(html: Path, png: Path, height: int = 2600) -> np.ndarray:
    import matplotlib.image

    proc = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--window-size=1200,{height}", f"--screenshot={png}", html.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert png.is_file(), proc.stderr[-2000:]
    return matplotlib.image.imread(png)[..., :3]


def _pixels_near(img: np.ndarray, hex_color: str, tol: float = 0.06) -> int:
    rgb = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(img - rgb).max(axis=-1) < tol).sum())


def test_report_renders_its_plots_in_headless_chromium(demo_dir, tmp_path):
    img = _screenshot(demo_dir / "report.html", tmp_path / "report.png")
    assert img.shape[0] > 2000 and img.shape[1] >= 1200
    # both runs' lines (matplotlib's blue and green), the alert markers and the shaded gold band
    # are on screen: the embedded PNGs decoded and drew, not just the page's text
    assert _pixels_near(img, "#1f77b4") > 2000
    assert _pixels_near(img, "#2ca02c") > 2000
    assert _pixels_near(img, "#ff7f0e") + _pixels_near(img, "#d62728") > 300
    # a page whose images failed to load shows none of those colours
    broken = tmp_path / "broken.html"
    broken.write_text((demo_dir / "report.html").read_text().replace("data:image/png;base64,", "data:image/png;x,"))
    img2 = _screenshot(broken, tmp_path / "broken.png")
    assert _pixels_near(img2, "#1f77b4") < 50


def test_report_reads_lightning_csv_tensorboard_and_the_trail(tmp_path):
    pytest.importorskip("lightning")
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from collapseguard.integrations.lightning import CollapseGuard
    from tests import tiny_runs as tr

    run_dir = tmp_path / "run"
    guard = CollapseGuard(tr.gold(), tokenizer=tr.tokenizer(), alert_log=run_dir / "alerts.jsonl", **tr.GUARD_KWARGS)
    tr.lightning_fit(run_dir, "varied", 2, [guard], logger=[CSVLogger(run_dir), TensorBoardLogger(run_dir)])
    run = read_run(run_dir)[0]
    assert any(s.endswith("metrics.csv") for s in run.sources)
    assert any("tfevents" in s for s in run.sources) and not run.notes
    history = guard.engine.monitor.checks
    assert [v for _, v in run.series["health"]] == pytest.approx([h["health"] for h in history])
    assert len(run.series["train_loss"]) == 2  # from the framework's logs, once per epoch
    # with no trail, the guard's metrics come from the framework's own logs
    (run_dir / "alerts.jsonl").unlink()
    csv_only = read_run(run_dir)
    series = [r.series.get("distinct_2") for r in csv_only if r.series.get("distinct_2")]
    assert series and [v for _, v in series[0]] == pytest.approx([h["metrics"]["distinct_2"] for h in history],
                                                                 rel=1e-6)
    assert main(["report", str(run_dir)]) == 0 and (run_dir / "report.html").is_file()


def test_report_reads_the_hf_trainer_state(tmp_path):
    pytest.importorskip("transformers")
    from collapseguard.integrations.transformers import CollapseGuardCallback
    from tests import tiny_runs as tr

    guard = CollapseGuardCallback(tr.gold(), alert_log=tmp_path / "alerts.jsonl", **tr.GUARD_KWARGS)
    trainer = tr.hf_trainer(tmp_path, "varied", 2, [guard])
    trainer.train()
    trainer.save_state()
    (tmp_path / "alerts.jsonl").unlink()  # the Trainer's own log alone
    run = read_run(tmp_path)[0]
    logged = [h for h in trainer.state.log_history if "collapseguard/health" in h]
    assert run.series["health"] == [(float(h["step"]), h["collapseguard/health"]) for h in logged]
    assert "loss" in run.series
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 0
    assert "collapseguard report" in (tmp_path / "r.html").read_text()


# ------------------------------------------------------------------ audit
def test_minhash_estimates_jaccard_and_lsh_finds_near_copies():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(400)]
    base = " ".join(rng.choice(words, 60))
    edited = base.split()
    edited[30] = "changed"
    texts = [base, " ".join(edited), " ".join(rng.choice(words, 60)), " ".join(rng.choice(words, 60))]
    sig = minhash_signatures(texts, num_perm=256)
    shingles = [{" ".join(t.split()[i:i + 5]) for i in range(len(t.split()) - 4)} for t in texts[:2]]
    exact = len(shingles[0] & shingles[1]) / len(shingles[0] | shingles[1])
    assert abs((sig[0] == sig[1]).mean() - exact) < 0.08  # MinHash's estimate, standard error ~0.03
    pairs = near_duplicate_pairs(texts)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)] and pairs[0][2] == pytest.approx(exact)


def test_audit_exit_codes_gate_a_pipeline(tmp_path, capsys):
    gold = _gold_file(tmp_path)
    train = train_gold_split()[0]
    human = tmp_path / "human.jsonl"
    human.write_text("".join(json.dumps({"text": t, "provenance": "human"}) + "\n" for t in train))
    # the CPython docs repeat some paragraphs verbatim: found, and failing the default bound
    assert main(["audit", str(human), "--gold", str(gold)]) == 1
    out = capsys.readouterr().out
    assert "near-duplicates" in out and "FAIL" in out and "FAILED" in out
    # ... and some of the repeated paragraphs are gold's: the gold set leaked into this training data
    assert "gold leakage: 80 of the gold set's 236 texts are in the data (75 verbatim" in out
    assert main(["audit", str(human), "--gold", str(gold), "--max-near-duplicates", "0.2",
                 "--max-gold-leakage", "0.5"]) == 0
    assert "PASSED" in capsys.readouterr().out
    synthetic = tmp_path / "synthetic.txt"  # plain text, one item per line
    synthetic.write_text("\n".join(collapsed_corpus(8, 300)))
    assert main(["audit", str(synthetic), "--gold", str(gold), "--json", str(tmp_path / "a.json")]) == 1
    text = (tmp_path / "a.json").read_text()
    report = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))  # strict: no NaN
    assert "NaN" not in text
    assert not report["passed"] and any("self_bleu" in f for f in report["failures"])
    # no provenance but a human floor asked for: fails, saying why
    assert main(["audit", str(synthetic), "--gold", str(gold), "--min-human-fraction", "0.2"]) == 1
    assert "no provenance field" in capsys.readouterr().out
    # bad input: one line, exit 2
    assert main(["audit", str(human), "--gold", str(gold), "--text-field", "body"]) == 2
    assert "no string field 'body'" in capsys.readouterr().err


def _table(out: str) -> dict[str, str]:
    """The verdict column of `collapseguard audit`'s table, by the row's check."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("check "))
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        if len(line) > 61:
            rows[line[:24].strip()] = line[61:]
    return rows


@pytest.mark.parametrize("case", ["too few texts", "warn fails", "warn passes", "human floor"])
def test_the_audit_command_prints_the_audits_own_verdict_for_every_check(tmp_path, capsys, case):
    """The table's verdicts are the audit's (collapseguard.audit.dataset decides them once), on cases where a
    second reckoning in the command line would differ: a check that could not be judged is not "ok", a warn
    under --fail-on warn is a failure (and under critical is not), the human floor has its row."""
    gold = _gold_file(tmp_path)
    data = tmp_path / "data.txt"
    args = ["--max-near-duplicates", "1", "--max-outliers", "1"]
    if case == "too few texts":
        data.write_text("\n".join(train_gold_split()[0][:5]))
    else:
        data.write_text("\n".join(collapsed_corpus(2, 300)))  # distinct_2 warns, self_bleu is critical
    if case == "warn fails":
        args += ["--fail-on", "warn"]
    if case == "human floor":
        args += ["--min-human-fraction", "0.5"]
    code = main(["audit", str(data), "--gold", str(gold), "--json", str(tmp_path / "a.json"), *args])
    report = json.loads((tmp_path / "a.json").read_text())
    table = _table(capsys.readouterr().out)
    assert code == (0 if report["passed"] else 1) == 1
    if case == "too few texts":  # judged nothing: no diversity row may say ok
        assert not any(table[m].startswith("ok") for m in ("distinct_2", "vendi", "self_bleu"))
        assert table["diversity sample"].startswith("FAIL")
    elif case == "warn fails":
        assert table["distinct_2"].startswith("FAIL (warn)") and table["self_bleu"].startswith("FAIL (critical)")
    elif case == "warn passes":
        assert table["distinct_2"].startswith("warn") and table["self_bleu"].startswith("FAIL (critical)")
    else:
        assert table["human share"].startswith("FAIL")
    verdicts = report["verdicts"]
    assert [f for v in verdicts for f in v["failures"]] == report["failures"]
    for v in verdicts:  # every verdict the audit reached is the one printed
        shown, word = table[v["check"]], v["word"]
        assert shown.startswith(word) and shown[len(word):][:1] in ("", " "), (v, shown)
        assert ("FAIL" in word) is bool(v["failures"]), v
    words = {v["check"]: v["word"] for v in verdicts}
    assert words["distinct_2"] == ("not judged" if case == "too few texts" else
                                   "FAIL (warn)" if case == "warn fails" else "warn")


def test_the_command_line_reckons_no_verdict_of_its_own():
    """The verdicts come from collapseguard.audit.dataset.decide alone: cli.py compares no figure with a bound."""
    import ast

    import collapseguard.cli

    tree = ast.parse(Path(collapseguard.cli.__file__).read_text(encoding="utf-8"))
    audit = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_cmd_audit")
    bounds = ("max_near_duplicates", "max_outliers", "max_gold_leakage", "min_human_fraction", "fail_on")
    for node in ast.walk(audit):
        if isinstance(node, ast.Compare):
            names = {a.attr for a in ast.walk(node) if isinstance(a, ast.Attribute)}
            assert not names & {*bounds, "severity", "alerts"}, ast.unparse(node)
        if isinstance(node, ast.Attribute) and node.attr in ("alerts", "failures") and isinstance(node.ctx, ast.Load):
            assert ast.unparse(node) in ("result.failures",), ast.unparse(node)


@pytest.mark.parametrize(("setting", "value", "error", "allowed"), [
    ("max_outliers", 1.5, ValueError, "a number in [0, 1]"),
    ("max_near_duplicates", -0.1, ValueError, "a number in [0, 1]"),
    ("min_human_fraction", 2.0, ValueError, "a number in [0, 1] or None"),
    ("leak_containment", 0.0, ValueError, "a number in (0, 1]"),
    ("fail_on", "never", ValueError, "one of 'warn', 'critical'"),
    ("sample_size", 0, ValueError, "an int >= 1"),
    ("sample_size", 2.5, TypeError, "an int >= 1"),
    ("max_length", 0, ValueError, "an int >= 1"),
])
def test_audit_settings_refuse_in_the_one_message_format(setting, value, error, allowed):
    from collapseguard._validation import describe
    from collapseguard.audit.dataset import AuditSettings

    with pytest.raises(error) as info:
        AuditSettings(**{setting: value})
    assert str(info.value).startswith(f"AuditSettings: {setting}={describe(value)} is invalid: {setting} must be "
                                      f"{allowed}"), str(info.value)
    if setting == "sample_size":  # a wrong type is a TypeError that the old `except ValueError` still catches
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("args", "refusal"), [
    (["demo", "--generations", "0"], "--generations=0 is invalid: --generations must be an int >= 1"),
    (["demo", "--floor", "1.5"], "--floor=1.5 is invalid: --floor must be a number in [0, 1]"),
    (["thresholds", "--num-samples", "0"], "--num-samples=0 is invalid: --num-samples must be an int >= 1"),
    (["audit", "d.jsonl", "--gold", "g.jsonl", "--max-outliers", "1.5"],
     "--max-outliers=1.5 is invalid: --max-outliers must be a number in [0, 1]"),
    (["audit", "d.jsonl", "--gold", "g.jsonl", "--min-human-fraction", "-1"],
     "--min-human-fraction=-1.0 is invalid: --min-human-fraction must be a number in [0, 1] or None"),
    (["audit", "d.jsonl", "--gold", "g.jsonl", "--leak-containment", "0"],
     "--leak-containment=0.0 is invalid: --leak-containment must be a number in (0, 1]"),
    (["audit", "d.jsonl", "--gold", "g.jsonl", "--sample-size", "0"],
     "--sample-size=0 is invalid: --sample-size must be an int >= 1"),
    (["audit", "d.jsonl", "--gold", "g.jsonl", "--executor", "local", "--tasks", "0"],
     "--tasks=0 is invalid: --tasks must be an int >= 1"),
])
def test_command_line_flags_refuse_in_the_one_message_format(args, refusal, capsys):
    """The flags are checked by collapseguard._validation.validate (the audit's with AuditSettings' own
    constraints): one line, exit 2, the validator's format with the command as the caller, before anything runs."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"collapseguard {args[0]}: error: {refusal}"), err
    assert err.strip().count("\n") == 0


def test_audit_reads_parquet_and_counts_provenance(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    texts = train_gold_split()[0][:60]
    labels = ["human"] * 40 + ["machine-generated"] * 20  # aliases map to the three labels
    pq.write_table(pa.table({"text": texts, "provenance": labels}), tmp_path / "d.parquet")
    got, prov = read_texts(tmp_path / "d.parquet")
    assert got == texts and prov.count("synthetic") == 20
    result = audit_texts(got, GoldSet.from_texts(train_gold_split()[1]), labels=prov, min_human_fraction=0.8,
                         max_near_duplicates=1.0)
    assert result.provenance == {"human": 40, "synthetic": 20}
    assert any("human share 66.7% is below the floor 80.0%" in f for f in result.failures)


def test_outliers_are_texts_beyond_gold_range():
    gold = GoldSet.from_texts(train_gold_split()[1])
    texts = list(train_gold_split()[0][:50]) + ["x"] + ["zq" * 3 + f" qz{i}" * 40 for i in range(3)]
    result = audit_texts(texts, gold, max_near_duplicates=1.0, max_outliers=1.0)
    flagged = {i for i, _ in result.outlier_examples}
    assert {50, 51} <= flagged  # the one-word text and a text of words gold never uses
    assert result.outlier_fraction * len(texts) < 10  # and not much else of the human paragraphs


def test_audit_judges_once_whatever_the_patience_and_refuses_too_little_data():
    gold = GoldSet.from_texts(train_gold_split()[1])
    lenient = audit_texts(collapsed_corpus(8, 300), gold, thresholds="lenient")  # patience 2 in the preset
    assert any("self_bleu" in f for f in lenient.failures)
    tiny = audit_texts(train_gold_split()[0][:5], gold, max_near_duplicates=1.0, max_outliers=1.0)
    assert not tiny.passed and "fewer than min_outputs" in tiny.failures[0]
    with pytest.raises(ValueError, match="labels has 2 entries for 5 texts"):
        audit_texts(train_gold_split()[0][:5], gold, labels=["human", "human"])


def test_demo_takes_any_floor_and_leaves_the_logger_as_it_found_it(tmp_path):
    import logging

    from collapseguard.demos.trigram import run_demo

    log = logging.getLogger("collapseguard")
    before = log.isEnabledFor(logging.WARNING)
    rows = run_demo(1, floor=0.05, out_dir=tmp_path, samples_per_generation=200, num_prompts=32)
    assert log.isEnabledFor(logging.WARNING) == before
    config = json.loads((tmp_path / "reweight" / "alerts.jsonl").read_text().splitlines()[0])
    assert config["guard"]["human_floor"] == 0.05  # exactly the floor asked for
    assert all(r.human_fraction >= 0.05 - 1e-9 for r in rows if r.track == "reweight")


def test_report_reads_hf_tensorboard_tags(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "tb")) as writer:  # the tags HF's TensorBoardCallback writes
        for step, (health, loss) in enumerate([(0.9, 3.0), (0.6, 2.5)], start=1):
            writer.add_scalar("train/collapseguard/health", health, step)
            writer.add_scalar("train/loss", loss, step)
            writer.add_scalar("eval/loss", loss + 0.5, step)
    run = read_run(tmp_path)[0]
    assert [v for _, v in run.series["health"]] == pytest.approx([0.9, 0.6])
    assert [v for _, v in run.series["eval_loss"]] == pytest.approx([3.5, 3.0])
