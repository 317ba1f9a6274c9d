import json
import logging
import os

import numpy as np
import pytest
from data_fixtures import SPEC, train_ds

from data import batch as schema_lib
from data.pipeline import datasets
from data.records import codec, shards


def take(it, n):
    return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_train_batches_have_documented_shapes(tiny_synthetic):
    it = datasets.train_iterator(train_ds(tiny_synthetic), 4)
    batch = next(it)
    SPEC.train_schema.check(batch, 4, SPEC.train_frames, SPEC.resolution, SPEC.max_instances)
    assert set(batch) == {"video", "boxes", "flow"}  # only what the train step reads (targets: flow)
    with pytest.raises(ValueError, match=r"segmentations: unexpected key.*flow: \(4, 6, 24, 24, 3\) float32, "
                                         "expected .* uint8"):
        bad = {**batch, "flow": batch["flow"].astype(np.float32), "segmentations": batch["flow"]}
        SPEC.train_schema.check(bad, 4, 6, 24, 10)
    assert batch["flow"].dtype == np.uint8  # flow_to_rgb's codes; the train step converts them on the device
    assert 0 <= batch["video"].min() and batch["video"].max() <= 1


def test_process_sharding_partitions_the_global_batch(tiny_synthetic):
    """Two processes' shares interleave to exactly the single-process global batch, augmentation included."""
    ds = train_ds(tiny_synthetic)
    single = take(datasets.train_iterator(ds, 4), 3)
    per_process = [take(datasets.train_iterator(ds, 4, process_index=i, process_count=2), 3) for i in range(2)]
    for step in range(3):
        for i in range(2):
            assert_batches_equal({k: v[i::2] for k, v in single[step].items()}, per_process[i][step])


def test_state_is_small_json_and_restores_on_another_process_count(tiny_synthetic):
    ds = train_ds(tiny_synthetic)
    it = datasets.train_iterator(ds, 4)
    take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    assert state == {"global_next_index": 12}
    expected = take(it, 2)
    for count in (1, 2):
        for i in range(count):
            resumed = datasets.train_iterator(ds, 4, process_index=i, process_count=count)
            resumed.set_state(state)
            for step, got in enumerate(take(resumed, 2)):
                assert_batches_equal({k: v[i::count] for k, v in expected[step].items()}, got)


def test_epochs_reshuffle_and_cover_every_video(tiny_synthetic):
    source = datasets.open_split(tiny_synthetic, "train", 10)
    shuffled = datasets.EpochShuffledSource(source, seed=3)
    n = len(source)
    epochs = [[shuffled[i].video_name for i in range(e * n, (e + 1) * n)] for e in range(3)]
    assert all(sorted(e) == sorted(epochs[0]) and len(set(e)) == n for e in epochs)  # each epoch: every video once
    assert epochs[0] != epochs[1] != epochs[2]  # re-drawn per epoch
    import pickle

    again = pickle.loads(pickle.dumps(shuffled))  # as in a Grain worker: same stream, cache rebuilt
    assert [again[i].video_name for i in range(2 * n, 3 * n)] == epochs[2]
    assert epochs[0] != [datasets.EpochShuffledSource(source, seed=4)[i].video_name for i in range(n)]


@pytest.mark.slow
def test_worker_processes_give_the_same_stream_and_state(tiny_synthetic, monkeypatch):
    from grain._src.python.dataset.transformations import process_prefetch

    # grain 0.2.18 waits up to 25 s per worker for an infinite stream's workers to exit on close(), then
    # kills them; the wait only costs test time here.
    monkeypatch.setattr(process_prefetch, "_PROCESS_KILL_TIMEOUT_S", 1)
    ds = train_ds(tiny_synthetic)
    plain = take(datasets.train_iterator(ds, 4), 4)
    it = datasets.train_iterator(ds, 4, worker_count=2)
    try:
        with_workers = take(it, 2)
        state = it.get_state()
    finally:
        it.close()
    for a, b in zip(plain[:2], with_workers, strict=True):
        assert_batches_equal(a, b)
    resumed = datasets.train_iterator(ds, 4)  # worker count changes 2 -> 0 across the restore
    resumed.set_state(state)
    for a, b in zip(plain[2:], take(resumed, 2), strict=True):
        assert_batches_equal(a, b)


def test_eval_pass_is_padded_masked_and_split_across_processes(tiny_synthetic):
    source = datasets.open_split(tiny_synthetic, "validation", SPEC.max_instances)
    assert len(source) == 6
    batches = list(datasets.eval_batches(source, SPEC, 4))
    assert len(batches) == 2 and [b["mask"].tolist() for b in batches] == [[True] * 4, [True, True, False, False]]
    assert batches[0]["video"].shape == (4, 12, 24, 24, 3)
    names = []
    assert set(batches[0]) == set(schema_lib.EVAL.keys)
    per_process = [list(datasets.eval_dataset(source, SPEC, 4, i, 2, raw=True)) for i in range(2)]
    assert len(per_process[0]) == len(per_process[1]) == 2  # same number of batches on every process
    for batches in per_process:
        for b in batches:
            assert b["video"].shape[0] == 2
            names += [str(n) for n, m in zip(b["video_name"], b["mask"], strict=True) if m]
    assert sorted(names) == sorted(f"synth_validation_{i:06d}" for i in range(6))


def test_bad_data_dirs_fail_clearly(tmp_path, tiny_synthetic):
    with pytest.raises(codec.DataError, match="data directory does not exist.*python -m data.synthetic"):
        datasets.open_split(str(tmp_path / "nope"), "train", 10)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(codec.DataError, match="no dataset_info.json"):
        datasets.open_split(str(tmp_path / "empty"), "train", 10)
    with pytest.raises(codec.DataError, match=r"split 'test' is missing \(available: \['train', 'validation'\]\)"):
        datasets.open_split(tiny_synthetic, "test", 10)


def test_corrupt_shard_names_the_file(tmp_path, tiny_synthetic):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_synthetic, bad)
    shard = os.path.join(bad, shards.read_dataset_info(str(bad))["splits"]["validation"]["files"][0])
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    with pytest.raises(codec.DataError, match=f"{shard}.*(cannot open|unreadable)"):
        source = datasets.open_split(str(bad), "validation", 10)
        [source.decoded(i) for i in range(len(source))]


def test_too_many_instances_warns_once(tiny_synthetic, caplog):
    with caplog.at_level(logging.WARNING):
        datasets.open_split(tiny_synthetic, "train", 2)
    assert sum("max_instances=2" in r.message for r in caplog.records) == 1


def test_bad_batch_for_the_process_count():
    with pytest.raises(ValueError, match="global batch 6 is not divisible by 4 processes; use a multiple of 4"):
        datasets.train_iterator(None, 6, process_count=4)
