"""The ``collapseguard`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from collapseguard._validation import Constraint, Interval, validate
from collapseguard.detection.thresholds import PRESETS, Thresholds
from collapseguard.reporting.alertlog import json_safe


class Progress:
    """A one-line progress bar on a terminal's stderr; silent when stderr is not a terminal (logs, CI)."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, force: bool = False) -> None:
        self.total, self.label, self.done = total, label, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = force or self.stream.isatty()
        self.start = time.perf_counter()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def advance(self, what: str = "") -> None:
        self.done += 1
        self.draw(what)

    def draw(self, what: str = "") -> None:
        if not self.enabled:
            return
        width = 30
        filled = round(width * self.done / max(self.total, 1))
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                          f"{elapsed:5.1f}s {what}")
        self.stream.flush()


def _cmd_demo(args: argparse.Namespace) -> int:
    from collapseguard.demos.trigram import TRACKS, format_header, format_row, run_demo

    out = Path(args.out)
    print(f"collapseguard demo: a word trigram model retrained on its own samples for {args.generations} generations, "
          "on human paragraphs from CPython's documentation (built in, nothing downloaded).\n"
          f"replace: every generation trains on the last one's samples; reweight: the guard raises the human share "
          f"(floor {args.floor:.0%}) when it alerts. Gold: held-out paragraphs.\n"
          "Columns: human = human share of the data the next generation trains on; distinct-2 and tail coverage "
          "as a share of gold's (g); alerts as severity:phase(metric).\n")
    print(format_header())
    bar = Progress((args.generations + 1) * len(TRACKS), "demo")
    bar.draw()

    def show(row: Any) -> None:
        bar.clear()
        print(format_row(row), flush=True)
        bar.advance(f"generation {row.generation} ({row.track})")

    rows = run_demo(generations=args.generations, floor=args.floor, seed=args.seed, thresholds=args.thresholds,
                    out_dir=out, on_row=show)
    bar.clear()
    print()
    for track in TRACKS:
        mine = [r for r in rows if r.track == track]
        first = next((r.generation for r in mine if r.result.alerts), None)
        crit = next((r.generation for r in mine if r.result.critical), None)
        warn = f"first alert at generation {first}" if first is not None else "no alert"
        c = f", first critical at generation {crit}" if crit is not None else ", never critical"
        print(f"{track:<9} {warn}{c}; final health {mine[-1].result.health:.2f}")
    print(f"\ntrails: {out}/<track>/alerts.jsonl; each track's final training data: "
          f"{out}/<track>/train_gen{args.generations + 1}.jsonl (try `collapseguard audit` on it)")
    if not args.no_report:
        from collapseguard.reporting.report import write_report

        try:
            path = write_report(out, title="collapseguard demo: recursive training with and without reweighting")
        except ImportError as exc:  # a core-only install: the demo ran, the plots need matplotlib
            print(f"report skipped: {exc}")
        else:
            print(f"report: {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from collapseguard.reporting.report import write_report
    from collapseguard.reporting.runlog import read_run

    runs = read_run(args.run_dir)
    path = write_report(args.run_dir, args.out)
    for run in runs:
        print(f"{run.name}: {len(run.checks)} checks, {len(run.alerts)} alerts, {len(run.series)} series from "
              f"{len(run.sources)} file(s)" + "".join(f"\n  note: {n}" for n in run.notes))
    print(f"wrote {path}")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from collapseguard.audit import audit_path
    from collapseguard.gold.goldset import GoldSet

    try:
        gold = GoldSet.from_jsonl(args.gold, text_field=args.gold_text_field)
    except ValueError as exc:  # GoldSet's own hint names its Python argument; here the flag is what to change
        message = str(exc).split("; set text_field to")[0]
        raise ValueError(f"--gold: {message}; pass --gold-text-field with the field holding the gold text") from None
    settings = {"thresholds": args.thresholds, "fail_on": args.fail_on, "max_near_duplicates": args.max_near_duplicates,
                "max_outliers": args.max_outliers, "min_human_fraction": args.min_human_fraction,
                "max_gold_leakage": args.max_gold_leakage, "leak_containment": args.leak_containment,
                "sample_size": args.sample_size}
    reading = {"text_field": args.text_field, "provenance_field": args.provenance_field}
    if args.executor is None:
        given = [f"--{name.replace('_', '-')}" for name in ("tasks", "workers", "work_dir", "partition")
                 if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to audits at scale: add "
                             "--executor local (this machine), slurm or ray, or drop them for the single-process audit")
        result = audit_path(args.data, gold, **reading, progress=False if args.no_progress else None, **settings)
    else:
        from collapseguard.audit.distributed import run_audit

        result = run_audit(args.data, gold, executor=args.executor, tasks=args.tasks, workers=args.workers,
                           work_dir=args.work_dir, slurm={"partition": args.partition, "time": args.time},
                           **reading, **settings)
        if result is None:  # Slurm: submitted; the verdict comes when the jobs have run
            return 3
    n = result.num_texts
    sampled = f"sample {result.sample_size:,}"
    print(f"audit of {args.data}: {n:,} texts against gold {gold.name} ({len(gold)} texts); {result.engine}\n"
          f"diversity: a sample of {result.sample_size:,} texts (chosen by a hash of their words, whatever the order), "
          f"measured in {result.sample_rounds} round(s) of {result.sample_size // max(result.sample_rounds, 1)} "
          "against gold's texts at that count; the rest counts every text\n")
    print(f"{'check':<24} {'data':>9} {'gold':>9}  {'measured on':<14} verdict")
    # every verdict is the audit's own (collapseguard.audit.dataset.decide): this table only prints them
    everything = f"all {n:,}"
    for v in result.verdicts:
        if v.check == "diversity sample":
            print(f"{v.check:<24} {v.value:>9.0f} {'':>9}  {sampled:<14} {v.word} (texts a round; min_outputs="
                  f"{v.bound:.0f} to judge)")
        elif v.check in result.metrics:
            print(f"{v.check:<24} {result.metrics[v.check]:>9.4f} {result.reference.get(v.check, float('nan')):>9.4f}  "
                  f"{sampled:<14} {v.word}")
        elif v.check == "gold leakage":
            leak = result.gold_leakage
            print(f"{v.check:<24} {leak['leaked']:>5}/{leak['gold_texts']:<3} {'':>9}  {everything:<14} {v.word} "
                  f"(bound {v.bound:.0%} of gold; {leak['exact']} verbatim, {leak['near']} near-copies, in "
                  f"{leak['texts']} texts)")
        elif v.check == "near-duplicates":
            if "js_2" in result.metrics:  # reported, not judged: the distance to gold's bigram distribution
                print(f"{'js_2':<24} {result.metrics['js_2']:>9.4f} {result.reference.get('js_2', float('nan')):>9.4f}"
                      f"  {sampled:<14} -")
            print(f"{'exact copies':<24} {result.exact_duplicate_fraction:>9.1%} {'':>9}  {everything:<14} - (counted "
                  "within near-duplicates)")
            print(f"{v.check:<24} {v.value:>9.1%} {'':>9}  {everything:<14} {v.word} (bound {v.bound:.0%})")
        elif v.check == "outliers":
            rules = ", ".join(f"{k} {c}" for k, c in result.outlier_rules.items())
            print(f"{v.check:<24} {v.value:>9.1%} {'':>9}  {everything:<14} {v.word} (bound {v.bound:.0%}"
                  f"{'; ' + rules if rules else ''})")
        else:  # the human share: no value without a provenance field
            value = f"{v.value:>9.1%}" if v.value is not None else f"{'-':>9}"
            print(f"{v.check:<24} {value} {'':>9}  {everything:<14} {v.word} (floor {v.bound:.0%})")
    leak = result.gold_leakage
    if result.provenance:
        mix = ", ".join(f"{k} {v} ({v / n:.0%})" for k, v in sorted(result.provenance.items()))
        print(f"{'provenance':<24} {mix}")
    print(f"\nnear-duplicate: {result.near_duplicate_definition}")
    if result.near_duplicate_examples or result.outlier_examples or leak["examples"]:
        print("texts are numbered from 0, in reading order (a folder's files in sorted order)")
    for i, j, jac in result.near_duplicate_examples[:3]:
        print(f"  near-duplicate: texts {i} and {j} (Jaccard {jac:.2f})")
    for i, why in result.outlier_examples[:3]:
        print(f"  outlier: text {i}: {why}")
    for ex in leak["examples"][:3]:
        how = "verbatim" if ex["exact"] else f"{ex['containment']:.0%} of its word 5-grams"
        print(f"  leaked: gold text {ex['gold']} in text {ex['text']} ({how}): {ex['gold_excerpt']!r}")
    if args.json:
        Path(args.json).write_text(json.dumps(json_safe(result.to_dict()), indent=1, default=str, allow_nan=False),
                                    encoding="utf-8")  # strict JSON: NaN becomes null
    if result.passed:
        print("\nPASSED")
        return 0
    print("\nFAILED:\n" + "\n".join(f"  - {f}" for f in result.failures))
    return 1


def _cmd_thresholds(args: argparse.Namespace) -> int:
    th = Thresholds.coerce(args.preset)
    if args.calibrate:
        from collapseguard.detection.calibration import calibrate
        from collapseguard.gold.goldset import GoldSet

        gold = GoldSet.from_jsonl(args.calibrate, text_field=args.text_field)
        from collapseguard.detection.alerts import silenced_alerts

        with silenced_alerts():  # its notes are printed below, once
            cal = calibrate(gold, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens, base=th)
        if not cal.scores:
            raise ValueError(f"{args.calibrate}: no gold text is long enough for a prompt and a continuation of "
                             f"{args.max_new_tokens} tokens; lower --max-new-tokens")
        fewer = (f", fewer than --num-samples {args.num_samples}: the gold set yields no more"
                 if cal.guard_prompts < args.num_samples else "")
        print(f"split-half calibration on {gold.name} ({len(gold)} texts, {len(next(iter(cal.scores.values())))} "
              f"rounds of {cal.prompts} outputs x {args.max_new_tokens} tokens; the guard's checks on this gold "
              f"set judge {cal.guard_prompts} prompts{fewer}):", file=sys.stderr)
        print(f"{'metric':<20} {'kind':<7} {'median':>8} {'q' + format(cal.quantile, '.0%'):>8} {'worst':>8}",
              file=sys.stderr)
        for metric, kind, med, q, worst in cal.rows():
            print(f"{metric:<20} {kind:<7} {med:>8.3f} {q:>8.3f} {worst:>8.3f}", file=sys.stderr)
        for note in cal.notes:
            print(f"warning: {note}", file=sys.stderr)
        print(file=sys.stderr)
        th = cal.thresholds
    if args.format == "yaml":
        text = th.to_yaml()
    elif args.format == "json":
        text = json.dumps(th.to_dict(), indent=1) + "\n"
    else:
        text = None
    if text is not None:
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
            print(f"wrote {args.out}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    print(f"thresholds {args.preset!r}{' calibrated' if args.calibrate else ''} (presets: "
          f"{', '.join(sorted(PRESETS))})\n")
    for name, default, doc in Thresholds.describe():
        value = getattr(th, name)
        lines = textwrap.wrap(doc, 70)
        print(f"{name:<24} {value!s:>6}  (default {default})\n" + "".join(f"{'':<32}{ln}\n" for ln in lines))
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from collapseguard.gold.goldset import GoldSet
    from collapseguard.guard.generation import GenerationSettings

    try:
        from collapseguard.integrations.profiling import profile_checkpoint
    except ImportError as exc:
        raise ValueError(f"`collapseguard profile` needs torch and transformers ({exc}); "
                         "install with: pip install 'collapseguard[transformers]'") from None
    gold = GoldSet.from_jsonl(args.gold, text_field=args.text_field)
    generation = GenerationSettings(num_samples=args.num_samples, prompt_length=args.prompt_length,
                                    max_new_tokens=args.max_new_tokens, seed=args.seed)
    profile = profile_checkpoint(args.checkpoint, gold, generation=generation)
    path = profile.save(args.out)
    m = profile.metrics
    print(f"wrote {path}: gold {gold.name} ({gold.fingerprint[:12]}...), {int(m['num_outputs'])} outputs, "
          f"gold perplexity {m.get('gold_ppl', float('nan')):.4g} (tail band {m.get('gold_ppl_tail', float('nan')):.4g}), "
          f"distinct-2 {m['distinct_2']:.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collapseguard", description="Catch model collapse while training.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="recursive-training demo on built-in real human text (no download)")
    demo.add_argument("--generations", type=int, default=8, help="generations after generation 0 (default 8)")
    demo.add_argument("--floor", type=float, default=0.1, help="starting human share of the reweight track")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--thresholds", default="balanced", help="preset name or YAML/JSON file")
    demo.add_argument("--out", default="runs/demo", help="folder for trails, data and the report (runs/demo)")
    demo.add_argument("--no-report", action="store_true", help="skip the HTML report")
    demo.set_defaults(func=_cmd_demo)

    rep = sub.add_parser("report", help="write a self-contained HTML report of a run folder")
    rep.add_argument("run_dir", help="folder with the guard's alert trail and/or Lightning CSV, HF trainer_state.json, "
                     "TensorBoard logs")
    rep.add_argument("--out", help="HTML file to write (default RUN_DIR/report.html)")
    rep.set_defaults(func=_cmd_report)

    aud = sub.add_parser("audit", help="screen a dataset against gold before training on it (exit 1 on failure)")
    aud.add_argument("data", help="JSONL (.jsonl, .json, .gz), parquet or text (one item per line), or a folder of "
                     "JSONL or parquet files")
    aud.add_argument("--gold", required=True, help="gold set as JSONL")
    aud.add_argument("--text-field", default="text", help="field holding the text in DATA (default text)")
    aud.add_argument("--gold-text-field", default="text", help="field holding the text in GOLD (default text)")
    aud.add_argument("--provenance-field", default="provenance", help="field with human/synthetic labels")
    aud.add_argument("--thresholds", default="balanced", help="preset name or YAML/JSON file")
    aud.add_argument("--fail-on", default="critical", choices=("warn", "critical"),
                     help="alert severity that fails the audit (default critical)")
    aud.add_argument("--max-near-duplicates", type=float, default=0.05)
    aud.add_argument("--max-outliers", type=float, default=0.05)
    aud.add_argument("--min-human-fraction", type=float, default=None)
    aud.add_argument("--max-gold-leakage", type=float, default=0.0,
                     help="share of the gold set's texts allowed in the data (default 0: any leaked gold text fails)")
    aud.add_argument("--leak-containment", type=float, default=0.5,
                     help="a text leaks a gold text holding at least this share of its word 5-grams (default 0.5)")
    aud.add_argument("--sample-size", type=int, default=2000,
                     help="texts in the diversity sample (default 2000; the other checks count every text)")
    aud.add_argument("--no-progress", action="store_true",
                     help="no progress bar (it shows only on a terminal anyway)")
    aud.add_argument("--json", help="also write the findings as JSON here")
    scale = aud.add_argument_group("audits at scale (datatrove; pip install 'collapseguard[distributed]')")
    scale.add_argument("--executor", choices=("local", "slurm", "ray"),
                       help="run the audit as datatrove steps: local processes, Slurm jobs or a Ray cluster "
                       "(default: one process)")
    scale.add_argument("--tasks", type=int, help="shards of the data (default: one per file)")
    scale.add_argument("--workers", type=int, help="tasks run at once (default: local min(tasks, CPUs))")
    scale.add_argument("--work-dir", help="folder for the tasks' states and logs; rerunning the same command resumes "
                       "(default: runs/audit-<data>-<settings hash>; on a shared filesystem for slurm/ray)")
    scale.add_argument("--partition", help="Slurm partition (needed by --executor slurm)")
    scale.add_argument("--time", default="12:00:00", help="Slurm time limit per task (default 12:00:00)")
    aud.set_defaults(func=_cmd_audit)

    th = sub.add_parser("thresholds", help="print every threshold with its default and meaning; calibrate from gold")
    th.add_argument("preset", nargs="?", default="balanced", help=f"one of {sorted(PRESETS)} or a YAML/JSON file")
    th.add_argument("--format", choices=("table", "yaml", "json"), default="table")
    th.add_argument("--out", help="write the YAML/JSON here instead of stdout")
    th.add_argument("--calibrate", metavar="GOLD", help="suggest bounds from this gold JSONL's split-half variation")
    th.add_argument("--text-field", default="text")
    th.add_argument("--num-samples", type=int, default=64, help="outputs per check, as the guard runs it")
    th.add_argument("--max-new-tokens", type=int, default=32, help="tokens per output, as the guard runs it")
    th.set_defaults(func=_cmd_thresholds)

    prof = sub.add_parser("profile", help="write a reference profile of a saved Hugging Face checkpoint")
    prof.add_argument("checkpoint", help="folder saved with save_pretrained() (model and tokenizer)")
    prof.add_argument("--gold", required=True, help="gold set as JSONL")
    prof.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    prof.add_argument("--out", required=True, help="profile JSON to write")
    prof.add_argument("--num-samples", type=int, default=64)
    prof.add_argument("--prompt-length", type=int, default=16)
    prof.add_argument("--max-new-tokens", type=int, default=32)
    prof.add_argument("--seed", type=int, default=0)
    prof.set_defaults(func=_cmd_profile)
    return parser


_POSITIVE = (Interval(int, 1, None),)
FLAGS: dict[str, dict[str, tuple[tuple[Constraint, ...], str | None]]] = {
    "demo": {"generations": (_POSITIVE, None), "floor": ((Interval(float, 0, 1),), "the human share, 0.1: 10%")},
    "thresholds": {"num_samples": (_POSITIVE, None), "max_new_tokens": (_POSITIVE, None)},
    "audit": {"tasks": (_POSITIVE, None), "workers": (_POSITIVE, None)},
}
"""Each command's numeric flags (by ``dest``) and what they accept, held to it by
:func:`collapseguard._validation.validate`; ``audit``'s settings also take :data:`AuditSettings`' constraints."""


def check_flags(args: argparse.Namespace) -> None:
    """Refuse a flag's value in the validator's one format, ``collapseguard CMD: --flag=value is invalid: ...``
    (a flag left unset, None, is not checked)."""
    flags = dict(FLAGS.get(args.command, {}))
    if args.command == "audit":
        from collapseguard.audit.dataset import SETTINGS

        flags.update({name: spec for name, spec in SETTINGS.items() if hasattr(args, name)})
    for dest, (constraints, fix) in flags.items():
        value = getattr(args, dest, None)
        if value is not None:
            flag = "--" + dest.replace("_", "-")
            validate(f"collapseguard {args.command}", flag, value, *constraints, fix=fix)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_flags(args)
        return int(args.func(args))
    except (ValueError, TypeError, OSError, ImportError, KeyError, RuntimeError) as exc:
        if args.debug:
            raise
        command = f"collapseguard {args.command}"
        text = str(exc).removeprefix(f"{command}: ")  # a flag's refusal names the command already
        print(f"{command}: error: {text} (--debug shows the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"collapseguard {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
