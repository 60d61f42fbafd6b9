"""The grain SFT loader: batches, buckets, padding, host sharding, resume, bad records, mixtures."""

import json

import numpy as np
import pytest

from fact_rlhf_jax.data import conversation, errors, pipeline, sources
from fact_rlhf_jax.data import image as image_lib

from .conftest import make_record, write_image

IMG, N_IMG, SIZE = 32000, 4, 8


def build(src, tok, **kw):
    args = dict(image_token_id=IMG, num_image_tokens=N_IMG, image_size=SIZE, max_length=128,
                global_batch_size=4, seed=0, read_threads=0)
    args.update(kw)
    return pipeline.build_sft_loader(src, tok, **args)


def take(it, n):
    return [next(it) for _ in range(n)]


def test_batch_contents_match_single_record_processing(llava_dir, llama_tokenizer):
    src = [(str(llava_dir / "data.json"), str(llava_dir / "images"), 1.0)]
    loader = build(src, llama_tokenizer, shuffle=False, num_epochs=1, global_batch_size=5)
    batches = list(loader)
    assert len(batches) == 2  # 10 records / 5
    records = json.loads((llava_dir / "data.json").read_text())
    for b, batch in enumerate(batches):
        assert set(batch) == {"input_ids", "attention_mask", "labels", "pixel_values"}
        assert batch["input_ids"].dtype == np.int32 and batch["labels"].dtype == np.int32
        assert batch["attention_mask"].dtype == np.int32 and batch["pixel_values"].dtype == np.float32
        T = batch["input_ids"].shape[1]
        assert T in loader.buckets and batch["pixel_values"].shape == (5, 3, SIZE, SIZE)
        for r in range(5):
            rec = records[5 * b + r]
            tok = conversation.tokenize_conversations(
                rec["conversations"], llama_tokenizer, has_image="image" in rec, image_token_id=IMG,
                num_image_tokens=N_IMG)
            n = len(tok.input_ids)
            np.testing.assert_array_equal(batch["input_ids"][r, :n], tok.input_ids)
            np.testing.assert_array_equal(batch["labels"][r, :n], tok.labels)
            assert (batch["input_ids"][r, n:] == 0).all() and (batch["labels"][r, n:] == -100).all()
            assert batch["attention_mask"][r].tolist() == [1] * n + [0] * (T - n)
            if "image" in rec:
                from PIL import Image

                want = image_lib.preprocess(Image.open(llava_dir / "images" / rec["image"]), SIZE)
                np.testing.assert_allclose(batch["pixel_values"][r], want, atol=1e-6)
                assert (batch["input_ids"][r] == IMG).sum() == N_IMG
            else:
                assert (batch["pixel_values"][r] == 0).all() and (batch["input_ids"][r] == IMG).sum() == 0


def test_left_padding_and_buckets(llava_dir, llama_tokenizer):
    src = [(str(llava_dir / "data.json"), str(llava_dir / "images"))]
    right = next(iter(build(src, llama_tokenizer, shuffle=False, length_buckets=[70, 100])))
    left = next(iter(build(src, llama_tokenizer, shuffle=False, length_buckets=[70, 100], pad_side="left")))
    lengths = right["attention_mask"].sum(1)
    T = right["input_ids"].shape[1]
    assert T == (70 if lengths.max() <= 70 else 100)
    for r, n in enumerate(lengths):
        np.testing.assert_array_equal(left["input_ids"][r, T - n :], right["input_ids"][r, :n])
        np.testing.assert_array_equal(left["labels"][r, T - n :], right["labels"][r, :n])
        assert left["attention_mask"][r].tolist() == [0] * (T - n) + [1] * n
    fixed = next(iter(build(src, llama_tokenizer, shuffle=False, length_buckets=[])))
    assert fixed["input_ids"].shape[1] == 128


def test_default_buckets():
    assert pipeline.default_buckets(1280) == (64, 128, 256, 512, 1024, 1280)
    assert pipeline.default_buckets(512) == (64, 128, 256, 512)
    assert pipeline.bucket_length(65, (64, 128)) == 128


def test_resume_gives_the_same_batches(llava_dir, llama_tokenizer):
    src = [(str(llava_dir / "data.json"), str(llava_dir / "images"))]
    loader = build(src, llama_tokenizer, global_batch_size=3, read_threads=2)
    it = iter(loader)
    take(it, 4)  # crosses an epoch boundary (10 records)
    state = json.loads(json.dumps(it.get_state()))
    want = take(it, 5)
    it2 = iter(build(src, llama_tokenizer, global_batch_size=3, read_threads=2))
    it2.set_state(state)
    got = take(it2, 5)
    for a, b in zip(want, got):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    # epochs reshuffle: the second epoch is a different order of the same records
    first = [r["input_ids"] for r in take(iter(build(src, llama_tokenizer, global_batch_size=10)), 2)]
    assert not np.array_equal(first[0], first[1])


def test_hosts_split_each_global_batch(llava_dir, llama_tokenizer):
    src = [(str(llava_dir / "data.json"), str(llava_dir / "images"))]
    kw = dict(global_batch_size=4, length_buckets=[])
    whole = take(iter(build(src, llama_tokenizer, **kw)), 3)
    hosts = [take(iter(build(src, llama_tokenizer, process_index=p, process_count=2, **kw)), 3) for p in (0, 1)]
    for k in range(3):
        assert hosts[0][k]["input_ids"].shape[0] == 2
        # host p holds global positions 2p, 2p + 1 of the batch: side by side, the hosts' batches are the global one
        for p in (0, 1):
            np.testing.assert_array_equal(hosts[p][k]["input_ids"], whole[k]["input_ids"][2 * p:2 * p + 2])
            np.testing.assert_array_equal(hosts[p][k]["pixel_values"], whole[k]["pixel_values"][2 * p:2 * p + 2])


def test_hosts_share_the_last_partial_batch(llava_dir, llama_tokenizer):
    """10 records in global batches of 4: the third batch has 2; with padding each host gets its half of it (host 1's
    all filler), so both hosts hold 3 batches and stop together."""
    src = [(str(llava_dir / "data.json"), str(llava_dir / "images"))]
    kw = dict(global_batch_size=4, num_epochs=1, shuffle=False, length_buckets=[], pad_final_batch=True)
    whole = list(build(src, llama_tokenizer, **kw))
    hosts = [list(build(src, llama_tokenizer, process_index=p, process_count=2, **kw)) for p in (0, 1)]
    assert [len(h) for h in hosts] == [3, 3] and len(whole) == 3
    for k in range(3):
        side_by_side = np.concatenate([hosts[0][k]["input_ids"], hosts[1][k]["input_ids"]])
        np.testing.assert_array_equal(side_by_side, whole[k]["input_ids"])
    assert (hosts[1][2]["labels"] == -100).all()  # filler rows only


def test_one_epoch_sees_every_record_once(llava_dir, llama_tokenizer):
    src = [(str(llava_dir / "data.json"), str(llava_dir / "images"))]
    batches = list(build(src, llama_tokenizer, global_batch_size=5, num_epochs=1, length_buckets=[]))
    ids = np.concatenate([b["input_ids"] for b in batches])
    # the question text carries "#i"; decode it back to the record index
    seen = sorted(int(llama_tokenizer.decode(row[row != IMG]).split("#")[1].split()[0]) for row in ids)
    assert seen == list(range(10))


def test_pad_final_batch_keeps_every_record(llava_dir, llama_tokenizer):
    src = [(str(llava_dir / "data.json"), str(llava_dir / "images"))]
    dropped = list(build(src, llama_tokenizer, global_batch_size=4, num_epochs=1, shuffle=False))
    padded = list(build(src, llama_tokenizer, global_batch_size=4, num_epochs=1, shuffle=False,
                        pad_final_batch=True))
    assert len(dropped) == 2 and len(padded) == 3
    last = padded[-1]
    assert last["input_ids"].shape[0] == 4
    # rows 0-1 are records 8 and 9; rows 2-3 are fillers: one attended pad token, no labels, no image
    assert last["attention_mask"][2:].tolist() == [[1] + [0] * (last["input_ids"].shape[1] - 1)] * 2
    assert (last["labels"][2:] == -100).all() and (last["input_ids"][2:] == 0).all()
    assert (last["pixel_values"][2:] == 0).all() and (last["labels"][:2] != -100).any(axis=1).all()


# --- bad records -------------------------------------------------------------------------------------


@pytest.fixture
def messy_dir(tmp_path):
    """JSONL with 4 good records and one of each kind of bad record."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        write_image(images / f"ok{i}.png", seed=i)
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    lines = [json.dumps(make_record(i, image=f"ok{i}.png")) for i in range(3)]
    lines.append(json.dumps(make_record(3)))
    lines.append(json.dumps(make_record(10, image="missing.png")))
    lines.append(json.dumps(make_record(11, image="corrupt.png")))
    lines.append('{"id": "r12", "conversations": [ this is not json')
    lines.append(json.dumps({"id": "r13", "conversations": [{"from": "human", "value": "q"}]}))
    lines.append(json.dumps({"id": "r14", "conversations": [{"from": "human", "value": "q"},
                                                             {"from": "gpt", "value": ""}]}))
    lines.append(json.dumps(make_record(15, answer="very long " * 200)))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


EXPECTED_BAD = {"missing_image": 1, "corrupt_image": 1, "bad_json": 1, "no_assistant_turn": 1, "empty_text": 1}


def test_bad_records_are_skipped_and_counted(messy_dir, llama_tokenizer, tmp_path):
    src = [(str(messy_dir / "data.jsonl"), str(messy_dir / "images"))]
    # max_length 70 fits ordinary records (~50 + image) and not the image-less 400-token reply...
    loader = build(src, llama_tokenizer, global_batch_size=2, num_epochs=1, max_length=70, shuffle=False)
    batches = list(loader)
    assert len(batches) == 2  # 4 good records survive
    # ...which is cut after its prompt (it keeps some reply tokens) and therefore kept: 5 good, 1 dropped
    assert loader.bad_records == EXPECTED_BAD
    for reason in EXPECTED_BAD:
        assert loader.bad_examples[reason], reason
    assert "r10" in loader.bad_examples["missing_image"][0] and "data.jsonl" in loader.bad_examples["missing_image"][0]
    path = pipeline.write_bad_record_report(loader, str(tmp_path / "work"))
    report = json.loads(open(path).read())
    assert report["counts"] == EXPECTED_BAD and report["total"] == 5


def test_too_long_records_are_counted(messy_dir, llama_tokenizer):
    src = [(str(messy_dir / "data.jsonl"), str(messy_dir / "images"))]
    # BOS + the system prompt alone are 34 tokens: at max_length 30 every record with valid
    # conversations is too long (tokenisation is checked before the image is opened)
    loader = build(src, llama_tokenizer, global_batch_size=1, num_epochs=1, max_length=30, shuffle=False)
    assert list(loader) == []
    assert loader.bad_records == {"too_long": 7, "bad_json": 1, "no_assistant_turn": 1, "empty_text": 1}


@pytest.mark.parametrize("record, reason, field", [
    (make_record(10, image="missing.png"), "missing_image", "image"),
    ({"id": "r13", "conversations": [{"from": "human", "value": "q"}]}, "no_assistant_turn", "conversations"),
])
def test_strict_mode_raises_with_record_id(tmp_path, llama_tokenizer, record, reason, field):
    (tmp_path / "images").mkdir()
    good = make_record(0)
    (tmp_path / "d.json").write_text(json.dumps([good, record]))
    loader = build([(str(tmp_path / "d.json"), str(tmp_path / "images"))], llama_tokenizer, strict=True,
                   global_batch_size=2, shuffle=False)
    with pytest.raises(errors.BadRecordError) as e:
        next(iter(loader))
    assert e.value.reason == reason and e.value.record_id == record["id"] and e.value.field == field
    assert e.value.path == str(tmp_path / "d.json")
    assert record["id"] in str(e.value)


def test_bad_record_counts_survive_resume(messy_dir, llama_tokenizer):
    src = [(str(messy_dir / "data.jsonl"), str(messy_dir / "images"))]
    it = iter(build(src, llama_tokenizer, global_batch_size=2, max_length=70, shuffle=False))
    take(it, 3)  # past the bad records of the first epoch
    state = json.loads(json.dumps(it.get_state()))
    loader2 = build(src, llama_tokenizer, global_batch_size=2, max_length=70, shuffle=False)
    it2 = iter(loader2)
    it2.set_state(state)
    assert loader2.bad_records == {k: v for k, v in state["bad_records"].items()}
    assert sum(loader2.bad_records.values()) >= 5


# --- mixtures ------------------------------------------------------------------------------------------


def test_mixture_index_weights():
    rows = sources.mixture_index([10, 4, 6], [1.0, 2.5, 0.0], seed=3)
    counts = np.bincount(rows[:, 0], minlength=3)
    assert counts.tolist() == [10, 10, 0]  # 2.5 * 4 = 10 rows: two full copies + 2 seeded extras
    assert sorted(rows[rows[:, 0] == 0, 1].tolist()) == list(range(10))
    per = np.bincount(rows[rows[:, 0] == 1, 1], minlength=4)
    assert sorted(per.tolist()) == [2, 2, 3, 3]
    np.testing.assert_array_equal(rows, sources.mixture_index([10, 4, 6], [1.0, 2.5, 0.0], seed=3))
    half = sources.mixture_index([10], [0.5], seed=1)
    assert len(half) == 5 and len(set(half[:, 1].tolist())) == 5


def test_loader_mixes_sources_by_weight(llava_dir, llama_tokenizer, tmp_path):
    other = [make_record(100 + i, question="Other source question") for i in range(4)]
    (tmp_path / "other.json").write_text(json.dumps(other))
    src = [
        {"path": str(llava_dir / "data.json"), "image_folder": str(llava_dir / "images"), "weight": 0.5},
        (str(tmp_path / "other.json"), None, 2.0),
    ]
    loader = build(src, llama_tokenizer, global_batch_size=13, num_epochs=1, length_buckets=[])
    assert loader.num_records == 5 + 8
    (batch,) = list(loader)
    texts = [llama_tokenizer.decode(r[r != IMG]) for r in batch["input_ids"]]
    assert sum("Other source" in t for t in texts) == 8


# --- global arrays -------------------------------------------------------------------------------------


def test_to_global_places_the_batch_on_the_mesh(llava_dir, llama_tokenizer):
    import jax

    from fact_rlhf_jax import sharding

    mesh = sharding.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    src = [(str(llava_dir / "data.json"), str(llava_dir / "images"))]
    batch = next(iter(build(src, llama_tokenizer, global_batch_size=8)))
    g = pipeline.to_global(batch, mesh)
    assert g["input_ids"].shape == batch["input_ids"].shape and isinstance(g["input_ids"], jax.Array)
    assert len(g["input_ids"].sharding.device_set) == 8
    assert g["pixel_values"].addressable_shards[0].data.shape == (1, 3, SIZE, SIZE)
    for k in batch:
        np.testing.assert_array_equal(np.asarray(g[k]), batch[k])
