"""README's quickstarts are the example files, and they run as a new user would run them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _quickstart(title: str) -> str:
    section = README.split(f"## Quickstart: {title}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).splitlines()
    assert first_block[0].startswith("bash scripts/setup.sh && python -m collapseguard demo")
    assert first_block[1].startswith("bash scripts/setup.sh dev && python -m pytest")
    assert "bash scripts/setup.sh dev && python -m pytest" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize(("title", "example"), [("PyTorch Lightning", "quickstart_lightning.py"),
                                                ("Hugging Face `Trainer`", "quickstart_transformers.py")])
def test_quickstart_is_the_example_file_and_at_most_ten_lines(title, example):
    code = _quickstart(title)
    assert code == (ROOT / "examples" / example).read_text()
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 10


@pytest.mark.slow
@pytest.mark.parametrize("example", ["quickstart_lightning.py", "quickstart_transformers.py"])
def test_quickstart_runs(example, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / example)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    if example == "quickstart_lightning.py":
        # Lightning's default logger (TensorBoard where it is installed, else CSV) got every metric
        from collapseguard.reporting.runlog import read_run

        run = read_run(tmp_path / "lightning_logs")[0]
        assert len(run.series["health"]) == 3 and "gold_ppl_tail" in run.series and not run.notes
    else:  # the Trainer printed its logs, ours included
        assert done.stdout.count("'collapseguard/health'") + done.stderr.count("'collapseguard/health'") == 3


def test_llm_quickstart_is_the_example_file_and_uses_a_step_schedule():
    code = _quickstart("fine-tuning a pretrained LLM")
    assert code == (ROOT / "examples" / "finetune_llm.py").read_text()
    assert "schedule=CheckSchedule(every_n_steps=" in code and "sentinel_every_n_steps=" in code
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 14


TRL_QUICKSTARTS = [("TRL `SFTTrainer`", "quickstart_trl_sft.py"), ("TRL `DPOTrainer`", "quickstart_trl_dpo.py"),
                   ("TRL `GRPOTrainer`", "quickstart_trl_grpo.py")]


@pytest.mark.parametrize(("title", "example"), TRL_QUICKSTARTS)
def test_trl_quickstart_is_the_example_file(title, example):
    code = _quickstart(title)
    assert code == (ROOT / "examples" / example).read_text()
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 14


@pytest.mark.slow
@pytest.mark.parametrize("example", [e for _, e in TRL_QUICKSTARTS])
def test_trl_quickstart_runs_and_logs_the_guard(example, tmp_path):
    pytest.importorskip("trl")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / example)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = done.stdout + done.stderr
    # SFT (2 epochs) and DPO (1 epoch) check per epoch; GRPO checks at each of TRL's logs (every 10 of 20 steps)
    want = {"quickstart_trl_sft.py": 2, "quickstart_trl_dpo.py": 1, "quickstart_trl_grpo.py": 2}[example]
    assert logged.count("'collapseguard/health'") == want
    if example == "quickstart_trl_grpo.py":
        assert logged.count("'collapseguard/policy_entropy'") == 2 and "'collapseguard/distinct_k'" in logged
    if example == "quickstart_trl_sft.py":
        assert logged.count("'collapseguard/distinct_k'") == 2
