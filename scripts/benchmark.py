"""Speed and memory of lotus_core against a naive baseline written from the spec, on random full-size weights.

    .venv/bin/python scripts/benchmark.py                       # the README's table (CPU: about an hour)
    .venv/bin/python scripts/benchmark.py --sizes 512 --big --batch 1 --repeats 1   # a quick look
    .venv/bin/python scripts/benchmark.py --device cuda --dtypes fp16 bf16 --batch 8

The baseline is the official algorithm done the plain way: UNet, VAE and SD2 CLIP text encoder
loaded with ``from_pretrained``, CLIP run on the empty prompt at every call, default memory format,
the whole batch in one pass. Both sides load the same random-weight Lotus-G folder (written once to
a temporary directory) and draw the same random numbers, so their depth maps must agree: the table
shows the largest difference. Each configuration runs in a fresh process, so load time, cold start
(load + first result) and peak memory (RSS on a CPU, ``max_memory_allocated`` on a GPU) are those of
one implementation alone. The FLOP floor is the counted FLOPs (torch's flop counter, on the meta
device) over this machine's measured 3x3-convolution rate in that dtype. Shared machines are noisy:
compare ratios within one run. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TASK_SWITCH = torch.tensor([[0.8414710, 0.0, 0.5403023, 1.0]])  # [sin 1, sin 0, cos 1, cos 0]
CLIP_SD2 = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512)
EMPTY_PROMPT_IDS = [[49406, 49407]]  # "" tokenized without padding (the official Lotus pipeline): BOS, EOS
EMBEDS_FILE = "empty_prompt_embeds.safetensors"


def write_folder(folder: Path) -> None:
    """A random-weight Lotus-G diffusers folder with a text encoder, as the official repos have."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lotus_core.loading.architecture import LOTUS_UNET_CONFIG, SD_VAE_CONFIG

    torch.manual_seed(0)
    UNet2DConditionModel.from_config({**LOTUS_UNET_CONFIG, "in_channels": 8}).save_pretrained(folder / "unet")
    AutoencoderKL.from_config(SD_VAE_CONFIG).save_pretrained(folder / "vae")
    text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_SD2))
    text_encoder.save_pretrained(folder / "text_encoder")
    with torch.no_grad():  # what the core uses instead of CLIP: this random text encoder's constant output
        embeds = text_encoder(torch.tensor(EMPTY_PROMPT_IDS))[0]
    save_file({"prompt_embeds": embeds.contiguous()}, folder / EMBEDS_FILE)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "LotusGPipeline"}))


class StageTimer:
    """Wall time spent inside the VAE encoder, the UNet and the VAE decoder (forward hooks)."""

    def __init__(self, modules: dict, device: torch.device) -> None:
        self.seconds = dict.fromkeys(modules, 0.0)
        self.device = device
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda *_, n=name: self._start(n))
            module.register_forward_hook(lambda *_, n=name: self._stop(n))

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _start(self, name: str) -> None:
        setattr(self, "_start_" + name, self._now())

    def _stop(self, name: str) -> None:
        self.seconds[name] += self._now() - getattr(self, "_start_" + name)


def baseline(folder: Path, dtype: torch.dtype, device: torch.device, options: dict):
    """The naive implementation: returns (run(images) -> depth [B, H, W], stage modules)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype).to(device)
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype).to(device)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=dtype).to(device)
    scaling = vae.config.scaling_factor

    @torch.no_grad()
    def run(images: torch.Tensor, resolution: int) -> torch.Tensor:
        x = images.to(device) * 2 - 1
        height, width = x.shape[-2:]
        factor = min(resolution / width, resolution / height)
        size = (int(height * factor), int(width * factor))
        if size != (height, width):
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True)
        batch = x.shape[0]
        prompt = text_encoder(torch.tensor(EMPTY_PROMPT_IDS, device=device))[0].expand(batch, -1, -1)
        generator = torch.Generator().manual_seed(0)  # noise, then the posterior sample, as predict(seed=0)
        shape = (batch, 4, size[0] // 8, size[1] // 8)
        noise = torch.randn(shape, generator=generator).to(device, dtype)
        posterior = vae.encode(x.to(dtype)).latent_dist
        latent = (posterior.mean + posterior.std * torch.randn(shape, generator=generator).to(device, dtype)) * scaling
        x0 = unet(torch.cat([latent, noise], 1), torch.tensor(999, device=device), prompt,
                  class_labels=TASK_SWITCH.to(device, dtype).expand(batch, -1)).sample
        decoded = (vae.decode(x0 / scaling).sample.float() / 2 + 0.5).clamp(0, 1)
        decoded = torch.nn.functional.interpolate(decoded, size=(height, width), mode="nearest-exact")
        return decoded.mean(1).cpu()

    return run, {"encode": vae.encoder, "unet": unet, "decode": vae.decoder}


def core(folder: Path, dtype: torch.dtype, device: torch.device, options: dict):
    import lotus_core

    model = lotus_core.load_model(folder, quantity="depth", device=device, dtype=dtype)
    if options.pop("compile", False):
        model.compile()
    # Random weights: the shipped embedding is the real CLIP's, so use the random CLIP's (same constant role).
    model.prompt_embeds = load_file(folder / EMBEDS_FILE)["prompt_embeds"]

    def run(images: torch.Tensor, resolution: int) -> torch.Tensor:
        return lotus_core.predict(model, images, processing_resolution=resolution, seed=0, **options).values[:, 0]

    return run, {"encode": model.vae.encoder, "unet": model.unet, "decode": model.vae.decoder}


def child(args: argparse.Namespace) -> None:
    """One implementation, one case: load, first result, warm runs, stage times, peak memory."""
    device = torch.device(args.device)
    images = torch.rand(args.batch, 3, args.height, args.width, generator=torch.Generator().manual_seed(0))
    begin_imports = time.perf_counter()
    import diffusers.models  # noqa: F401  (both sides: the networks' library, which also imports transformers)

    import lotus_core  # noqa: F401
    imports = time.perf_counter() - begin_imports
    start = time.perf_counter()
    setup = baseline if args.impl == "baseline" else core
    options = {"vae_tile_size": args.vae_tile} if args.impl == "core+vae-tiles" else {}
    if args.impl == "core+compile":
        options["compile"] = True
    run, modules = setup(Path(args.folder), DTYPES[args.dtype], device, options)
    loaded = time.perf_counter() - start
    timer = StageTimer(modules, device)
    depth = run(images, args.resolution)
    cold = time.perf_counter() - start
    totals, stages = [], []
    for _ in range(args.repeats):
        timer.seconds = dict.fromkeys(timer.seconds, 0.0)
        begin = time.perf_counter()
        run(images, args.resolution)
        totals.append(time.perf_counter() - begin)
        stages.append(dict(timer.seconds))
    best = int(np.argsort(totals)[(len(totals) - 1) // 2])  # the (lower) median run
    np.save(args.depth_file, depth.float().numpy())
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"imports": imports, "load": loaded, "cold": cold, "warm": totals[best], "stages": stages[best],
                      "peak_gb": peak}))


def conv_rate(dtype: torch.dtype, device: torch.device) -> float:
    """GFLOP/s of the fastest 3x3 convolution among UNet and VAE shapes, either memory format."""
    best = 0.0
    for channels, edge in ((320, 96), (640, 48), (256, 192), (128, 384)):
        for layout in (torch.contiguous_format, torch.channels_last):
            conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(device, dtype, memory_format=layout)
            x = torch.randn(1, channels, edge, edge, device=device, dtype=dtype).contiguous(memory_format=layout)
            best = max(best, 2 * channels * channels * 9 * edge * edge / _seconds(lambda: conv(x), device) / 1e9)
    return best


def _seconds(call, device: torch.device) -> float:
    repeats = 50 if device.type == "cuda" else 3
    with torch.inference_mode():
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        begin = time.perf_counter()
        for _ in range(repeats):
            call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - begin) / repeats


def flops(height: int, width: int) -> float:
    """FLOPs of one Lotus-G image processed at height x width (UNet + VAE encoder + decoder), on meta."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from lotus_core.loading.architecture import LOTUS_UNET_CONFIG, SD_VAE_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config({**LOTUS_UNET_CONFIG, "in_channels": 8})
        vae = AutoencoderKL.from_config(SD_VAE_CONFIG)
        with FlopCounterMode(display=False) as counter:
            vae.encode(torch.zeros(1, 3, height, width))
            unet(torch.zeros(1, 8, height // 8, width // 8), torch.tensor(999), torch.zeros(1, 2, 1024),
                 class_labels=torch.zeros(1, 4))
            vae.decode(torch.zeros(1, 4, height // 8, width // 8))
    return counter.get_total_flops()


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return (f"{model}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, torch {torch.__version__},"
            f" vector ISA {torch.backends.cpu.get_cpu_capability()}, native bf16: {'yes' if native_bf16() else 'no'}")


def native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere it is emulated, slowly."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def measure(folder: Path, impl: str, dtype: str, case: dict, args: argparse.Namespace, depth_file: Path) -> dict:
    command = [sys.executable, __file__, "--child", "--folder", str(folder), "--impl", impl,
               "--dtype", dtype, "--device", args.device, "--width", str(case["width"]),
               "--height", str(case["height"]), "--resolution", str(case["resolution"]),
               "--batch", str(case["batch"]), "--repeats", str(args.repeats), "--depth-file", str(depth_file),
               "--vae-tile", str(args.vae_tile)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        raise SystemExit(f"{impl} {dtype} {case}: failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cases(args: argparse.Namespace) -> list[dict]:
    found = [dict(width=s, height=s, resolution=s, batch=1) for s in args.sizes]
    for big in args.big:
        width, height = map(int, big.split("x"))
        found.append(dict(width=width, height=height, resolution=768, batch=1))
    if args.batch > 1:
        if args.batch_size_px not in args.sizes:  # the batch of one to compare with
            found.append(dict(width=args.batch_size_px, height=args.batch_size_px, resolution=args.batch_size_px,
                              batch=1))
        found.append(dict(width=args.batch_size_px, height=args.batch_size_px, resolution=args.batch_size_px,
                          batch=args.batch))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[512, 768], help="square inputs, processed natively")
    parser.add_argument("--big", nargs="*", default=["2048x2048", "4096x2160"],
                        help="WxH inputs processed at the default 768 (as users run them)")
    parser.add_argument("--batch", type=int, default=4, help="also a batch of N (img/s against batch 1); 1 = skip")
    parser.add_argument("--batch-size-px", type=int, default=256, help="image size of the batch rows")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=None,
                        help="default: fp32, plus bf16 where the CPU has it natively; fp16 and bf16 on a GPU")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--vae-tile", type=int, default=384,
                        help="also the core with VAE tiles of this many px on inputs processed natively at >= 768 px"
                             " (0 = skip)")
    parser.add_argument("--compile", action="store_true",
                        help="also the core under torch.compile on inputs processed natively (load + first result"
                             " then includes the compilation)")
    parser.add_argument("--repeats", type=int, default=1, help="warm runs per configuration (median is shown)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--folder", "--impl", "--dtype", "--depth-file"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    for hidden in ("--width", "--height", "--resolution"):
        parser.add_argument(hidden, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from lotus_core.prediction.images import processing_size  # here, not at the top: children time their imports

    device = torch.device(args.device)
    if args.dtypes is None:
        args.dtypes = ["fp16", "bf16"] if device.type == "cuda" else ["fp32"] + (["bf16"] if native_bf16() else [])
    rates = {dtype: conv_rate(DTYPES[dtype], device) for dtype in args.dtypes}
    print(f"machine: {machine(device)}; 3x3 conv rate " + ", ".join(f"{d} {r:.0f} GFLOP/s" for d, r in rates.items()),
          flush=True)
    print("| input → processed | batch | dtype | impl | imports s | load s | load + first result s | warm s"
          " | encode | UNet | decode | img/s | peak GB | latency ÷ baseline | load ÷ baseline | peak ÷ baseline"
          " | max abs Δ depth vs baseline | FLOP floor s |")
    print("|---" * 18 + "|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "lotus-g-random"
        write_folder(folder)
        for case in cases(args):
            size = processing_size(case["height"], case["width"], case["resolution"])
            floor_flops = flops(*size) * case["batch"]
            impls = ["baseline", "core"]
            if args.vae_tile and case["width"] == size[1] and min(size) >= 768:
                impls.append("core+vae-tiles")
            if args.compile and case["width"] == size[1] and case["batch"] == 1:
                impls.append("core+compile")
            for dtype in args.dtypes:
                depth_files = {impl: Path(tmp) / f"{impl}.npy" for impl in impls}
                results = {impl: measure(folder, impl, dtype, case, args, depth_files[impl]) for impl in impls}
                reference = np.load(depth_files["baseline"])
                base = results["baseline"]
                for impl, r in results.items():
                    s = r["stages"]
                    delta = np.abs(np.load(depth_files[impl]) - reference).max()
                    label = {"core+vae-tiles": f"core, VAE tiles {args.vae_tile} px",
                             "core+compile": "core, torch.compile"}.get(impl, impl)
                    print(f"| {case['width']}×{case['height']} → {size[1]}×{size[0]} | {case['batch']} | {dtype}"
                          f" | {label} | {r['imports']:.1f} | {r['load']:.2f} | {r['cold']:.1f} | {r['warm']:.3g}"
                          f" | {s['encode']:.3g} | {s['unet']:.3g} | {s['decode']:.3g}"
                          f" | {case['batch'] / r['warm']:.3f}"
                          f" | {r['peak_gb']:.2f} | {r['warm'] / base['warm']:.2f} | {r['load'] / base['load']:.2f}"
                          f" | {r['peak_gb'] / base['peak_gb']:.2f} | {delta:.1e}"
                          f" | {floor_flops / rates[dtype] / 1e9:.3g} |", flush=True)


if __name__ == "__main__":
    main()
