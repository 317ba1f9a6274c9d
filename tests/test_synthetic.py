import dataclasses

import numpy as np
import pytest

from data.pipeline import transforms as T
from data.records import codec
from data.synthetic import dataset
from data.synthetic import scene as scenes


@pytest.fixture(scope="module")
def videos():
    return [dataset.generate_video(3, "train", i, resolution=48, num_frames=10, supersample=1) for i in range(6)]


def test_deterministic_and_schema_valid(videos):
    again = dataset.generate_video(3, "train", 0, resolution=48, num_frames=10, supersample=1)
    for key in codec.FIELDS:
        np.testing.assert_array_equal(videos[0][key], again[key])
    other = dataset.generate_video(4, "train", 0, resolution=48, num_frames=10, supersample=1)
    assert not np.array_equal(videos[0]["video"], other["video"])
    for v in videos:
        codec.validate_example(v)


def test_objects_are_visible_sorted_and_boxed(videos):
    for v in videos:
        k = int(v["num_instances"])
        seg = v["segmentations"]
        assert 1 <= k <= 10 and seg.max() == k
        counts = np.bincount(seg.ravel(), minlength=k + 1)[1:]
        assert (counts > 0).all() and (np.diff(counts) <= 0).all(), "instances sorted by visibility"
        h = seg.shape[1]
        for n in range(k):
            for t in range(seg.shape[0]):
                ys, xs = np.nonzero(seg[t] == n + 1)
                box = v["boxes"][t, n]
                if len(ys) == 0:
                    assert (box == 0).all()  # NOTRACK where not visible
                else:
                    np.testing.assert_allclose(box, [ys.min() / h, xs.min() / h, (ys.max() + 1) / h,
                                                     (xs.max() + 1) / h])
        assert (v["boxes"][:, k:] == 0).all()


def test_scenes_have_motion_and_variety(videos):
    ks = [int(v["num_instances"]) for v in videos]
    assert len(set(ks)) > 1
    moving = [np.abs(T.VideoFromRecord().map(v)["flow"]).max() > 0.5 for v in videos]
    assert sum(moving) >= 4
    colours = {tuple(np.round(v["video"][0][v["segmentations"][0] == 1].mean(0) / 40)) for v in videos}
    assert len(colours) > 2


def test_backward_flow_agrees_with_the_motion(videos):
    """Following a pixel's backward flow lands on the same object in the previous frame (unless occluded)."""
    agree = total = 0
    for v in videos:
        f = T.VideoFromRecord().map(v)
        seg, flow = f["segmentations"], f["flow"]
        t_, h, w = seg.shape
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        for t in range(1, t_):
            obj = seg[t] > 0
            r = np.clip(np.round(rows + flow[t, ..., 0]).astype(int), 0, h - 1)
            c = np.clip(np.round(cols + flow[t, ..., 1]).astype(int), 0, w - 1)
            agree += (seg[t - 1][r, c] == seg[t])[obj].sum()
            total += obj.sum()
    assert total > 0 and agree / total > 0.9, agree / total
    assert (videos[0]["backward_flow"][0] == videos[0]["backward_flow"][0, 0, 0]).all(), "frame 0 has no motion"


def test_occlusion_shows_the_nearer_object():
    """Rendered with all objects, a pixel shows the nearest surface: where another object hides part of object
    k (its pixels when rendered alone), that object's surface there is closer to the camera. And it happens."""
    occluded = 0
    for seed in range(6):
        scene = scenes.sample_scene(np.random.default_rng(seed), 8, 2)
        dirs = scenes.camera_rays(scene, 40, 40)
        _, ids, dist, _ = scenes.render_frame(scene, 0, dirs)
        for k in range(len(scene.shape)):
            per_object = {f: getattr(scene, f)[[k]] for f in ("shape", "size", "colour", "metal")}
            alone = dataclasses.replace(scene, **per_object, pos=scene.pos[:, [k]], angle=scene.angle[:, [k]])
            _, ids_k, dist_k, _ = scenes.render_frame(alone, 0, dirs)
            hidden = (ids_k == 1) & (ids > 0) & (ids != k + 1)  # object k there alone, another object in front
            assert (dist[hidden] < dist_k[hidden]).all()
            occluded += int(hidden.sum())
    assert occluded > 50


def test_style_changes_only_what_it_names():
    """The demo's style flags: the floor's gray level is drawn last, so it leaves the scene's objects, motion
    and ids as they are; bigger, faster, less braked objects cover more pixels and move further."""
    def video(**style):
        return dataset.generate_video(5, "train", 1, resolution=48, num_frames=10, supersample=1,
                                      style=scenes.Style(**style))
    base = video()
    np.testing.assert_array_equal(base["video"], video(**dataclasses.asdict(scenes.Style()))["video"])
    floors = []
    for i in range(4):
        v = dataset.generate_video(5, "train", i, resolution=48, num_frames=10, supersample=1,
                                   style=scenes.Style(floor_jitter=0.25, shadow_light=1.0))
        b = dataset.generate_video(5, "train", i, resolution=48, num_frames=10, supersample=1)
        np.testing.assert_array_equal(v["segmentations"], b["segmentations"])
        np.testing.assert_array_equal(v["boxes"], b["boxes"])
        floor = v["segmentations"] == 0
        floors.append(np.median(v["video"][floor].astype(float) / b["video"][floor], axis=0).mean())
    assert 0.75 <= min(floors) and max(floors) <= 1.25 and max(floors) - min(floors) > 0.05, floors

    big = video(size_scale=1.5)
    assert (big["segmentations"] > 0).mean() > 1.5 * (base["segmentations"] > 0).mean()
    def travel(**style):  # mean distance an object slides over 24 frames, in 8 scenes
        return np.mean([np.linalg.norm(np.diff(s.pos[:, :, :2], axis=0), axis=-1).sum(0).mean() for s in (
            scenes.sample_scene(np.random.default_rng(i), 5, 24, style=scenes.Style(**style)) for i in range(8))])
    assert travel(speed=1.3, friction=0.5) > 1.5 * travel()
    with pytest.raises(ValueError, match="floor_jitter"):
        scenes.Style(floor_jitter=1.0)


def test_the_floors_tint_and_ramp_change_the_floor_only():
    """--floor_tint colours the floor per video, --floor_gradient ramps its brightness across it; both are drawn
    after the rest of the scene, so objects, ids and motion stay as they are."""
    def video(i, **style):
        return dataset.generate_video(5, "train", i, resolution=48, num_frames=4, supersample=1,
                                      style=scenes.Style(shadow_light=1.0, **style))
    for i in range(3):
        base, tinted, ramped = video(i), video(i, floor_tint=0.4), video(i, floor_gradient=0.4)
        floor, objects = base["segmentations"] == 0, base["segmentations"] > 0
        for v in (tinted, ramped):
            np.testing.assert_array_equal(v["segmentations"], base["segmentations"])
            np.testing.assert_array_equal(v["video"][objects], base["video"][objects])
        ratio = tinted["video"][floor].astype(float) / np.maximum(base["video"][floor], 1)
        assert np.ptp(np.median(ratio, axis=0)) > 0.02  # the channels scaled apart: a coloured floor ...
        assert np.allclose(np.median(ratio, axis=0), ratio.mean(axis=0), atol=0.05)  # ... the same everywhere
        gain = (ramped["video"][floor].astype(float) / np.maximum(base["video"][floor], 1)).mean(axis=-1)
        assert np.ptp(gain) > 0.2  # brighter on one side than on the other
    for name in ("floor_tint", "floor_gradient"):
        with pytest.raises(ValueError, match=name):
            scenes.Style(**{name: 1.0})
