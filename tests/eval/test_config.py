"""configs/eval files match the built-in defaults; --config and --config.KEY overrides reach the run."""

import json
import os

import pytest

from fact_rlhf_jax import config as shared_config
from fact_rlhf_jax.cli import main
from fact_rlhf_jax.eval.config import BENCHMARKS, default_config

from .fakes import mmhal_record, write_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_config_files_match_defaults(benchmark):
    from_file = shared_config.load_config_file(os.path.join(REPO, "configs", "eval", f"{benchmark}.py"))
    assert from_file.to_dict() == default_config(benchmark).to_dict()


def test_reference_generation_settings():
    assert (default_config("pope").temperature, default_config("pope").max_new_tokens) == (0.2, 64)
    assert default_config("pope").prompt_suffix == "\nAnswer the question using a single word or phrase."
    assert (default_config("mmhal").temperature, default_config("mmhal").max_new_tokens) == (0.0, 1024)


def test_config_file_and_overrides_reach_the_results(tmp_path):
    cfg_file = tmp_path / "my_mmhal.py"
    cfg_file.write_text(
        "from fact_rlhf_jax.eval.config import default_config\n"
        "def get_config(arg=None):\n"
        "    c = default_config('mmhal')\n"
        "    c.judge.kind = 'rule'\n"
        "    c.max_new_tokens = int(arg or 7)\n"
        "    return c\n"
    )
    responses = write_json(tmp_path / "r.json", [mmhal_record(0, ["Dog"], "q", "a dog", "a dog")])
    out = tmp_path / "out"
    code = main(["eval", "mmhal", "--responses", responses, "--out-dir", str(out), "--no-progress",
                 "--config", f"{cfg_file}:99", "--config.judge.max_retries=9", "--config.temperature=0.5"])
    assert code == 0
    settings = json.loads((out / "results.json").read_text())["mmhal"]["settings"]
    assert (settings["max_new_tokens"], settings["temperature"], settings["judge"]["max_retries"]) == (99, 0.5, 9)
    assert settings["judge"]["kind"] == "rule"


def test_bad_override_value(tmp_path, capsys):
    responses = write_json(tmp_path / "r.json", [mmhal_record(0, ["Dog"], "q", "a", "a")])
    code = main(["eval", "mmhal", "--responses", responses, "--judge", "rule", "--out-dir", str(tmp_path / "o"),
                 "--config.batch_size=many"])
    assert code == 2 and "expected an integer" in capsys.readouterr().err
