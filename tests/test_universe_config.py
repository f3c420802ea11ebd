"""configs/universe.yaml: every bundled instrument, the most folds they hold, every forecaster.

The config promises in its comments that it covers every file of data/sample,
that ``walkforward.folds`` is as many as the shortest file allows, and that the
synthetic-universe command it shows produces a universe the config can use;
these tests hold it to each promise.
"""

from __future__ import annotations

import re
import shlex

import pytest

from benchmarks import synthetic
from pipelines.common.errors import DataError
from pipelines.config import REPO_ROOT, Config, load_config, parse_set
from pipelines.execution.walkforward import make_folds
from pipelines.sources.load import load_universe
from pipelines.stages.train import _min_history

UNIVERSE = REPO_ROOT / "configs" / "universe.yaml"
SAMPLE = REPO_ROOT / "data" / "sample"


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(UNIVERSE)


def test_universe_config_loads_and_validates(cfg):
    assert isinstance(cfg, Config)
    assert cfg.name == "universe"
    assert cfg.run_directory == REPO_ROOT / "build" / "universe"
    assert cfg.executor.kind == "local"
    assert (
        cfg.tracking.registered_model
        != load_config("configs/default.yaml").tracking.registered_model
    )


def test_every_bundled_instrument_is_in_it(cfg):
    bundled = {path.stem for path in SAMPLE.glob("*.csv")}
    assert bundled, "no CSV files in data/sample"
    assert cfg.resolve(cfg.data.directory) == SAMPLE
    assert set(cfg.data.instruments) == bundled
    assert len(cfg.data.instruments) == len(bundled)


def test_every_forecaster_of_the_default_run_is_enabled(cfg):
    default = load_config("configs/default.yaml")
    assert set(cfg.forecasters.enabled()) == set(default.forecasters.enabled())


def test_folds_are_the_most_the_shortest_instrument_holds(cfg):
    default = load_config("configs/default.yaml")
    assert cfg.walkforward.folds is not None
    assert cfg.walkforward.folds > default.walkforward.folds
    assert (cfg.walkforward.train_bars, cfg.walkforward.test_bars) == (
        default.walkforward.train_bars,
        default.walkforward.test_bars,
    )
    bars = load_universe(cfg)
    min_history = _min_history(cfg)
    for name, frame in bars.items():
        folds = make_folds(frame.index, cfg.walkforward, min_history)
        assert len(folds) == cfg.walkforward.folds, name
        assert folds[-1].test_end_date == frame.index[-1]
    one_more = cfg.walkforward.model_copy(update={"folds": cfg.walkforward.folds + 1})
    shortest = min(bars.values(), key=len)
    with pytest.raises(DataError, match="walkforward.folds"):
        make_folds(shortest.index, one_more, min_history)


def _documented_command(prefix: str) -> list[str]:
    """The arguments of the command in the config's comments that starts with ``prefix``."""
    for line in UNIVERSE.read_text(encoding="utf-8").splitlines():
        text = line.lstrip("# ").strip()
        if text.startswith(prefix):
            return shlex.split(text.removeprefix(prefix))
    raise AssertionError(f"configs/universe.yaml documents no `{prefix}` command")


def test_the_documented_synthetic_universe_works_with_the_config(tmp_path, capsys):
    argv = _documented_command("python -m benchmarks.synthetic")
    out = argv.index("--out")
    assert argv[out + 1] == "data/synthetic/u32"
    argv[out + 1] = str(tmp_path / "u32")
    assert synthetic.main(argv) == 0
    names = sorted(path.stem for path in (tmp_path / "u32").glob("*.csv"))
    assert len(names) == 32
    assert all(synthetic.is_synthetic(name) for name in names)
    capsys.readouterr()

    overrides = parse_set(
        [f"data.directory={tmp_path / 'u32'}", f"data.instruments=[{','.join(names)}]"]
    )
    synthetic_cfg = load_config(UNIVERSE, overrides=overrides)
    bars = load_universe(synthetic_cfg)
    assert list(bars) == names
    min_history = _min_history(synthetic_cfg)
    for name, frame in bars.items():
        folds = make_folds(frame.index, synthetic_cfg.walkforward, min_history)
        assert len(folds) == synthetic_cfg.walkforward.folds, name


def test_the_documented_set_overrides_parse():
    text = UNIVERSE.read_text(encoding="utf-8")
    sets = re.findall(r"--set\s+'?([a-z_.]+=[^'\s]+)'?", text)
    assert {item.split("=", 1)[0] for item in sets} == {"data.directory", "data.instruments"}
    parsed = parse_set(sets)
    assert parsed["data"]["directory"] == "data/synthetic/u32"
    assert isinstance(parsed["data"]["instruments"], list)
