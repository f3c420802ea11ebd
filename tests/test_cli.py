"""pipelines.cli.run_stage: whatever stops a stage becomes one clear line and an exit code."""

from __future__ import annotations

import logging
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pipelines import cli
from pipelines.common.errors import DataError


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_an_unexpected_error_is_one_line_and_exit_code_1(capsys):
    def body() -> int:
        raise ZeroDivisionError("division by zero\n  in the   fold loop")

    assert cli.run_stage(body, "backtest", verbose=False) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert _lines(captured.err) == [
        "error: backtest failed: ZeroDivisionError: division by zero in the fold loop "
        "(-v shows the traceback)"
    ]


def test_verbose_prints_the_traceback_before_the_line(capsys):
    def body() -> int:
        raise RuntimeError("boom")

    assert cli.run_stage(body, "report", verbose=True) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert 'raise RuntimeError("boom")' in err
    assert _lines(err)[-1] == "error: report failed: RuntimeError: boom"


def test_the_stage_name_defaults_to_the_module_of_the_body(capsys):
    def body() -> int:
        raise KeyError("x")

    body.__module__ = "pipelines.stages.backtest"
    assert cli.run_stage(body, verbose=False) == 1
    assert _lines(capsys.readouterr().err) == [
        "error: backtest failed: KeyError: 'x' (-v shows the traceback)"
    ]


def test_verbose_follows_setup_logging(capsys):
    def body() -> int:
        raise ValueError("bad")

    try:
        cli.setup_logging(verbose=True)
        assert cli.run_stage(body, "data") == 1
        assert "Traceback" in capsys.readouterr().err
        cli.setup_logging(verbose=False)
        assert cli.run_stage(body, "data") == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert _lines(err) == ["error: data failed: ValueError: bad (-v shows the traceback)"]
    finally:
        logging.getLogger("gatecast").setLevel(logging.NOTSET)


def test_notes_on_the_exception_go_in_the_same_line(capsys):
    def body() -> int:
        err = OSError("disk full")
        err.add_note("MLflow: the train run and the runs it opened are marked FAILED in x")
        raise err

    assert cli.run_stage(body, "train", verbose=False) == 1
    assert _lines(capsys.readouterr().err) == [
        "error: train failed: OSError: disk full (MLflow: the train run and the runs it "
        "opened are marked FAILED in x; -v shows the traceback)"
    ]


def test_an_error_without_a_message_says_so(capsys):
    def body() -> int:
        raise RuntimeError

    assert cli.run_stage(body, "train", verbose=False) == 1
    assert _lines(capsys.readouterr().err) == [
        "error: train failed: RuntimeError: (no message) (-v shows the traceback)"
    ]


def test_ctrl_c_is_one_line_and_exit_code_130(capsys):
    def body() -> int:
        raise KeyboardInterrupt

    assert cli.run_stage(body, "train", verbose=True) == 130
    assert _lines(capsys.readouterr().err) == ["interrupted: train stopped"]


def test_gatecast_errors_keep_their_own_message_and_exit_code_2(capsys):
    def body() -> int:
        raise DataError("GSPC.csv row 12: close is not a number; fix the row or drop it")

    assert cli.run_stage(body, "data", verbose=True) == 2
    assert capsys.readouterr().err == (
        "error: GSPC.csv row 12: close is not a number; fix the row or drop it\n"
    )


def test_a_body_that_succeeds_returns_its_code(capsys):
    assert cli.run_stage(lambda: 0, "data") == 0
    assert cli.run_stage(lambda: 3, "data") == 3
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("code", [0, 2])
def test_system_exit_passes_through(code):
    def body() -> int:
        raise SystemExit(code)

    with pytest.raises(SystemExit):
        cli.run_stage(body, "data")


class _Node:
    """An object that can sit in a reference cycle and be watched through a weakref."""

    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.mark.parametrize(
    "argv", [["train", "--config", "c.yaml"], ["data", "--help"], ["search", "--config", "c.yaml"]]
)
def test_the_entry_point_imports_the_stage_and_hands_it_the_rest(monkeypatch, argv):
    from pipelines import __main__ as entry

    events: list[str] = []

    def stage_module(name: str) -> types.SimpleNamespace:
        events.append(f"import {name}")
        return types.SimpleNamespace(main=lambda rest: events.append(f"main {rest}") or 0)

    monkeypatch.setattr(entry.importlib, "import_module", stage_module)
    assert entry.main(argv) == 0
    assert events == [f"import {entry.STAGES[argv[0]][0]}", f"main {argv[1:]}"]


def test_off_a_terminal_progress_is_a_line_per_instrument_and_one_per_stage(caplog):
    import io
    import logging

    from pipelines.common.progress import StageProgress

    stream = io.StringIO()  # not a terminal: no bar
    units = [("GSPC", "sma"), ("GSPC", "lstm"), ("GSPC", "lstm"), ("GOOG", "sma")]
    with (
        caplog.at_level(logging.INFO, logger="gatecast.progress"),
        StageProgress("train", units, "forecasters", stream=stream) as progress,
    ):
        progress.update("GSPC")
        progress.update("GOOG")  # GOOG's only unit: its line comes first
        progress.update("GSPC")
        assert [r.getMessage().rsplit(",", 1)[0] for r in caplog.records] == [
            "train GOOG: 1 forecaster"
        ]
        progress.update("GSPC")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[1].startswith("train GSPC: 2 forecasters, ") and lines[1].endswith(" s")
    assert lines[2].startswith("train: 2 instrument(s), 4 units, ")
    assert stream.getvalue() == ""


def test_on_a_terminal_progress_is_the_bar_alone(caplog):
    import io
    import logging

    from pipelines.common.progress import StageProgress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    with (
        caplog.at_level(logging.INFO, logger="gatecast.progress"),
        StageProgress("train", [("GSPC", "sma")], "forecasters", stream=stream) as progress,
    ):
        progress.update("GSPC")
    assert caplog.records == []
    assert "train: 100%" in stream.getvalue()


def test_the_gatecast_command_runs_the_stages():
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "gatecast"]
    assert script.value == "pipelines.__main__:main"
    command = Path(sys.executable).with_name("gatecast")
    done = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: gatecast" in done.stdout and "train" in done.stdout
