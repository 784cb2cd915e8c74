"""Speed and memory of lotus_core against a naive baseline written from the spec, on random full-size weights.

    .venv/bin/python scripts/benchmark.py [--sizes 512 768] [--dtypes fp32 bf16] [--repeats 2] [--big 2048]

The baseline is the official algorithm done the plain way: the UNet, VAE and SD2 CLIP text encoder
loaded with ``from_pretrained``, CLIP run on the empty prompt at every call, default memory format.
Both sides load the same random-weight Lotus-G folder (written once to a temporary directory) and
each configuration runs in a fresh process, so cold start and peak RSS are per implementation. The
FLOP floor divides the counted FLOPs (torch's flop counter, on the meta device) by this machine's
measured 3x3-convolution rate. Prints a Markdown table; machine noise is large on shared CPUs, so
compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TASK_SWITCH = torch.tensor([[0.8414710, 0.0, 0.5403023, 1.0]])
CLIP_SD2 = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512)


def write_folder(folder: Path) -> None:
    """A random-weight Lotus-G diffusers folder with a text encoder, as the official repos have."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lotus_core.architecture import LOTUS_UNET_CONFIG, SD_VAE_CONFIG

    torch.manual_seed(0)
    UNet2DConditionModel.from_config({**LOTUS_UNET_CONFIG, "in_channels": 8}).save_pretrained(folder / "unet")
    AutoencoderKL.from_config(SD_VAE_CONFIG).save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig(**CLIP_SD2)).save_pretrained(folder / "text_encoder")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "LotusGPipeline"}))


class StageTimer:
    """Wall time spent inside the VAE encoder, the UNet and the VAE decoder (forward hooks)."""

    def __init__(self, modules: dict) -> None:
        self.seconds = dict.fromkeys(modules, 0.0)
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda *_, n=name: setattr(self, "_start_" + n, time.perf_counter()))
            module.register_forward_hook(lambda *_, n=name: self._stop(n))

    def _stop(self, name: str) -> None:
        self.seconds[name] += time.perf_counter() - getattr(self, "_start_" + name)

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)


def baseline(folder: Path, dtype: torch.dtype):
    """The naive implementation: returns (run(image_uint8) -> depth, modules)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype)
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=dtype)
    ids = torch.tensor([[49406, 49407]])  # "" without padding: BOS, EOS

    @torch.no_grad()
    def run(image: torch.Tensor, resolution: int) -> torch.Tensor:
        x = image.permute(2, 0, 1)[None].float() / 127.5 - 1
        height, width = x.shape[-2:]
        factor = min(resolution / width, resolution / height)
        size = (int(height * factor), int(width * factor))
        if size != (height, width):
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True)
        prompt = text_encoder(ids)[0]
        noise = torch.randn((1, 4, size[0] // 8, size[1] // 8), generator=torch.Generator().manual_seed(0))
        latent = vae.encode(x.to(dtype)).latent_dist.sample() * vae.config.scaling_factor
        x0 = unet(torch.cat([latent, noise.to(dtype)], 1), torch.tensor(999), prompt,
                  class_labels=TASK_SWITCH.to(dtype)).sample
        decoded = (vae.decode(x0 / vae.config.scaling_factor).sample.float() / 2 + 0.5).clamp(0, 1)
        decoded = torch.nn.functional.interpolate(decoded, size=(height, width), mode="nearest-exact")
        return decoded.mean(1)

    return run, {"encode": vae.encoder, "unet": unet, "decode": vae.decoder}


def core(folder: Path, dtype: torch.dtype):
    import lotus_core

    model = lotus_core.load_model(folder, quantity="depth", dtype=dtype)

    def run(image: torch.Tensor, resolution: int) -> torch.Tensor:
        images = image.permute(2, 0, 1)[None].float() / 255
        return lotus_core.predict(model, images, processing_resolution=resolution, seed=0).values

    return run, {"encode": model.vae.encoder, "unet": model.unet, "decode": model.vae.decoder}


def child(args: argparse.Namespace) -> None:
    """One implementation at one size and dtype: cold start, warm runs, stage times, peak RSS."""
    torch.manual_seed(0)
    image = torch.randint(0, 256, (args.input_size, args.input_size, 3), dtype=torch.uint8)
    start = time.perf_counter()
    run, modules = {"baseline": baseline, "core": core}[args.impl](Path(args.folder), DTYPES[args.dtype])
    timer = StageTimer(modules)
    run(image, args.resolution)
    cold = time.perf_counter() - start
    totals, stages = [], []
    for _ in range(args.repeats):
        timer.reset()
        begin = time.perf_counter()
        run(image, args.resolution)
        totals.append(time.perf_counter() - begin)
        stages.append(dict(timer.seconds))
    best = totals.index(statistics.median_low(totals))
    print(json.dumps({"cold": cold, "warm": statistics.median(totals), "stages": stages[best],
                      "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def conv_rate(dtype: torch.dtype) -> float:
    """GFLOP/s of a 3x3, 320-channel convolution at 96x96, channels-last: the attainable rate."""
    conv = torch.nn.Conv2d(320, 320, 3, padding=1).to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(1, 320, 96, 96, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            conv(x)
        begin = time.perf_counter()
        for _ in range(10):
            conv(x)
        seconds = (time.perf_counter() - begin) / 10
    return 2 * 320 * 320 * 9 * 96 * 96 / seconds / 1e9


def flops(resolution: int) -> float:
    """FLOPs of one Lotus-G image at ``resolution``² (UNet + VAE encoder + decoder), counted on meta."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from lotus_core.architecture import LOTUS_UNET_CONFIG, SD_VAE_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config({**LOTUS_UNET_CONFIG, "in_channels": 8})
        vae = AutoencoderKL.from_config(SD_VAE_CONFIG)
        latent = resolution // 8
        with FlopCounterMode(display=False) as counter:
            vae.encode(torch.zeros(1, 3, resolution, resolution))
            unet(torch.zeros(1, 8, latent, latent), torch.tensor(999), torch.zeros(1, 2, 1024),
                 class_labels=torch.zeros(1, 4))
            vae.decode(torch.zeros(1, 4, latent, latent))
    return counter.get_total_flops()


def measure(folder: Path, impl: str, dtype: str, input_size: int, resolution: int, repeats: int) -> dict:
    command = [sys.executable, __file__, "--child", "--folder", str(folder), "--impl", impl, "--dtype", dtype,
               "--input-size", str(input_size), "--resolution", str(resolution), "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        raise SystemExit(f"{impl} {dtype} {input_size}: failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 768], help="square inputs, processed natively")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--big", type=int, default=2048, help="also a BIG² input at the default 768 (0 = skip)")
    parser.add_argument("--repeats", type=int, default=2, help="warm runs per configuration")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--input-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    cases = [(size, size) for size in args.sizes] + ([(args.big, 768)] if args.big else [])
    rates = {dtype: conv_rate(DTYPES[dtype]) for dtype in args.dtypes}
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads;"
          f" conv rate " + ", ".join(f"{d} {r:.0f} GFLOP/s" for d, r in rates.items()), flush=True)
    print("| input → processed | dtype | impl | cold start s | warm s | encode | UNet | decode | peak RSS GB"
          " | latency ÷ baseline | cold ÷ baseline | RSS ÷ baseline | FLOP floor s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "lotus-g-random"
        write_folder(folder)
        for input_size, resolution in cases:
            floor_flops = flops(resolution)
            for dtype in args.dtypes:
                results = {impl: measure(folder, impl, dtype, input_size, resolution, args.repeats)
                           for impl in ("baseline", "core")}
                base = results["baseline"]
                for impl, r in results.items():
                    s = r["stages"]
                    print(f"| {input_size}² → {resolution}² | {dtype} | {impl} | {r['cold']:.1f} | {r['warm']:.1f}"
                          f" | {s['encode']:.1f} | {s['unet']:.1f} | {s['decode']:.1f} | {r['rss_gb']:.2f}"
                          f" | {r['warm'] / base['warm']:.2f} | {r['cold'] / base['cold']:.2f}"
                          f" | {r['rss_gb'] / base['rss_gb']:.2f} | {floor_flops / rates[dtype] / 1e9:.1f} |", flush=True)


if __name__ == "__main__":
    main()
