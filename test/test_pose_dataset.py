"""The pose dataset: the visual randomization table (Dactyl's list, one row per quantity) and the
renderer's shards — deterministic per shard, resumable, in parallel Ray workers."""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
import pytest

from dex_perception import dataset as ds
from dex_perception.visual_randomization import (
    VISUAL_RANDOMIZATIONS,
    VisualRandomizer,
    markdown,
    set_ranges,
)
from dex_sim.randomization import model_array

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sampler() -> ds.PoseSampler:
    s = ds.PoseSampler("leap", ds.RenderConfig(visual="full"))
    yield s
    s.close()


def test_the_table_is_documented_and_each_set_is_a_subset_of_it() -> None:
    doc = (ROOT / "docs" / "visual_randomization.md").read_text()
    assert doc == markdown(), ("regenerate: python -m dex_perception.visual_randomization "
                               "--markdown > docs/visual_randomization.md")
    names = {p.name for p in VISUAL_RANDOMIZATIONS}
    assert len(names) == len(VISUAL_RANDOMIZATIONS)
    assert set(set_ranges("full")) == names and set_ranges("none") == {}
    assert set(set_ranges("basic")) < names
    # Dactyl's list (App. C.2): colours, lights, camera pose and field of view, image effects
    for group in ("colour", "light", "camera", "image"):
        assert any(p.group == group for p in VISUAL_RANDOMIZATIONS)
    with pytest.raises(ValueError, match="unknown visual randomization set"):
        set_ranges("heavy")


def test_every_row_changes_what_it_says_and_apply_restores_nominal(
        sampler: ds.PoseSampler) -> None:
    m = sampler.sim.model
    r = VisualRandomizer(m, sampler.spec.cube.name, sampler.cameras, "full")
    nominal = {f: v.copy() for f, v in r.nominal.items()}
    rng = np.random.default_rng(3)
    for p in VISUAL_RANDOMIZATIONS:
        r.rows, r.image = [p], {}
        r.apply(rng)
        changed = [f for f in nominal if not np.array_equal(r.nominal[f], model_array(m, f))]
        if p.group == "image":
            assert not changed and len(r.image) == 1, p.name
        else:
            assert changed == list(p.fields), (p.name, changed)
    r.rows = []
    r.apply(rng)  # no row: every field back to nominal
    for f, v in nominal.items():
        np.testing.assert_array_equal(model_array(m, f), v, err_msg=f)


def test_the_cube_faces_stay_distinguishable_under_any_draw(sampler: ds.PoseSampler) -> None:
    r = sampler.vis
    faces = r.cube_face_geoms
    assert len(faces) == 6 and len(r.cube_body_geoms) == 1
    hue = [colorsys.rgb_to_hsv(*r.nominal["geom_rgba"][g, :3])[0] for g in faces]
    rng = np.random.default_rng(0)
    for _ in range(200):
        r.apply(rng)
        for i, g in enumerate(faces):
            h = colorsys.rgb_to_hsv(*sampler.sim.model.geom_rgba[g, :3])[0]
            dist = [min(abs(h - n), 1 - abs(h - n)) for n in hue]
            assert int(np.argmin(dist)) == i  # still nearer its own nominal hue than any other
        body = sampler.sim.model.geom_rgba[r.cube_body_geoms[0], :3]
        assert body.max() <= 0.3


def test_shards_are_deterministic_resumable_and_come_with_a_grid(tmp_path: Path) -> None:
    meta = ds.generate(tmp_path / "a", samples=7, seed=5, hand="leap", shard_size=3,
                       progress=False)
    assert meta["complete"] and meta["shards"] == 3 and sum(meta["source_counts"]) == 7
    images, pos, quat, _ = ds.load(tmp_path / "a")
    assert images.shape[:2] == (7, 3) and images.dtype == np.uint8 and images.std() > 10
    np.testing.assert_allclose(np.linalg.norm(quat, axis=1), 1.0, atol=1e-5)
    with np.load(tmp_path / "a" / "shard_00002.npz") as z:
        assert z["sample"].tolist() == [6] and z["source"][0] < len(ds.SOURCES)
    grid = (tmp_path / "a" / "shard_00000.png").read_bytes()
    assert grid[:8] == b"\x89PNG\r\n\x1a\n"
    # An interrupted run: a shard missing and the meta not complete. Running the same command
    # again renders only that shard, bit-identical to the first time.
    first = (tmp_path / "a" / "shard_00001.npz").read_bytes()
    (tmp_path / "a" / "shard_00001.npz").unlink()
    meta_file = tmp_path / "a" / "meta.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "complete": False}))
    with pytest.raises(ValueError, match="incomplete"):
        ds.load(tmp_path / "a")
    kept = (tmp_path / "a" / "shard_00000.npz").stat().st_mtime_ns
    again = ds.generate(tmp_path / "a", samples=7, seed=5, hand="leap", shard_size=3,
                        progress=False)
    assert again["complete"]
    assert (tmp_path / "a" / "shard_00001.npz").read_bytes() == first
    assert (tmp_path / "a" / "shard_00000.npz").stat().st_mtime_ns == kept
    assert not list((tmp_path / "a").glob(".*tmp*"))
    with pytest.raises(ValueError, match="another dataset"):
        ds.generate(tmp_path / "a", samples=7, seed=6, hand="leap", shard_size=3,
                    progress=False)


def test_two_ray_workers_render_the_same_shards_as_one_process(tmp_path: Path) -> None:
    kw = dict(samples=4, seed=9, hand="leap", shard_size=2, progress=False,
              cfg=ds.RenderConfig(visual="full"))
    ds.generate(tmp_path / "one", **kw)
    meta = ds.generate(tmp_path / "two", workers=2, **kw)
    assert meta["complete"]
    for k in range(2):
        a = np.load(tmp_path / "one" / f"shard_{k:05d}.npz")
        b = np.load(tmp_path / "two" / f"shard_{k:05d}.npz")
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_visibility_measures_what_hides_the_cube_and_changes_no_image(tmp_path: Path) -> None:
    """``--visibility`` stores each camera's visible share of the cube: ~1 for a cube on the
    palm in plain view, 0 for one pushed under the floor (the floor hides it; alone it is in
    view). Measuring it draws nothing: the images equal those of the same dataset without it."""
    import mujoco

    s = ds.PoseSampler("leap", ds.RenderConfig(visual="none"))
    try:
        s.sim.reset(0)
        mujoco.mj_forward(s.sim.model, s.sim.data)  # places the cameras (as a render does)
        assert np.all(s.visibility() > 0.9), s.visibility()
        floor_z = s.sim.model.geom("floor").pos[2]
        s.sim.data.qpos[s.sim.idx.cube_qpos + 2] = floor_z - 0.1
        mujoco.mj_forward(s.sim.model, s.sim.data)
        assert np.all(s.visibility() == 0.0), s.visibility()
    finally:
        s.close()
    plain = ds.generate(tmp_path / "plain", samples=4, seed=3, hand="leap", shard_size=2,
                        progress=False)
    vis = ds.generate(tmp_path / "vis", samples=4, seed=3, hand="leap", shard_size=2,
                      progress=False, visibility=True)
    assert vis["visibility"] is True and "visibility" not in plain
    np.testing.assert_array_equal(ds.load(tmp_path / "vis")[0], ds.load(tmp_path / "plain")[0])
    visible = ds.load_visibility(tmp_path / "vis")
    assert visible.shape == (4, 3) and np.all((visible >= 0) & (visible <= 1))
    assert ds.load_visibility(tmp_path / "plain") is None
    with pytest.raises(ValueError, match="visibility"):  # resuming it without the flag
        ds.generate(tmp_path / "vis", samples=4, seed=3, hand="leap", shard_size=2,
                    progress=False)


def test_teacher_source_renders_replayed_states_of_recorded_episodes(tmp_path: Path) -> None:
    """``--teacher-states``: samples are states a controller visited, replayed from its recorded
    episodes (seed + executed bins, checked against the stored observations); the labels are
    the replayed cube poses; a replay that diverges keeps only its verified prefix; a wrong
    directory is a clear error; without it the dataset's identity is what it was."""
    from dex_perception.recorded_states import RecordedStates, episode_files
    from dex_sim.env import DexCubeEnv, TaskConfig

    env = DexCubeEnv("leap", task=TaskConfig(randomize=False))
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=42)
    rec_obs, bins, poses = [], [], []
    for _ in range(6):
        b = rng.integers(3, 8, env.n_actuators)
        rec_obs.append(obs)
        bins.append(b)
        poses.append(np.concatenate(env.sim.cube_pose()))
        obs, *_ = env.step(b)
    shards = tmp_path / "run" / "shards"
    shards.mkdir(parents=True)
    np.savez(shards / "it000_ep000.npz", seed=np.array(42), bins=np.array(bins, np.int8),
             obs=np.array(rec_obs, np.float32), by_teacher=np.ones(6, bool))
    bad_obs = np.array(rec_obs, np.float32)
    bad_obs[3] += 1.0  # diverges at step 3: steps 0-2 are kept
    np.savez(shards / "it000_ep001.npz", seed=np.array(42), bins=np.array(bins, np.int8),
             obs=bad_obs, by_teacher=np.ones(6, bool))
    np.savez(shards / "it001_ep000.npz", seed=np.array(42), bins=np.array(bins, np.int8),
             by_teacher=np.array([True, False, True, True, True, True]))  # student acted: skipped
    assert len(episode_files([str(tmp_path / "run")])) == 3
    states = RecordedStates("leap", [str(tmp_path / "run")], 0.04, 0.06)
    assert len(states._replayed(0)) == 6 and len(states._replayed(1)) == 3
    assert len(states._replayed(2)) == 0
    assert states.stats == {"episodes": 2, "skipped": 1, "diverged": 1, "states": 9}
    with pytest.raises(FileNotFoundError, match="not a directory"):
        episode_files([str(tmp_path / "nowhere")])

    cfg = ds.RenderConfig(visual="none", teacher_states=(str(tmp_path / "run"),), p_teacher=1.0)
    meta = ds.generate(tmp_path / "d", samples=4, seed=3, hand="leap", shard_size=4,
                       progress=False, cfg=cfg)
    assert meta["source_counts"] == [0, 0, 0, 4]
    assert meta["render_config"]["teacher_states"] == [str(tmp_path / "run")]
    _, pos, quat, _ = ds.load(tmp_path / "d")
    for p, q in zip(pos, quat, strict=True):
        d = [np.abs(np.concatenate([p, q]) - v).max() for v in poses]
        assert min(d) < 1e-5, d  # a replayed state's pose, not a new one
    plain = ds.RenderConfig()
    from dex_description.registry import get_hand

    assert "p_teacher" not in ds._dataset_identity(get_hand("leap"), 1, 0, 1, plain)["render_config"]
    with pytest.raises(ValueError, match="needs teacher_states"):
        ds.RenderConfig(p_teacher=0.5).validate()
    with pytest.raises(SystemExit):
        ds.main(["--out", str(tmp_path / "x"), "--teacher-states", str(tmp_path / "nowhere")])
