"""Config files are validated on load; every error names the key and what is expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import cli
from pipelines.common.errors import ConfigError
from pipelines.config import REPO_ROOT, Config, load_config, parse_config, parse_set

SMOKE = REPO_ROOT / "configs" / "smoke.yaml"


def smoke_error(overrides: dict) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, overrides=overrides)
    return str(err.value)


def minimal(**extra) -> dict:
    return {"name": "x", "data": {"instruments": ["A"]}, **extra}


def parse_error(raw) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "f.yaml")
    return str(err.value)


@pytest.mark.parametrize("name", ["default", "smoke", "zoo"])
def test_bundled_configs_load(name):
    cfg = load_config(f"configs/{name}.yaml")
    assert isinstance(cfg, Config)
    assert cfg.name == name  # the file's stem
    assert cfg.run_directory == REPO_ROOT / "build" / name
    assert all(
        (REPO_ROOT / cfg.data.directory / f"{i}.csv").is_file() for i in cfg.data.instruments
    )


def test_config_paths_are_relative_to_the_repo_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(SMOKE)
    assert cfg.resolve(cfg.data.directory) == REPO_ROOT / "data" / "sample"
    assert cfg.resolve(str(tmp_path)) == tmp_path


# Unknown and misspelled keys --------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"seeed": 1}, "unknown key 'seeed'; did you mean 'seed'?"),
        (
            {"data": {"instrumnets": ["A"]}},
            "unknown key 'data.instrumnets'; did you mean 'instruments'?",
        ),
        (
            {"forecasters": {"lstm": {"epoch": 3}}},
            "unknown key 'forecasters.lstm.epoch'; did you mean 'epochs'?",
        ),
        (
            {"backtest": {"sizing": {"percnt": 3}}},
            "unknown key 'backtest.sizing.percnt'; did you mean 'percent'?",
        ),
        (
            {"data": {"risk_free": {"serie": "DTB3"}}},
            "unknown key 'data.risk_free.serie'; did you mean 'series'?",
        ),
    ],
)
def test_misspelled_key_is_named_with_a_suggestion(overrides, message):
    assert smoke_error(overrides) == f"{SMOKE}: {message}"


def test_unknown_key_without_a_close_match_lists_the_valid_keys():
    assert smoke_error({"zzz_unrelated": 3}) == (
        f"{SMOKE}: unknown key 'zzz_unrelated'; valid keys: name, seed, device, "
        "deterministic, output_directory, data, features, walkforward, forecasters, backtest, "
        "report, tracking, executor, search"
    )


def test_every_bad_key_is_reported_at_once():
    lines = smoke_error({"seeed": 1, "features": {"windw": 3}}).splitlines()
    assert len(lines) == 2
    assert any("'features.windw'; did you mean 'window'?" in line for line in lines)


# Wrong types and ranges ------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"forecasters": {"lstm": {"epochs": "many"}}},
            "forecasters.lstm.epochs: Input should be a valid integer (got 'many')",
        ),
        (
            {"forecasters": {"lstm": {"epochs": 0}}},
            "forecasters.lstm.epochs: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            {"backtest": {"commission": 0.5}},
            "backtest.commission: Input should be less than 0.1 (got 0.5)",
        ),
        (
            {"walkforward": {"train_bars": 10}},
            "walkforward.train_bars: Input should be greater than or equal to 50 (got 10)",
        ),
        ({"data": {"price": "adj"}}, "data.price: Input should be 'adjusted' or 'raw' (got 'adj')"),
        (
            {"data": {"null_rows": "skip"}},
            "data.null_rows: Input should be 'drop' or 'error' (got 'skip')",
        ),
        ({"device": "tpu"}, "device: Input should be 'auto', 'cpu' or 'gpu' (got 'tpu')"),
        (
            {"data": {"risk_free": {"rate": 2}}},
            "data.risk_free.rate: Input should be less than or equal to 0.5 (got 2)",
        ),
        (
            {"data": {"start": "yesterday"}},
            "data.start: Input should be a valid date or datetime, input is too short "
            "(got 'yesterday')",
        ),
        (
            {"backtest": {"sma_crossover": {"fast": 50, "slow": 20}}},
            "backtest.sma_crossover: fast (50) must be shorter than slow (20) (got {'fast': 50, "
            "'slow': 20})",
        ),
    ],
)
def test_wrong_type_or_range_names_the_key_and_the_expected_value(overrides, message):
    assert smoke_error(overrides) == f"{SMOKE}: {message}"


def test_start_must_not_come_after_end():
    message = smoke_error({"data": {"start": "2012-01-01", "end": "2011-01-01"}})
    assert message.startswith(
        f"{SMOKE}: data: start (2012-01-01) must not be after end (2011-01-01)"
    )


def test_a_one_day_range_is_allowed_for_intraday_bars():
    cfg = load_config(SMOKE, overrides={"data": {"start": "2012-01-03", "end": "2012-01-03"}})
    assert cfg.data.start == cfg.data.end


@pytest.mark.parametrize("name", ["../GSPC", "a/b", "/etc/passwd", "GS PC", ".hidden"])
def test_instrument_names_that_are_not_plain_tickers_are_refused(name):
    assert smoke_error({"data": {"instruments": [name]}}) == (
        f"{SMOKE}: data.instruments: instrument name {name!r} is not a plain ticker: "
        "use letters, digits and '.', '_', '-', '^', '=' only (no path separators) "
        f"(got [{name!r}])"
    )


def test_repeated_and_empty_instrument_lists():
    assert "instrument names repeat: ['A', 'A']" in parse_error(
        {"name": "x", "data": {"instruments": ["A", "A"]}}
    )
    assert "data.instruments: List should have at least 1 item" in parse_error(
        {"name": "x", "data": {"instruments": []}}
    )


def test_experiment_name_cannot_be_a_path():
    assert parse_error(minimal(name="../x")) == (
        "f.yaml: name: use letters, digits, '.', '_' and '-' only (got '../x')"
    )


def test_missing_section_and_wrong_section_type():
    assert parse_error({"name": "x"}) == "f.yaml: missing required key 'data'"
    assert parse_error({"name": "x", "data": 3}) == (
        "f.yaml: data: Input should be a valid dictionary or instance of DataConfig (got 3)"
    )
    assert parse_error([1, 2]) == "f.yaml: expected a mapping of keys at the top level, got list"


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.yaml")
    assert str(err.value) == (
        f"config file {str(tmp_path / 'nope.yaml')!r} not found; see configs/ for examples"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: not valid YAML: "):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError) as err:
        load_config(scalar)
    assert str(err.value) == f"{scalar}: expected a mapping of keys at the top level"


# --set overrides -------------------------------------------------------------------


def test_parse_set_builds_nested_overrides_with_yaml_values():
    assert parse_set(["a.b=3", "c=x", "d=[1, 2]", "e=null", "f.g.h=true", "a.z=0.5"]) == {
        "a": {"b": 3, "z": 0.5},
        "c": "x",
        "d": [1, 2],
        "e": None,
        "f": {"g": {"h": True}},
    }


@pytest.mark.parametrize("item", ["novalue", "=3"])
def test_parse_set_rejects_items_without_a_key_or_value(item):
    with pytest.raises(ConfigError) as err:
        parse_set([item])
    assert str(err.value) == (f"--set {item!r}: expected KEY=VALUE, e.g. forecasters.lstm.epochs=5")


def test_parse_set_rejects_a_key_below_a_value():
    with pytest.raises(ConfigError) as err:
        parse_set(["a=1", "a.b=2"])
    assert str(err.value) == "--set 'a.b=2': 'a' was already set to a value"


def test_overrides_merge_into_the_file_and_are_validated(tmp_path):
    args = cli.stage_parser("data", "test").parse_args(
        [
            "--config",
            str(SMOKE),
            "--set",
            "forecasters.lstm.epochs=5",
            "--set",
            f"output_directory={tmp_path}",
            "--set",
            "data.instruments=[GOOG]",
        ]
    )
    cfg = cli.config_from_args(args)
    assert cfg.forecasters["lstm"].params.epochs == 5
    assert cfg.forecasters["lstm"].params.units == [8]  # the rest of the section is kept
    assert cfg.data.instruments == ["GOOG"]
    assert cfg.data.start is not None  # untouched keys keep the file's values
    assert cfg.run_directory == Path(tmp_path) / "smoke"
    args = cli.stage_parser("data", "test").parse_args(
        ["--config", str(SMOKE), "--set", "forecasters.lstm.epochz=5"]
    )
    with pytest.raises(ConfigError, match="'forecasters.lstm.epochz'; did you mean 'epochs'"):
        cli.config_from_args(args)


def test_stage_errors_become_one_line_and_exit_code_2(capsys):
    def body() -> int:
        raise ConfigError("f.yaml: unknown key 'x'")

    assert cli.run_stage(body) == 2
    assert capsys.readouterr().err == "error: f.yaml: unknown key 'x'\n"


# Strict where YAML is lenient; every bad config one line and exit code 2 --------------


def stage_exit(tmp_path: Path, capsys, text: str | bytes, *sets: str) -> tuple[int, str]:
    """Run a stage's config loading as ``python -m pipelines <stage>`` does: code and stderr."""
    path = tmp_path / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    argv = ["--config", str(path)]
    for item in sets:
        argv += ["--set", item]
    args = cli.stage_parser("data", "test").parse_args(argv)
    code = cli.run_stage(lambda: cli.config_from_args(args) and 0, "data")
    return code, capsys.readouterr().err


GOOD = "data:\n  instruments: [GSPC]\n"


@pytest.mark.parametrize(
    ("text", "sets", "expected"),
    [
        (
            GOOD + "  end: 2012-13-45\n",
            (),
            "data.end: Input should be a valid date or datetime, "
            "month value is outside expected range of 1-12 (got '2012-13-45')",
        ),
        (
            GOOD,
            ("data.end=2012-02-30",),
            "data.end: Input should be a valid date or datetime, "
            "day value is outside expected range (got '2012-02-30')",
        ),
        (GOOD, ("seed=[1,",), "seed: Input should be a valid integer (got '[1,')"),
        (
            GOOD,
            ("seed=!!python/object/apply:os.system [echo hi]",),
            "seed: Input should be a "
            "valid integer (got '!!python/object/apply:os.system [echo hi]')",
        ),
        (GOOD + "seed: true\n", (), "seed: Input should be a valid integer (got True)"),
        (
            GOOD + "deterministic: 'on'\n",
            (),
            "deterministic: Input should be a valid boolean (got 'on')",
        ),
        (
            GOOD + "report:\n  cost_sweep_bp: [0, -5]\n",
            (),
            "report.cost_sweep_bp.1: Input should be greater than or equal to 0 (got -5)",
        ),
        (
            GOOD + "forecasters:\n  ols: {lags: 50, window: 10}\n",
            (),
            "forecasters.ols: window "
            "(10) must be greater than lags + 1 (51): a rolling regression on the lags and a "
            "constant needs more pairs than unknowns (got {'lags': 50, 'window': 10})",
        ),
        (
            GOOD + "seed: 1\nseed: 2\n",
            (),
            "not valid YAML: key 'seed' is given twice (first "
            "on line 3); keep one (line 4, column 1)",
        ),
        (
            GOOD + "tracking:\n  experiment: ../../../x\n",
            (),
            "tracking.experiment: use "
            "letters, digits and '.', '_', '-', '^', '=' only (no path separators, no '..'), at "
            "most 200 characters (got '../../../x')",
        ),
        (GOOD + "tracking:\n  experiment: /tmp/x\n", (), "tracking.experiment: use letters"),
    ],
)
def test_bad_configs_end_with_one_line_naming_the_key_and_exit_code_2(
    tmp_path, capsys, text, sets, expected
):
    code, err = stage_exit(tmp_path, capsys, text, *sets)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert expected in err


def test_a_set_value_that_is_not_yaml_is_taken_as_a_string(tmp_path, capsys):
    assert parse_set(["data.date_format=%m/%d/%Y"]) == {"data": {"date_format": "%m/%d/%Y"}}
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    args = cli.stage_parser("data", "test").parse_args(
        ["--config", str(path), "--set", "data.date_format=%m/%d/%Y"]
    )
    assert cli.config_from_args(args).data.date_format == "%m/%d/%Y"


def test_a_config_that_is_not_utf8_names_the_byte_and_the_fix(tmp_path, capsys):
    code, err = stage_exit(tmp_path, capsys, GOOD.encode() + b"# caf\xe9\n")
    assert code == 2
    assert err == (
        f"error: {tmp_path / 'c.yaml'}: not UTF-8 text (byte 0xe9 at offset 33); "
        "save the file as UTF-8\n"
    )


def test_an_alias_bomb_is_refused_quickly_with_a_short_error(tmp_path, capsys):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for k in range(1, 9):  # 9**9 values once expanded, about 1 KB of YAML
        levels.append(f"{chr(97 + k)}: &{chr(97 + k)} [{', '.join([f'*{chr(96 + k)}'] * 9)}]")
    text = "\n".join(levels) + "\n" + GOOD
    assert len(text) < 1100
    code, err = stage_exit(tmp_path, capsys, text)
    assert code == 2
    assert err == (
        f"error: {tmp_path / 'c.yaml'}: its aliases expand to more than 10,000 values; a "
        "config needs far fewer (write the values out, or use fewer aliases)\n"
    )


def test_error_text_echoes_at_most_a_few_hundred_characters(tmp_path, capsys):
    code, err = stage_exit(tmp_path, capsys, GOOD + "device: " + "x" * 100_000 + "\n")
    assert code == 2
    assert "device: Input should be" in err
    assert len(err) < 600


def test_dates_in_a_config_file_are_still_dates():
    cfg = parse_config(minimal(data={"instruments": ["A"], "start": "2010-01-04"}), "f.yaml")
    assert cfg.data.start.isoformat() == "2010-01-04"


def test_the_reports_candidate_is_a_configured_forecaster_with_its_label():
    cfg = load_config("configs/smoke.yaml")
    assert (cfg.report.candidate, cfg.candidate_label) == ("lstm", "LSTM")
    variant = load_config(
        "configs/smoke.yaml",
        {
            "forecasters": {"lstm_4": {"kind": "lstm", "units": [4]}},
            "report": {"candidate": "lstm_4"},
        },
    )
    assert variant.candidate_label == "LSTM (lstm_4)"
    assert (
        load_config("configs/smoke.yaml", {"report": {"candidate": "sma"}}).candidate_label == "sma"
    )
    with pytest.raises(
        ConfigError, match=r"report.candidate: 'smaa' is not a forecaster of this config"
    ):
        load_config("configs/smoke.yaml", {"report": {"candidate": "smaa"}})
    # left at its default, a config without an LSTM is still valid: the report says so
    load_config("configs/smoke.yaml", {"forecasters": {"lstm": None}})


def test_reading_a_config_leaves_the_backtest_statistics_unimported():
    """A config names its strategies, so reading one imports their modules; quantstats
    (with matplotlib and yfinance) waits for a backtest to need it, so a train worker,
    which unpickles the config before its first unit, starts without it."""
    import subprocess
    import sys

    code = (
        "import pickle, sys\n"
        "from pipelines.config import load_config\n"
        "cfg = pickle.loads(pickle.dumps(load_config('configs/default.yaml')))\n"
        "assert cfg.backtest.strategies, 'no strategy in the config'\n"
        "print(sorted(m for m in ('quantstats', 'backtrader') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # the strategies' classes are there (they subclass backtrader's), their statistics not
    assert done.stdout.split() == ["['backtrader']"]
