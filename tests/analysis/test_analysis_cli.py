"""The fit and report commands: JSON contract, exit codes, one-line errors, import hygiene."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from analysis.cli import fit_command, report_command
from analysis.synthetic import synthetic_runs

ROOT = Path(__file__).resolve().parents[2]


def _run_module(*args: str, env_home: Path | None = None) -> subprocess.CompletedProcess:
    env = None
    if env_home is not None:
        import os

        env = {**os.environ, "GAMMARAY_HOME": str(env_home)}
    return subprocess.run(
        [sys.executable, "-m", "analysis.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_fit_csv_recovers_known_exponents_within_003(tmp_path):
    truth = {"E": 1.8, "A": 350.0, "alpha": 0.33, "B": 600.0, "beta": 0.29}
    frame = synthetic_runs(
        {1.0: truth}, n_params=np.logspace(7, 10, 7), tokens=np.logspace(9, 12, 6), noise=0.005, seed=12
    )
    path = tmp_path / "runs.csv"
    frame.to_csv(path, index=False)
    proc = _run_module("fit", "--csv", str(path), "--form", "joint", "--bootstrap", "100", "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout.strip().splitlines()[-1])
    (fit,) = document["fits"]
    assert fit["form"] == "joint" and fit["group"] == {"gamma": 1.0} and fit["n_points"] == 42
    assert abs(fit["params"]["alpha"] - truth["alpha"]) < 0.03
    assert abs(fit["params"]["beta"] - truth["beta"]) < 0.03
    assert set(fit["ci"]) == {"E", "A", "alpha", "B", "beta"}
    assert fit["ci"]["alpha"][0] < fit["params"]["alpha"] < fit["ci"]["alpha"][1]


def test_fit_json_document_and_comparison(two_gamma_csv):
    result = CliRunner().invoke(
        fit_command, ["--csv", str(two_gamma_csv), "--form", "joint", "--bootstrap", "100", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"fits", "comparison"} <= set(document)
    assert [f["group"]["gamma"] for f in document["fits"]] == [0.5, 1.0]
    for fit in document["fits"]:
        assert set(fit["params"]) == {"E", "A", "alpha", "B", "beta"}
        assert {"form", "ci", "n_points", "ok", "messages"} <= set(fit)
    alpha = next(p for p in document["comparison"]["pairs"] if p["exponent"] == "alpha")
    assert alpha["faster"] == {"gamma": 1.0} and alpha["excludes_zero"] is True
    assert document["verdict"]["faster"] == "γ=1.0" and document["verdict"]["basis"] == "exponent"
    assert document["comparison"]["summary"][0].startswith("Verdict: γ=1.0 descends faster")


def test_fit_text_output_names_the_verdict(two_gamma_csv):
    result = CliRunner().invoke(
        fit_command, ["--csv", str(two_gamma_csv), "--form", "n", "--bootstrap", "50"]
    )
    assert result.exit_code == 0, result.output
    assert "α=" in result.stdout and "γ=1.0" in result.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--csv", "missing.csv"], "missing.csv: no such file"),
        (["--csv", "{bad}"], "missing column 'D'"),
        (["--csv", "{good}", "--by", "lr"], "--by: unknown column 'lr'"),
        (["--csv", "{good}", "--form", "cubic"], "--form: unknown form 'cubic'"),
        (["--csv", "{good}", "--grid", "x"], "exactly one of --grid NAME or --csv FILE"),
        ([], "exactly one of --grid NAME or --csv FILE"),
        (["--grid", "smoke", "--tracking-uri", "sqlite:///{tmp}/none.db"], "no tracking store at"),
        (["--csv", "{single}"], "nothing could be fitted"),
        (["--csv", "{good}", "--e", "known"], "--e known: 3 of 3 finished runs record no entropy rate"),
        (["--csv", "{good}", "--e", "median"], "Invalid value for '--e'"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(tmp_path, args, needle):
    (tmp_path / "bad.csv").write_text("N,loss\n1e6,3.0\n")
    synthetic_runs(n_params=[1e7, 1e8, 1e9], tokens=[1e10], seed=0).to_csv(tmp_path / "good.csv", index=False)
    (tmp_path / "single.csv").write_text("N,D,loss\n1e6,1e9,3.0\n")
    args = [
        a.format(
            bad=tmp_path / "bad.csv", good=tmp_path / "good.csv", single=tmp_path / "single.csv", tmp=tmp_path
        )
        for a in args
    ]
    result = CliRunner().invoke(
        fit_command, [*args, "--bootstrap", "0"], env={"GAMMARAY_HOME": str(tmp_path)}
    )
    assert result.exit_code == 2
    errors = [
        line for line in result.stderr.splitlines() if line.startswith("gammaray: error:") or "Error:" in line
    ]
    assert len(errors) == 1 and needle in errors[0], result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_bad_input_through_the_module_entry_point(tmp_path):
    proc = _run_module("report", "--csv", str(tmp_path / "absent.csv"), env_home=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"gammaray: error: {tmp_path / 'absent.csv'}: no such file"]


@pytest.fixture
def fewer_resamples(monkeypatch):
    """The report's 1000 resamples are the product default; 50 keep the suite fast (the intervals'
    coverage is tested in test_analysis_fit)."""
    monkeypatch.setattr("analysis.cli.REPORT_BOOTSTRAP", 50)


def test_report_writes_html_json_and_csv_beside_it_and_figures_as_png(
    tmp_path, two_gamma_csv, fewer_resamples
):
    out = tmp_path / "out" / "report.html"
    args = ["--csv", str(two_gamma_csv), "--out", str(out)]
    static_export = shutil.which("chromium") is not None and importlib.util.find_spec("kaleido") is not None
    if static_export:  # plotly's static export needs kaleido and Debian's chromium
        args += ["--png", str(tmp_path / "png")]
    result = CliRunner().invoke(report_command, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    text = out.read_text(encoding="utf-8")
    assert "γ=1.0 descends faster in N" in text
    assert "No loss histories in this input" in text  # CSV input: the training-curve section says so
    assert "<script src=" not in text and "<link " not in text  # plotly.js is inline: opens offline
    document = json.loads((out.parent / "fit.json").read_text(encoding="utf-8"))
    assert document["fits"] and "comparison" in document
    header = (out.parent / "fits.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert {"gamma", "form", "alpha", "alpha_low", "alpha_high"} <= set(header)
    if not static_export:
        pytest.skip("the static export needs kaleido and Debian's chromium")
    written = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert {"loss-n.png", "loss-d.png", "gap-0.png"} <= set(written)
    for name in written:
        data = (tmp_path / "png" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < 300_000


def test_report_defaults_to_the_workspace(tmp_path, monkeypatch, fewer_resamples):
    monkeypatch.setenv("GAMMARAY_HOME", str(tmp_path / "ws"))
    csv = tmp_path / "sizes.csv"
    synthetic_runs(n_params=np.logspace(6, 9, 6), tokens=[1e10], seed=3).to_csv(csv, index=False)
    result = CliRunner().invoke(report_command, ["--csv", str(csv)])
    assert result.exit_code == 0, result.output
    expected = tmp_path / "ws" / "reports" / "sizes" / "report.html"
    assert result.stdout.strip().splitlines()[-1] == str(expected) and expected.is_file()


def test_report_from_a_grid_lists_failed_runs(tmp_path, grid_store, fewer_resamples):
    out = tmp_path / "smoke.html"
    result = CliRunner().invoke(
        report_command, ["--grid", "smoke", "--tracking-uri", grid_store, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "CUDA out of memory" in text and "loss is NaN at step 120" in text
    assert 'class="failed"' in text
    assert 'id="fig-curves"' in text  # histories present: training curves are drawn


def test_report_prints_the_verdict_and_counts_the_notes_unless_verbose(tmp_path, fewer_resamples):
    # Two D slices of five sizes per group: fits per slice, notes about each, a hold-out check.
    frame = synthetic_runs(
        {
            1.0: {"E": 1.7, "A": 400.0, "alpha": 0.36, "B": 400.0, "beta": 0.28},
            0.5: {"E": 1.7, "A": 400.0, "alpha": 0.26, "B": 400.0, "beta": 0.28},
        },
        n_params=np.logspace(7, 9, 5),
        tokens=[1e9, 1e11],
        noise=0.004,
        seed=2,
    )
    csv = tmp_path / "runs.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "report.html"
    quiet = CliRunner().invoke(report_command, ["--csv", str(csv), "--out", str(out)])
    assert quiet.exit_code == 0, quiet.output
    lines = quiet.stdout.strip().splitlines()
    assert lines[0].startswith("Verdict: ") and lines[-1] == str(out)
    assert any(line.startswith("Hold-out (largest N") for line in lines)
    notes = [line for line in quiet.stderr.splitlines() if line.startswith("gammaray: note:")]
    assert not notes and "--verbose prints them" in quiet.stderr
    loud = CliRunner().invoke(report_command, ["--csv", str(csv), "--out", str(out), "--verbose"])
    hidden = int(quiet.stderr.split(" more note(s)")[0].rsplit(" ", 1)[-1])
    assert (
        len([line for line in loud.stderr.splitlines() if line.startswith("gammaray: note:")]) == hidden > 0
    )
    document = json.loads((tmp_path / "fit.json").read_text(encoding="utf-8"))
    assert document["e_mode"] == "shared" and set(document["verdict"]) == {
        "faster",
        "basis",
        "significant",
        "text",
    }
    assert document["holdout_mode"] == "largest-n" and all(
        abs(h["relative_error"]) < 0.03 for h in document["holdout"]
    )


def test_a_fit_at_a_bound_stays_visible_without_verbose(tmp_path):
    # Losses that rise with N: the power term is held at a bound (α at 0, or A at 0).
    csv = tmp_path / "rising.csv"
    csv.write_text("N,D,loss\n1e6,1e9,3.0\n2e6,1e9,3.1\n4e6,1e9,3.2\n8e6,1e9,3.3\n")
    result = CliRunner().invoke(fit_command, ["--csv", str(csv), "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    assert "the loss does not descend with N" in result.stderr


def test_analysis_imports_neither_torch_nor_ray():
    code = (
        "import sys, pkgutil, importlib, analysis\n"
        "for m in pkgutil.iter_modules(analysis.__path__):\n"
        "    importlib.import_module('analysis.' + m.name)\n"
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('clean')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr
