"""Workdirs on a bucket: everything the loop and the stages write or read in a workdir, other than orbax's
array files (tensorstore talks to GCS itself), goes through `etils.epath` and works on a gs:// URL.

The bucket is fsspec's in-memory file system registered as the `gs` protocol, which is what epath uses for
gs:// when TensorFlow is not installed."""

import dataclasses
import json
import types

import fsspec
import ml_collections
import numpy as np
import pytest
from etils import epath
from fsspec.implementations.memory import MemoryFileSystem

from fact_rlhf_jax import config as config_lib
from fact_rlhf_jax import paths, pretrained
from fact_rlhf_jax.data.pipeline import write_bad_record_report
from fact_rlhf_jax.models import config as mcfg
from fact_rlhf_jax.train import reference_logps
from fact_rlhf_jax.train.metrics import MetricsWriter

RUN = "gs://bucket/runs/rm"


class FakeBucket(MemoryFileSystem):
    protocol = ("gs", "gcs")
    store: dict = {}
    pseudo_dirs = [""]

    def __init__(self, *args, finalize_on_close=False, **kwargs):  # epath asks for gcsfs' finalize_on_close
        super().__init__(*args, **kwargs)


@pytest.fixture
def bucket(monkeypatch):
    for name in ("gs", "gcs"):
        fsspec.register_implementation(name, FakeBucket, clobber=True)
    FakeBucket.store.clear()
    yield FakeBucket.store
    FakeBucket.store.clear()


def test_a_url_stays_a_url():
    assert str(paths.workdir(RUN) / "checkpoints") == RUN + "/checkpoints"  # pathlib would write gs:/bucket/...
    assert paths.absolute("runs/x").startswith("/") and paths.absolute(RUN) == RUN


def test_config_card_and_metrics_on_a_bucket(bucket):
    config = ml_collections.ConfigDict(dict(stage="reward", lr=1e-4))
    config_lib.save_resolved(config, RUN)
    assert json.loads(epath.Path(RUN, "config.json").read_text()) == {"lr": 1e-4, "stage": "reward"}

    card = pretrained.Card("reward", mcfg.preset("tiny"), "/tok", base="gs://bucket/runs/sft",
                           adapter=pretrained.AdapterSpec("lora", 8, 16.0, ("q", "v")), head="head")
    pretrained.write_card(RUN, card)
    assert pretrained.is_workdir(RUN)
    assert pretrained.describe(RUN) == dataclasses.replace(card, location=RUN)
    assert pretrained.absolute(card.base) == "gs://bucket/runs/sft"

    for start, steps in ((0, (1, 2)), (2, (3,))):  # a resumed run continues the same metrics.jsonl
        writer = MetricsWriter(RUN, total_steps=3, initial_step=start, tensorboard=False, progress=False)
        for step in steps:
            writer.write(step, {"loss": 1.0 / step})
        writer.close()
    lines = epath.Path(RUN, "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]


def test_reference_table_and_bad_record_report_on_a_bucket(bucket):
    table = np.arange(8, dtype=np.float32).reshape(4, 2)
    fingerprint = {"model": "m", "data": {"file": "f"}}
    saved = reference_logps.save_table(RUN, fingerprint, table)
    assert str(saved).startswith(RUN + "/reference_logps/")
    np.testing.assert_array_equal(reference_logps.load_table(RUN, fingerprint, 4), table)
    assert reference_logps.load_table(RUN, fingerprint, 5) is None  # a table for another file length

    loader = types.SimpleNamespace(bad_records={"too_long": 2}, bad_examples={"too_long": ["x"]},
                                   source_paths=["p.json"], strict=False)
    path = write_bad_record_report(loader, RUN)
    assert path == RUN + "/bad_records.json"
    assert json.loads(epath.Path(path).read_text())["total"] == 2
