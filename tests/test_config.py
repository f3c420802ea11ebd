"""Config files are validated on load; every error names the key and what is expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import cli
from pipelines.config import REPO_ROOT, Config, load_config, parse_config, parse_set
from pipelines.errors import ConfigError

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


@pytest.mark.parametrize("name", ["default", "smoke"])
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
        "report, tracking"
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
            "forecasters.lstm.epochs: Input should be a valid integer, unable to parse string "
            "as an integer (got 'many')",
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
    assert cfg.forecasters.lstm.epochs == 5
    assert cfg.forecasters.lstm.units == [8]  # the rest of the section is kept
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
