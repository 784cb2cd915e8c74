"""The dataset job on one machine: every data-loss case of issue 14 as a regression test, on tiny checkpoints.

The inputs are real files (PNG, JPEG with EXIF, 16-bit PNG/TIFF, a video, broken and hostile files) and
the job runs for real; only Ctrl-C inside a write is provoked by a writer that raises it half-way.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from tiny import save_unet_file, save_vae_file, synthetic_rgb, tiny_unet, tiny_vae

import lotus_core
from lotus_core.batch import job as job_module
from lotus_core.batch.job import JobInterrupted, JobOptions, run_job
from lotus_core.batch.reading import _oriented, read_image, read_video
from lotus_core.batch.seeds import image_seed
from lotus_core.batch.sources import find_sources
from lotus_core.cli import main

REPO = Path(__file__).resolve().parents[1]
OPTIONS = JobOptions(processing_resolution=64, formats=("png16", "npy", "control"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch_model")
    unet = save_unet_file(tiny_unet(True, seed=11), folder / "lotus-depth-g-v2-1-disparity.safetensors")
    vae = save_vae_file(tiny_vae(seed=12), folder / "vae.safetensors")
    return unet, vae


@pytest.fixture(scope="module")
def model(checkpoint):
    return lotus_core.load_model(*checkpoint)


def write_png(path: Path, height: int = 40, width: int = 56, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_rgb(height, width, seed).numpy()).save(path)
    return path


def cli(checkpoint, *args) -> list[str]:
    unet, vae = checkpoint
    return [str(unet), "--vae", str(vae), "--resolution", "64", *map(str, args)]


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def assert_complete_files_only(folder: Path) -> None:
    """Every result file under its final name is whole, and no partly written file is left."""
    for path in folder.rglob("*"):
        assert ".partial" not in path.name, path
        if path.suffix == ".npy":
            np.load(path)
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.load()


# --- names, collisions, the output folder -------------------------------------------------------------


def test_same_names_in_two_folders_get_two_results(checkpoint, tmp_path):
    write_png(tmp_path / "in" / "a" / "x.png", seed=1)
    write_png(tmp_path / "in" / "b" / "x.png", seed=2)
    assert main(cli(checkpoint, tmp_path / "in", "-o", tmp_path / "out", "--save", "npy")) == 0
    first, second = (np.load(tmp_path / "out" / sub / "x_disparity.npy") for sub in ("a", "b"))
    assert not np.array_equal(first, second)  # two pictures, two results: nothing overwritten


@pytest.mark.parametrize("layout", ["same folder, other extension", "two folders given"])
def test_inputs_that_would_share_outputs_are_refused_before_any_work(checkpoint, tmp_path, capsys, layout):
    if layout == "same folder, other extension":
        inputs = [tmp_path / "in"]
        write_png(tmp_path / "in" / "x.png")
        Image.open(write_png(tmp_path / "in" / "tmp.png")).convert("RGB").save(tmp_path / "in" / "x.jpg")
        (tmp_path / "in" / "tmp.png").unlink()
    else:
        inputs = [tmp_path / "a", tmp_path / "b"]
        write_png(tmp_path / "a" / "x.png")
        write_png(tmp_path / "b" / "x.png")
    assert main(cli(checkpoint, *inputs, "-o", tmp_path / "out")) == 2
    error = capsys.readouterr().err
    assert "would write the same output files" in error and "x.png" in error and "Nothing was written" in error
    assert not (tmp_path / "out").exists()


def test_an_output_folder_inside_the_input_folder_is_not_read_back(checkpoint, tmp_path, capsys):
    write_png(tmp_path / "in" / "x.png")
    for _ in range(2):
        assert main(cli(checkpoint, tmp_path / "in", "-o", tmp_path / "in" / "depth", "--save", "png16")) == 0
    assert "0 done, 1 skipped" in capsys.readouterr().out
    assert files_under(tmp_path / "in") == ["depth/lotus_job.json", "depth/x_disparity.png", "x.png"]


def test_globs_and_list_files_name_inputs_by_their_place(tmp_path):
    write_png(tmp_path / "shots" / "day1" / "a.png")
    write_png(tmp_path / "shots" / "day2" / "b.png")
    found = find_sources([str(tmp_path / "shots" / "**" / "*.png")])
    assert [source.name for source in found] == ["day1/a.png", "day2/b.png"]
    listing = tmp_path / "shots" / "todo.txt"
    listing.write_text("# the second day only\nday2/b.png\n\n")
    assert [(source.name, source.path) for source in find_sources([listing])] == \
        [("day2/b.png", tmp_path / "shots" / "day2" / "b.png")]
    listing.write_text("day2/missing.png\n")
    with pytest.raises(lotus_core.LotusError, match=r"todo.txt, line 1: 'day2/missing.png' is not a file"):
        find_sources([listing])


# --- interruptions: atomic writes, resume -------------------------------------------------------------


def test_an_interrupted_write_leaves_no_file_under_its_name_and_the_next_run_resumes(model, tmp_path, monkeypatch):
    for name in ("a", "b", "c"):
        write_png(tmp_path / "in" / f"{name}.png", seed=ord(name))
    real_save, saves = np.save, []

    def ctrl_c_half_way_through_b(file, array, *args, **kwargs):
        saves.append(Path(file).name)
        if "b_disparity" in Path(file).name:
            Path(file).write_bytes(b"\x93NUMPY half a header")  # a truncated file, then Ctrl-C
            raise KeyboardInterrupt
        return real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(lotus_core.outputs.files.np, "save", ctrl_c_half_way_through_b)
    with pytest.raises(JobInterrupted) as interrupted:
        run_job(model, [tmp_path / "in"], tmp_path / "out", OPTIONS)
    assert interrupted.value.summary.done == 1 and interrupted.value.summary.interrupted
    assert not (tmp_path / "out" / "b_disparity.npy").exists()
    assert_complete_files_only(tmp_path / "out")

    monkeypatch.setattr(lotus_core.outputs.files.np, "save", real_save)
    summary = run_job(model, [tmp_path / "in"], tmp_path / "out", OPTIONS)
    assert (summary.done, summary.skipped, summary.failed) == (2, 1, 0)
    assert_complete_files_only(tmp_path / "out")
    assert all((tmp_path / "out" / f"{name}_disparity.npy").is_file() for name in "abc")


def test_ctrl_c_in_a_real_run_keeps_only_whole_files(checkpoint, tmp_path):
    for index in range(40):
        write_png(tmp_path / "in" / f"{index:02d}.png", 96, 128, seed=index)
    command = [sys.executable, "-m", "lotus_core", *cli(checkpoint, tmp_path / "in", "-o", tmp_path / "out")]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "out" / "00_disparity.npy").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "no result within 120 s"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted: run the same command again to resume" in err
    assert_complete_files_only(tmp_path / "out")
    assert main(cli(checkpoint, tmp_path / "in", "-o", tmp_path / "out")) == 0
    assert len(list((tmp_path / "out").glob("*_disparity.npy"))) == 40


def test_resume_recomputes_nothing_already_done(model, tmp_path):
    for name in ("a", "b", "c"):
        write_png(tmp_path / "in" / f"{name}.png", seed=ord(name))
    passes = []
    hook = model.unet.register_forward_pre_hook(lambda module, args: passes.append(1))
    try:
        first = run_job(model, [tmp_path / "in"], tmp_path / "out", OPTIONS)
        assert (first.done, len(passes)) == (3, 3)
        second = run_job(model, [tmp_path / "in"], tmp_path / "out", OPTIONS)
        assert (second.done, second.skipped, len(passes)) == (0, 3, 3)
        (tmp_path / "out" / "b_control.png").unlink()  # one file of one image's set missing: that image again
        third = run_job(model, [tmp_path / "in"], tmp_path / "out", OPTIONS)
        assert (third.done, third.skipped, len(passes)) == (1, 2, 4)
        again = run_job(model, [tmp_path / "in"], tmp_path / "out", JobOptions(**{**vars(OPTIONS), "overwrite": True}))
        assert (again.done, len(passes)) == (3, 7)
    finally:
        hook.remove()


def test_results_made_with_other_settings_are_not_mixed_in(checkpoint, tmp_path, capsys):
    write_png(tmp_path / "in" / "x.png")
    assert main(cli(checkpoint, tmp_path / "in", "-o", tmp_path / "out", "--seed", "1")) == 0
    before = np.load(tmp_path / "out" / "x_disparity.npy")
    assert main(cli(checkpoint, tmp_path / "in", "-o", tmp_path / "out", "--seed", "2")) == 2
    assert "holds results made with other settings (seed 1 -> 2)" in capsys.readouterr().err
    assert np.array_equal(np.load(tmp_path / "out" / "x_disparity.npy"), before)
    assert main(cli(checkpoint, tmp_path / "in", "-o", tmp_path / "out", "--seed", "2", "--overwrite")) == 0
    assert not np.array_equal(np.load(tmp_path / "out" / "x_disparity.npy"), before)


# --- failures stay per file ---------------------------------------------------------------------------


def decompression_bomb(path: Path, edge: int = 60000) -> Path:
    """A valid 1-pixel PNG whose header claims edge x edge pixels (3.6 G): Pillow's bomb guard must stop it."""
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, chunk length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", edge, edge)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[12:ihdr + 13])))
    path.write_bytes(bytes(data))
    return path


def test_bad_files_are_listed_and_the_run_goes_on(checkpoint, tmp_path, capsys):
    write_png(tmp_path / "in" / "a.png", seed=1)
    Image.fromarray(synthetic_rgb(64, 64, 3).numpy()).save(tmp_path / "in" / "broken.jpg", quality=90)
    whole = (tmp_path / "in" / "broken.jpg").read_bytes()
    (tmp_path / "in" / "broken.jpg").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "in" / "notes.png").write_text("not a picture")
    decompression_bomb(tmp_path / "in" / "bomb.png")
    write_png(tmp_path / "in" / "z.png", seed=2)

    assert main(cli(checkpoint, tmp_path / "in", "-o", tmp_path / "out", "--save", "npy")) == 1
    summary = capsys.readouterr().out
    assert "2 done, 0 skipped (already complete), 3 failed" in summary and "failures.jsonl" in summary
    failures = {Path(r["input"]).name: r for r in map(json.loads, (tmp_path / "out" / "failures.jsonl").open())}
    assert sorted(failures) == ["bomb.png", "broken.jpg", "notes.png"]
    assert all(record["stage"] == "read" and record["input"] in record["error"] for record in failures.values())
    assert "truncated" in failures["broken.jpg"]["error"]
    assert "cannot identify image file" in failures["notes.png"]["error"]
    assert "too many pixels to decode safely" in failures["bomb.png"]["error"]
    assert files_under(tmp_path / "out") == ["a_disparity.npy", "a_disparity.npy.json", "failures.jsonl",
                                             "lotus_job.json", "z_disparity.npy", "z_disparity.npy.json"]


def test_a_resolution_out_of_range_is_a_usage_error_not_a_traceback(checkpoint, tmp_path, capsys):
    write_png(tmp_path / "x.png")
    with pytest.raises(SystemExit) as stopped:
        main([*cli(checkpoint, tmp_path / "x.png"), "--resolution", "100000"])
    assert stopped.value.code == 2
    assert "--resolution: '100000' is not 0 (native size) or a long edge of 8..8192 px" in capsys.readouterr().err


# --- reading as the user sees it ----------------------------------------------------------------------


def test_exif_orientation_turns_phone_photos_as_they_are_seen(model, tmp_path):
    stored = Image.fromarray(synthetic_rgb(40, 56, 4).numpy())  # landscape pixels, taken holding the phone upright
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    seen = ImageOps.exif_transpose(Image.open(tmp_path / "photo.jpg"))
    image = read_image(tmp_path / "photo.jpg")
    assert image.shape == (1, 3, 56, 40)
    assert torch.equal(image, torch.from_numpy(np.asarray(seen, dtype=np.float32) / 255).permute(2, 0, 1)[None])
    run_job(model, [tmp_path / "photo.jpg"], tmp_path / "out", OPTIONS)
    assert np.load(tmp_path / "out" / "photo_disparity.npy").shape == (56, 40)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_16_bit_pixels_are_turned_by_the_same_rules_as_pillow(orientation):
    picture = Image.fromarray(synthetic_rgb(5, 7, orientation).numpy())
    exif = picture.getexif()
    exif[0x0112] = orientation
    picture.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(picture)).astype(np.uint16) * 257
    turned = _oriented(np.asarray(picture).astype(np.uint16) * 257, exif)
    assert turned.dtype == np.uint16 and np.array_equal(turned, expected)


def write_rgb48(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit RGB PNG or TIFF, written by FFmpeg (Pillow cannot write 16-bit RGB)."""
    import av

    codec = {".png": "png", ".tif": "tiff"}[path.suffix]
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream(codec)
        stream.width, stream.height = pixels.shape[1], pixels.shape[0]
        stream.pix_fmt = "rgb48be" if codec == "png" else "rgb48le"
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb48le").reformat(format=stream.pix_fmt)
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_rgb_keeps_its_16_bits(tmp_path, suffix):
    ramp = np.linspace(0, 65535, 48 * 64 * 3).round().astype(np.uint16).reshape(48, 64, 3)
    image = read_image(write_rgb48(tmp_path / f"ramp{suffix}", ramp))
    expected = torch.from_numpy(ramp.astype(np.float32) / 65535).permute(2, 0, 1)[None]
    assert torch.equal(image, expected)
    assert len(torch.unique(image)) > 4000  # 8 bits would leave at most 256 levels


def test_16_bit_grey_png_keeps_its_16_bits(tmp_path):
    ramp = np.linspace(0, 65535, 48 * 64).round().astype(np.uint16).reshape(48, 64)
    Image.fromarray(ramp).save(tmp_path / "grey.png")
    image = read_image(tmp_path / "grey.png")
    assert torch.equal(image[0, 1], torch.from_numpy(ramp.astype(np.float32) / 65535))
    assert torch.equal(image[0, 0], image[0, 2])


# --- determinism, batches, video ----------------------------------------------------------------------


def test_results_depend_on_the_image_not_on_order_or_company(model, tmp_path):
    for index, name in enumerate(("a/one.png", "b/two.png", "c/three.png")):
        write_png(tmp_path / "in" / name, seed=index)
    run_job(model, [tmp_path / "in"], tmp_path / "all", OPTIONS)
    listing = tmp_path / "in" / "reversed.txt"
    listing.write_text("c/three.png\nb/two.png\n")
    run_job(model, [listing], tmp_path / "some", OPTIONS)
    for name in ("b/two", "c/three"):
        assert np.array_equal(np.load(tmp_path / "all" / f"{name}_disparity.npy"),
                              np.load(tmp_path / "some" / f"{name}_disparity.npy"))
    image = read_image(tmp_path / "in" / "b" / "two.png")
    alone = lotus_core.predict(model, image, processing_resolution=64, seed=image_seed(0, "b/two.png"))
    assert np.array_equal(np.load(tmp_path / "all" / "b/two_disparity.npy"), alone.values[0, 0].numpy())

    batched = JobOptions(**{**vars(OPTIONS), "batch_size": 3})
    run_job(model, [tmp_path / "in"], tmp_path / "batched", batched)
    for name in ("a/one", "b/two", "c/three"):  # batched kernels: the same up to float rounding
        np.testing.assert_allclose(np.load(tmp_path / "batched" / f"{name}_disparity.npy"),
                                   np.load(tmp_path / "all" / f"{name}_disparity.npy"), atol=1e-5)


def test_batches_group_images_of_one_size(model, tmp_path, monkeypatch):
    for index, size in enumerate(((40, 56), (40, 56), (64, 48), (40, 56))):
        write_png(tmp_path / "in" / f"{index}.png", *size, seed=index)
    sizes = []
    real = job_module.predict

    def recording(model, images, **options):
        sizes.append(images.shape[0])
        return real(model, images, **options)

    monkeypatch.setattr(job_module, "predict", recording)
    summary = run_job(model, [tmp_path / "in"], tmp_path / "out", JobOptions(**{**vars(OPTIONS), "batch_size": 8}))
    assert summary.done == 4 and sizes == [2, 1, 1]  # consecutive images of one size share a pass


def write_video(path: Path, frames: list[np.ndarray], rate: int = 12) -> Path:
    """A lossless video (FFV1 in Matroska), so the decoded frames are the written ones."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "bgr0"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="bgr0")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_a_video_file_is_one_sequence_with_its_temporal_alignment(model, tmp_path):
    frames = [synthetic_rgb(32, 48, index).numpy() for index in range(4)]
    (tmp_path / "in").mkdir()
    video = write_video(tmp_path / "in" / "clip.mkv", frames)
    write_video(tmp_path / "in" / "other.mkv", frames[::-1])  # same size: still a sequence of its own
    decoded, rate = read_video(video)
    assert rate == 12 and all(np.array_equal((f[0].permute(1, 2, 0).numpy() * 255).round(), g)
                              for f, g in zip(decoded, frames, strict=True))
    summary = run_job(model, [tmp_path / "in"], tmp_path / "out", JobOptions(**{**vars(OPTIONS), "batch_size": 4}))
    assert summary.done == 2
    expected = lotus_core.predict_video(model, torch.cat(decoded), processing_resolution=64,
                                        seed=image_seed(0, "clip.mkv"))
    index = json.loads((tmp_path / "out" / "clip" / "frames.json").read_text())
    assert index["frames"] == 4 and index["frame_rate"] == 12
    for frame in range(4):
        written = np.load(tmp_path / "out" / "clip" / f"clip_{frame:06d}_disparity.npy")
        assert np.array_equal(written, expected.values[frame, 0].numpy())
    assert (tmp_path / "out" / "other" / "frames.json").is_file()
    assert run_job(model, [tmp_path / "in"], tmp_path / "out", OPTIONS).skipped == 2
    more = run_job(model, [tmp_path / "in"], tmp_path / "out", JobOptions(**{**vars(OPTIONS), "formats": ("exr",)}))
    assert more.done == 2 and (tmp_path / "out" / "clip" / "clip_000003_disparity.exr").is_file()  # a new format


def test_a_run_reports_its_stages_even_for_one_image(model, tmp_path):
    write_png(tmp_path / "x.png")
    events = []

    class Recorder:
        def begin(self, total):
            events.append(("begin", total))

        def stage(self, name, stage):
            events.append((name, stage.split(",")[0]))

        def advance(self, count):
            events.append(("advance", count))

    run_job(model, [tmp_path / "x.png"], tmp_path / "out", OPTIONS, progress=Recorder())
    assert [event for index, event in enumerate(events) if event not in events[:index]] == [
        ("begin", 1), ("x.png", "reading"), ("x.png", "predicting"), ("x.png", "writing"), ("advance", 1)]


def test_the_failures_record_is_of_the_last_run(model, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.png").write_text("no")
    write_png(tmp_path / "in" / "good.png")
    assert run_job(model, [tmp_path / "in"], tmp_path / "out", OPTIONS).failed == 1
    os.remove(tmp_path / "in" / "bad.png")
    summary = run_job(model, [tmp_path / "in"], tmp_path / "out", OPTIONS)
    assert (summary.failed, summary.skipped) == (0, 1) and not (tmp_path / "out" / "failures.jsonl").exists()
