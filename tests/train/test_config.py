"""Config files, `path:arg` and `--config.a.b=value` overrides."""

import json

import ml_collections
import pytest

from fact_rlhf_jax import config as config_lib

CONFIG_FILE = '''
import ml_collections

def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.name = arg or "default"
    c.lr = 1e-3
    c.steps = 10
    c.flag = False
    c.patterns = ("a/.*",)
    c.optional = None
    c.optim = ml_collections.ConfigDict(dict(b1=0.9, schedule="cosine"))
    return c
'''


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(CONFIG_FILE)
    return path


def test_load_with_arg_and_typed_overrides(config_path, tmp_path):
    rest, overrides = config_lib.split_overrides(
        ["--workdir", "w", "--config.lr=3e-5", "--config.steps", "7", "--config.flag=true",
         "--config.patterns=x/.*,y/.*", "--config.optim.b1=0.95", "--config.optional=[1, 2]"]
    )
    assert rest == ["--workdir", "w"]
    cfg = config_lib.load(f"{config_path}:big", overrides)
    assert cfg.name == "big"
    assert cfg.lr == 3e-5 and isinstance(cfg.lr, float)
    assert cfg.steps == 7 and isinstance(cfg.steps, int)
    assert cfg.flag is True
    assert cfg.patterns == ("x/.*", "y/.*")
    assert cfg.optim.b1 == 0.95
    assert cfg.optional == [1, 2]

    path = config_lib.save_resolved(cfg, tmp_path)
    saved = json.loads(path.read_text())
    assert saved["optim"]["b1"] == 0.95 and saved["name"] == "big"


def test_unknown_key_and_bad_value_are_named(config_path):
    with pytest.raises(config_lib.ConfigError, match="no field 'lrr'"):
        config_lib.load(str(config_path), [("lrr", "1")])
    with pytest.raises(config_lib.ConfigError, match="no field 'optimx'"):
        config_lib.load(str(config_path), [("optimx.b1", "1")])
    with pytest.raises(config_lib.ConfigError, match="expected an integer"):
        config_lib.load(str(config_path), [("steps", "many")])
    with pytest.raises(config_lib.ConfigError, match="does not exist"):
        config_lib.load_config_file("/nonexistent/exp.py")


def test_no_arg_calls_get_config_without_argument(config_path):
    assert config_lib.load(str(config_path)).name == "default"
    assert isinstance(config_lib.load(str(config_path)), ml_collections.ConfigDict)
