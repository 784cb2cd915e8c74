"""How fast ComfyUI's Cancel stops the Lotus Depth node, on random full-size Lotus-G weights (CPU).

    .venv/bin/python scripts/measure_cancel.py                       # 768 and 2048, about 20-25 min on 2 cores
    .venv/bin/python scripts/measure_cancel.py --resolutions 768 --budget-min 8

A real ComfyUI server (tests/comfy_server.py) gets a random-weight Lotus-G diffusers folder of the
real SD2 UNet / SD VAE architecture (scripts/benchmark.py's ``write_folder``) as
models/lotus/lotus-depth-g-v1-0/ and a 2048x1536 synthetic photo. The graph is LoadImage -> Load
Lotus Model (fp32, VAE from the folder) -> Lotus Depth (chunk_size 1, fixed seed) -> PreviewImage.

For each processing resolution: one run without Cancel gives the total time and the time of every
progress event (one per VAE tile and UNet pass); then runs that POST /interrupt at chosen points
(1 s after queueing, half-way through a step as predicted from the first run) give the latency
from the POST to the ``execution_interrupted`` websocket event. Where a full run does not fit the
time budget (2048 on a small CPU), the step times come from a cancelled run and the rest is
estimated from counted FLOPs.

Last, in this process, on the same weights: the time between consecutive interrupt checks (the
core calls ComfyUI's check before every Conv2d/Linear), i.e. the uninterruptible stretches, for a
whole prediction at 768 and for the largest attention layers at 2048 (one SDPA call each).
Shared machines are noisy: the CPU model and load averages are printed with the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = "lotus-depth-g-v1-0"
SEED = 1234
INPUT_SIZE = (2048, 1536)  # width, height
NODE = "3"  # the Lotus Depth node in the graph
TERMINAL = ("execution_success", "execution_error", "execution_interrupted")
NODE_IDS = ("LotusDepth_LoadModel", "LotusDepth_Depth")


# ------------------------------------------------------------------------------------------ helpers


def helpers():
    """tests/comfy_server.py and scripts/benchmark.py, imported from their files (lotus_core made importable)."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]  # lotus_core, and the test harness
    comfy_server = importlib.import_module("comfy_server")
    spec = importlib.util.spec_from_file_location("lotus_benchmark", REPO / "scripts" / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    return comfy_server, benchmark


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPU(s)"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"load average: {load_average()}"


def synthetic_photo(width: int, height: int) -> Image.Image:
    """Smooth gradients, a few discs and fine noise: something with structure at every scale."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 97.0) * np.cos(y / 61.0)], -1)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(60, 400)
        image[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 1, 3)
    image += rng.normal(0, 0.03, image.shape).astype(np.float32)
    return Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))


def graph(image: str, resolution: int) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "LotusDepth_LoadModel",
              "inputs": {"checkpoint": CHECKPOINT + "/", "vae": "(from checkpoint folder)", "precision": "fp32",
                         "quantity": "auto"}},
        NODE: {"class_type": "LotusDepth_Depth",
               "inputs": {"lotus_model": ["2", 0], "image": ["1", 0], "processing_resolution": resolution,
                          "seed": SEED, "noise": "per image", "chunk_size": 1}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": [NODE, 0]}},
    }


def step_name(index: int, total: int) -> str:
    """Progress step ``index`` (1-based) of ``total``: per chunk, VAE encode tiles, UNet, decode tiles."""
    tiles = (total - 1) // 2
    if index <= tiles:
        return "VAE encode" if tiles == 1 else f"encode tile {index}/{tiles}"
    if index == tiles + 1:
        return "UNet"
    return "VAE decode" if tiles == 1 else f"decode tile {index - tiles - 1}/{tiles}"


class TimedMessages(list):
    """The collector's message list, stamping each message with its arrival time (``_t``, monotonic)."""

    def append(self, message) -> None:
        if isinstance(message, dict):
            message["_t"] = time.monotonic()
        super().append(message)


def timed_events(server, comfy_server):
    collector = comfy_server.EventCollector(server.ws_url, uuid.uuid4().hex)
    collector.messages = TimedMessages()
    return collector.start()


# ------------------------------------------------------------------------------------------ server runs


@dataclass
class Cancel:
    label: str
    after: int | str | None  # None: queueing; "node": the Lotus node's start; k: its k-th progress event;
    # "unet": the end of the last VAE encode tile (the run's step count tells which event that is)
    delay: float  # seconds after that anchor


@dataclass
class Run:
    resolution: int
    cancel: Cancel | None
    load: str
    submit: float = 0.0
    node_start: float | None = None  # executing {node: 3}
    loader_start: float | None = None  # executing {node: 2}; None when cached
    progress: list[tuple[int, int, float]] = field(default_factory=list)  # (value, max, time)
    end: float | None = None
    outcome: str = ""
    interrupt_sent: float | None = None
    interrupt_answered: float | None = None
    reason: str = ""
    known_steps: int | None = None  # the step count other runs at this resolution reported

    @property
    def total_steps(self) -> int | None:
        return self.progress[-1][1] if self.progress else self.known_steps

    def step_times(self) -> list[tuple[str, float]]:
        """(name, seconds) of every finished step; the first counts from the node's start."""
        times, previous = [], self.node_start
        for value, total, at in self.progress:
            times.append((step_name(value, total), at - previous))
            previous = at
        return times

    def step_at(self, moment: float) -> str:
        """Which step was running at ``moment`` and for how long already."""
        if self.node_start is None or moment < self.node_start:
            return "before the Lotus node"
        done = [(v, at) for v, _, at in self.progress if at <= moment]
        value, since = done[-1] if done else (0, self.node_start)
        total = self.total_steps or 3  # no run at this resolution reported its count: untiled
        if value >= total:
            return "after the Lotus node"
        return f"{step_name(value + 1, total)}, {moment - since:.1f} s in"

    @property
    def latency(self) -> float | None:
        if self.interrupt_sent is None or self.outcome != "execution_interrupted":
            return None
        return self.end - self.interrupt_sent


def run_prompt(server, comfy_server, image: str, resolution: int, cancel: Cancel | None,
               deadline: float | None, timeout: float = 3600.0) -> Run:
    """Queue one prompt and follow its events; POST /interrupt at ``cancel``'s point (or at ``deadline``)."""
    run = Run(resolution, cancel, load_average())
    with timed_events(server, comfy_server) as events:
        run.submit = time.monotonic()
        prompt_id = server.submit(graph(image, resolution), events.client_id)
        while True:
            mine = [m for m in events.snapshot() if (m.get("data") or {}).get("prompt_id") == prompt_id]
            for m in mine:
                data = m["data"]
                if m["type"] == "executing" and data.get("node") == NODE and run.node_start is None:
                    run.node_start = m["_t"]
                if m["type"] == "executing" and data.get("node") == "2" and run.loader_start is None:
                    run.loader_start = m["_t"]
            run.progress = [(m["data"]["value"], m["data"]["max"], m["_t"]) for m in mine
                            if m["type"] == "progress" and m["data"].get("node") == NODE]
            terminal = next((m for m in mine if m["type"] in TERMINAL), None)
            if terminal is not None:
                run.end, run.outcome = terminal["_t"], terminal["type"]
                break
            now = time.monotonic()
            if run.interrupt_sent is None:
                anchor = None
                if cancel is not None:
                    after = cancel.after
                    if after == "unet" and run.progress:
                        after = (run.progress[-1][1] - 1) // 2
                    if after is None:
                        anchor = run.submit
                    elif after == "node":
                        anchor = run.node_start
                    elif isinstance(after, int):
                        anchor = next((at for value, _, at in run.progress if value >= after), None)
                due = anchor is not None and now >= anchor + cancel.delay
                late = deadline is not None and now >= deadline
                if due or late:
                    run.reason = "as planned" if due else "time budget cut"
                    run.interrupt_sent = time.monotonic()
                    server.interrupt()
                    run.interrupt_answered = time.monotonic()
            if now - run.submit > timeout:
                raise comfy_server.ComfyServerError(f"prompt {prompt_id} still running after {timeout:.0f} s")
            time.sleep(0.005)
        with contextlib.suppress(comfy_server.ComfyServerError):
            events.wait_done(prompt_id, timeout=30)
    return run


def fresh_image(server, source: Path, counter: list[int]) -> str:
    """A new name for the same photo, so that ComfyUI's cache never answers for the Lotus node."""
    counter[0] += 1
    return server.write_input(f"photo_{counter[0]}.png", source)


def describe_run(run: Run) -> str:
    steps = ", ".join(f"{name} {seconds:.1f}" for name, seconds in run.step_times()) or "none finished"
    line = (f"  {run.resolution}: {run.cancel.label if run.cancel else 'no cancel'} -> {run.outcome}"
            f" in {run.end - run.submit:.1f} s (load avg {run.load}); steps: {steps}")
    if run.interrupt_sent is not None:
        line += (f"; interrupt at {run.interrupt_sent - run.submit:.1f} s ({run.step_at(run.interrupt_sent)},"
                 f" {run.reason}), latency {run.end - run.interrupt_sent:.2f} s")
    return line


# ------------------------------------------------------------------------------------------ FLOPs


def network_flops(height: int, width: int) -> dict[str, float]:
    """FLOPs of the VAE encoder, UNet and VAE decoder for one image of height x width (meta device)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from lotus_core.loading.architecture import LOTUS_UNET_CONFIG, SD_VAE_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config({**LOTUS_UNET_CONFIG, "in_channels": 8})
        vae = AutoencoderKL.from_config(SD_VAE_CONFIG)
        calls = {
            "encode": lambda: vae.encode(torch.zeros(1, 3, height, width)),
            "unet": lambda: unet(torch.zeros(1, 8, height // 8, width // 8), torch.tensor(999),
                                 torch.zeros(1, 2, 1024), class_labels=torch.zeros(1, 4)),
            "decode": lambda: vae.decode(torch.zeros(1, 4, height // 8, width // 8)),
        }
        flops = {}
        for name, call in calls.items():
            with FlopCounterMode(display=False) as counter:
                call()
            flops[name] = float(counter.get_total_flops())
    return flops


# ------------------------------------------------------------------------------------------ in-process layers


@dataclass
class Recording:
    checks: list[tuple[float, str]] = field(default_factory=list)  # (time, layer about to run)
    spans: dict[str, float] = field(default_factory=dict)  # module -> longest forward, seconds
    begin: float = 0.0
    end: float = 0.0

    def longest_gap(self) -> tuple[float, str]:
        points = [(self.begin, "(start)"), *self.checks, (self.end, "(end)")]
        gaps = [(b[0] - a[0], f"{a[1]} -> {b[1]}") for a, b in zip(points, points[1:])]
        return max(gaps)

    def longest_span(self) -> tuple[float, str]:
        return max((seconds, name) for name, seconds in self.spans.items())


@contextlib.contextmanager
def recording(roots: dict[str, torch.nn.Module]):
    """Time every interrupt check (before each Conv2d/Linear, as lotus_core.progress does) and the forward
    of every leaf module and attention block of ``roots``."""
    from diffusers.models.attention_processor import Attention

    from lotus_core.progress import CHECKED_LAYERS

    rec, starts, handles = Recording(), {}, []

    def started(name):
        return lambda *_: starts.__setitem__(name, time.perf_counter())

    def finished(name):
        def hook(*_):
            rec.spans[name] = max(rec.spans.get(name, 0.0), time.perf_counter() - starts[name])
        return hook

    for prefix, root in roots.items():
        for name, layer in root.named_modules():
            full = f"{prefix}.{name}" if name else prefix
            if isinstance(layer, CHECKED_LAYERS):
                handles.append(layer.register_forward_pre_hook(
                    lambda *_, n=full: rec.checks.append((time.perf_counter(), n))))
            if not any(True for _ in layer.children()) or isinstance(layer, Attention):
                handles.append(layer.register_forward_pre_hook(started(full)))
                handles.append(layer.register_forward_hook(finished(full)))
    rec.begin = time.perf_counter()
    try:
        yield rec
    finally:
        rec.end = time.perf_counter()
        for handle in handles:
            handle.remove()


def layer_cases(model, photo: Path, tile_px: int | None, square: bool) -> list[tuple]:
    """(name, tokens, call, roots, rough seconds here) of the in-process measurements, most important first."""
    decoder, unet = model.vae.decoder, model.unet
    width, height = INPUT_SIZE

    def decoder_mid(h: int, w: int):
        def call():
            z = torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(0))
            x = decoder.conv_in(z.contiguous(memory_format=torch.channels_last))
            decoder.mid_block(x, None)
        return call

    def unet_top_attention():
        block = unet.down_blocks[0].attentions[0]
        hidden = torch.randn(1, block.in_channels, height // 8, width // 8, generator=torch.Generator().manual_seed(0))
        return lambda: block(hidden, encoder_hidden_states=model.prompt_embeds.to(unet.dtype), return_dict=False)

    def whole_768():
        import lotus_core

        image = torch.from_numpy(np.asarray(Image.open(photo).convert("RGB"), dtype=np.float32) / 255)
        images = image.permute(2, 0, 1)[None]
        return lambda: lotus_core.predict(model, images, processing_resolution=768, seed=SEED, chunk_size=1)

    h, w = height // 8, width // 8
    cases = [(f"VAE decoder conv_in + mid-block, whole {width}x{height} latent (untiled plan)",
              f"{h}x{w}={h * w}", decoder_mid(h, w), {"vae.decoder": decoder}, 80)]
    if tile_px is not None:
        t = tile_px // 8
        th, tw = min(t, h), min(t, w)
        cases.append((f"VAE decoder conv_in + mid-block, one {tile_px} px tile (the server's plan)",
                      f"{th}x{tw}={th * tw}", decoder_mid(th, tw), {"vae.decoder": decoder},
                      10 + 70 * (th * tw / (h * w)) ** 2))
    cases.append((f"UNet down_blocks.0.attentions.0 (top level, 320 ch), {width}x{height}", f"{h}x{w}={h * w}",
                  unet_top_attention(), {"unet.down_blocks.0.attentions.0": unet.down_blocks[0].attentions[0]},
                  50))
    cases.append(("whole prediction at 768 (encode, UNet, decode)", "96x72=6912", whole_768(),
                  {"unet": unet, "vae": model.vae}, 110))
    if square:
        side = width // 8
        cases.append((f"VAE decoder conv_in + mid-block, square {width}x{width} latent",
                      f"{side}x{side}={side * side}", decoder_mid(side, side), {"vae.decoder": decoder}, 140))
    return cases


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[768, 2048])
    parser.add_argument("--workdir", default="/tmp/lotus_measure_cancel",
                        help="server base folder and the random checkpoint (kept: reused by the next run)")
    parser.add_argument("--budget-min", type=float, default=24.0, help="wall-time budget of the whole script")
    parser.add_argument("--no-layers", action="store_true", help="skip the in-process layer timings")
    parser.add_argument("--full-max", type=int, default=1024,
                        help="largest resolution run once whole (larger: step times from a cancelled run)")
    args = parser.parse_args()
    t0 = time.monotonic()
    budget_end = t0 + args.budget_min * 60
    layer_reserve = 0.0 if args.no_layers else 6 * 60  # seconds kept for the in-process part

    comfy_server, benchmark = helpers()
    print(f"machine: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads,"
          f" ISA {torch.backends.cpu.get_cpu_capability()}")
    print(f"start: {uptime()}", flush=True)

    work = Path(args.workdir)
    server = comfy_server.ComfyServer(work / "comfy", require_nodes=NODE_IDS, start_timeout=180)
    server.prepare()
    folder = server.lotus_dir / CHECKPOINT
    if not (folder / "model_index.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        begin = time.monotonic()
        benchmark.write_folder(folder)
        print(f"wrote the random full-size Lotus-G folder {folder} in {time.monotonic() - begin:.0f} s", flush=True)
    photo = work / "photo_2048x1536.png"
    if not photo.is_file():
        synthetic_photo(*INPUT_SIZE).save(photo)
    log_start = len(server.log_text())

    runs: list[Run] = []
    plans: dict[int, str] = {}
    estimates: dict[int, str] = {}
    counter = [0]
    flops = {r: network_flops(*_processing(r)) for r in args.resolutions}
    measured_unet: dict[int, float] = {}
    server.start()
    try:
        print(f"server up in {server.startup_seconds:.1f} s (log {server.log_path})", flush=True)
        # Warm-up (not in the tables): loads the model into the server and runs the networks once at a
        # small size, so the first measured run pays neither the load nor the first-call set-up.
        warm = run_prompt(server, comfy_server, fresh_image(server, photo, counter), 256, None, None)
        loader = f"{warm.node_start - warm.loader_start:.1f} s" if warm.loader_start else "cached"
        print(f"  warm-up at 256: {warm.outcome} in {warm.end - warm.submit:.1f} s (model load {loader})",
              flush=True)
        for resolution in args.resolutions:
            log_mark = len(server.log_text())
            deadline = budget_end - layer_reserve
            first_cancel = Cancel("1 s after queueing", None, 1.0)
            full_fits = resolution <= args.full_max
            if full_fits:
                run = run_prompt(server, comfy_server, fresh_image(server, photo, counter), resolution, None, deadline)
                runs.append(run)
                print(describe_run(run), flush=True)
                steps = run.step_times()
                if run.outcome != "execution_success":
                    print(f"  (no successful full run at {resolution}: no mid-step cancels)")
                    plans[resolution] = _plan(server.log_text()[log_mark:], run)
                    continue
                unet_index = (run.total_steps - 1) // 2 + 1
                measured_unet[resolution] = steps[unet_index - 1][1]
                cancels = [first_cancel]
                for index, (name, seconds) in enumerate(steps, start=1):  # the middle of every step
                    cancels.append(Cancel(f"half-way through {name} (+{seconds / 2:.1f} s)",
                                          index - 1 if index > 1 else "node", seconds / 2))
            else:
                # Too long to run whole here: cancel early, then half-way through the UNet predicted from a
                # finished smaller run (UNet FLOPs ratio) or, failing that, from the encode tiles' rate.
                cancels = [first_cancel, None]
            for cancel in cancels:
                if cancel is None:  # the UNet run at a large size: its anchor is only known from its first events
                    cancel = _unet_cancel(resolution, runs, flops, measured_unet)
                if time.monotonic() > deadline:
                    print(f"  skipped {resolution}: {cancel.label} (time budget)")
                    continue
                run = run_prompt(server, comfy_server, fresh_image(server, photo, counter), resolution, cancel,
                                 deadline)
                runs.append(run)
                print(describe_run(run), flush=True)
            plans[resolution] = _plan(server.log_text()[log_mark:], max(
                (r for r in runs if r.resolution == resolution), key=lambda r: r.total_steps or 0))
            if not full_fits:
                estimates[resolution] = _estimate(resolution, runs, flops, measured_unet)
            counted = [r.progress[-1][1] for r in runs if r.resolution == resolution and r.progress]
            for run in runs:
                if run.resolution == resolution and not run.progress and counted:
                    run.known_steps = max(counted)
        server_log = server.log_text()[log_start:]
    finally:
        server.stop()

    layer_rows = []
    if not args.no_layers:
        import lotus_core

        model = lotus_core.load_model(folder, dtype=torch.float32)
        tile = next((int(m) for m in re.findall(r"VAE works on (\d+) px tiles", server_log)), None)
        for name, tokens, call, roots, need in layer_cases(model, photo, tile, square=True):
            if time.monotonic() + need > budget_end + 60:
                layer_rows.append(f"| {name} | {tokens} | skipped (time budget) | | | |")
                continue
            load = load_average()
            with torch.inference_mode(), recording(roots) as rec:
                call()
            gap, where = rec.longest_gap()
            span, module = rec.longest_span()
            layer_rows.append(f"| {name} | {tokens} | {rec.end - rec.begin:.1f} | {len(rec.checks)} | {gap:.2f}"
                              f" ({where}) | {span:.2f} ({module}) | {load} |")
            print(f"  in-process: {name}: {rec.end - rec.begin:.1f} s, longest gap {gap:.2f} s", flush=True)

    _print_tables(runs, plans, estimates, layer_rows)
    print(f"\nend: {uptime()}; script wall time {(time.monotonic() - t0) / 60:.1f} min")


def _processing(resolution: int) -> tuple[int, int]:
    from lotus_core.prediction.images import processing_size

    return processing_size(INPUT_SIZE[1], INPUT_SIZE[0], resolution)


def _plan(log: str, run: Run) -> str:
    lines = list(dict.fromkeys(line.strip() for line in log.splitlines() if "Lotus:" in line))
    tiles = (run.total_steps - 1) // 2 if run.total_steps else None
    count = f"{tiles} VAE pass(es) each way" if tiles else "unknown tile count"
    return ("; ".join(lines) + f" -> {count}") if lines else f"whole image (no tiling line in the log), {count}"


def _unet_cancel(resolution: int, runs: list[Run], flops: dict, measured_unet: dict) -> Cancel:
    """Half-way through the UNet, predicted from a smaller finished run scaled by the UNet's FLOPs."""
    done = [r for r in measured_unet if r in flops]
    if done:
        base = max(done)
        predicted = measured_unet[base] * flops[resolution]["unet"] / flops[base]["unet"]
        how = f"{measured_unet[base]:.1f} s at {base} x FLOPs ratio"
    else:
        predicted, how = 120.0, "a guess"
    return Cancel(f"half-way through UNet (+{predicted / 2:.0f} s; predicted {predicted:.0f} s from {how})",
                  "unet", predicted / 2)


def _estimate(resolution: int, runs: list[Run], flops: dict, measured_unet: dict) -> str:
    """Total time at ``resolution``: its measured encode tiles; the decode tiles scaled from them by the
    decoder's / encoder's FLOPs (same tiles); the UNet measured, else scaled by FLOPs from the largest
    finished run, and at least as long as it was seen running before the Cancel."""
    mine = [r for r in runs if r.resolution == resolution and r.progress]
    if not mine:
        return "n/a"
    run = max(mine, key=lambda r: len(r.progress))
    tiles = (run.total_steps - 1) // 2
    steps = run.step_times()
    encode = [s for name, s in steps if name.startswith(("encode", "VAE encode"))]
    if len(encode) < tiles:
        return "n/a (not all encode tiles finished)"
    f = flops[resolution]
    encode_s = sum(encode)
    unet = next((s for name, s in steps if name == "UNet"), None)
    if unet is not None:
        unet_s, unet_how = unet, "measured"
    else:
        unet_start = next(at for value, _, at in run.progress if value >= tiles)
        seen = run.end - unet_start  # the UNet ran this long before it was stopped
        done = [r for r in measured_unet if r in flops]
        scaled = measured_unet[max(done)] * f["unet"] / flops[max(done)]["unet"] if done else 0.0
        unet_s = max(seen, scaled)
        unet_how = f">= {seen:.0f} s seen before the Cancel" + (f"; {scaled:.0f} s scaled from {max(done)}"
                                                                    if done else "")
    decode_s = encode_s * f["decode"] / f["encode"]
    return (f"encode {encode_s:.0f} s (measured) + UNet {unet_s:.0f} s ({unet_how}) + decode {decode_s:.0f} s"
            f" (encode x decoder/encoder FLOPs) = about {encode_s + unet_s + decode_s:.0f} s")


def _print_tables(runs: list[Run], plans: dict, estimates: dict, layer_rows: list[str]) -> None:
    print("\n### Runs without Cancel (step = time between consecutive progress events of the Lotus node;"
          " a size not run whole: the steps of its longest cancelled run)\n")
    print("| resolution | processed | VAE plan (server log) | load avg | total s (queue -> success) | loader s"
          " | Lotus node s | per-step s | longest step |")
    print("|---" * 9 + "|")
    for resolution in sorted({r.resolution for r in runs}):
        mine = [r for r in runs if r.resolution == resolution]
        full = next((r for r in mine if r.cancel is None and r.outcome == "execution_success"), None)
        longest = max((r for r in mine), key=lambda r: len(r.progress))
        steps = longest.step_times()
        per_step = ", ".join(f"{name} {s:.1f}" for name, s in steps) or "-"
        top = max(steps, key=lambda s: s[1]) if steps else None
        top_text = f"{top[0]} {top[1]:.1f}" if top else "-"
        h, w = _processing(resolution)
        if full is not None:
            loader = f"{full.node_start - full.loader_start:.1f}" if full.loader_start else "cached"
            print(f"| {resolution} | {w}x{h} | {plans.get(resolution, '?')} | {full.load}"
                  f" | {full.end - full.submit:.1f} | {loader} | {full.progress[-1][2] - full.node_start:.1f}"
                  f" | {per_step} | {top_text} |")
        else:
            print(f"| {resolution} | {w}x{h} | {plans.get(resolution, '?')} | {longest.load}"
                  f" | not run whole; estimate: {estimates.get(resolution, 'n/a')} | - | -"
                  f" | {per_step} (from the cancelled run) | {top_text} (of the finished steps) |")
    print("\n### Cancel: POST /interrupt -> execution_interrupted (websocket arrival)\n")
    print("| resolution | cancel point | load avg | interrupt sent s after queueing | running then | latency s"
          " | POST round trip s | outcome |")
    print("|---" * 8 + "|")
    for run in runs:
        if run.cancel is None:
            continue
        if run.interrupt_sent is None:
            print(f"| {run.resolution} | {run.cancel.label} | {run.load} | not sent (finished first) | | |"
                  f" | {run.outcome} |")
            continue
        latency = f"{run.latency:.2f}" if run.latency is not None else "-"
        reason = "" if run.reason == "as planned" else f" ({run.reason})"
        print(f"| {run.resolution} | {run.cancel.label}{reason} | {run.load}"
              f" | {run.interrupt_sent - run.submit:.1f} | {run.step_at(run.interrupt_sent)} | {latency}"
              f" | {run.interrupt_answered - run.interrupt_sent:.3f} | {run.outcome} |")
    if layer_rows:
        print("\n### Uninterruptible stretches, in-process on the same weights (fp32, channels-last VAE)\n")
        print("| what | latent tokens | wall s | checks | longest gap between checks s (checked layer -> next)"
              " | longest single module s | load avg |")
        print("|---" * 7 + "|")
        for row in layer_rows:
            print(row)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
