"""The runtime backends against torch eager on random full-size weights: each network alone, then the whole prediction.

    .venv/bin/python scripts/benchmark_backends.py networks                  # per network, 512² and 768²
    .venv/bin/python scripts/benchmark_backends.py networks --candidates inductor --sizes 512
    .venv/bin/python scripts/benchmark_backends.py pipeline --sizes 768      # predict(): cold and warm cache

``networks``: one process per (network, size, precision) holds torch eager fp32 (the baseline: the core's
eager path, VAE in channels-last) and the candidates, and runs them in turn, round after round, so the
load of a shared machine falls on all of them alike; the table shows medians, the ratio to eager fp32 in
the same process, the largest difference to eager fp32, the setup (OpenVINO: conversion to the IR plus
the first compilation; inductor: the first call minus a warm one), the first call with a warm cache
(OpenVINO: the compiled program read back from disk, then run; inductor: the first call after a reset,
its FX graph cache warm)
and the resident memory the candidate added. ``pipeline``: ``load_model(backend=...)`` then
``predict`` in a fresh process per row: the first image (cold cache: conversion included; warm cache:
a second process), a warm image, the process's peak RSS and the depth's largest difference to eager
fp32. Candidates: OpenVINO (``lotus-depth[cpu-fast]``), torch.compile's CPU inductor with weight
freezing, torch eager bf16. ONNX Runtime is not measured (see the README). Prints Markdown tables.
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

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import machine, native_bf16, write_folder  # noqa: E402  (the random-weight folder, the header)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
NETWORKS = ("encode", "unet", "decode")
CANDIDATES = {"fp32": ("openvino",), "bf16": ("eager-bf16", "openvino")}
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_flags() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("flags")), [])) if cpuinfo.exists() else set()
    return " ".join(f for f in ISA_FLAGS if f in flags) or "unknown"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def rss_gb() -> float:
    return psutil.Process().memory_info().rss / 2**30


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# --- networks: each network alone, candidates interleaved in one process ---

def network_and_inputs(model, network: str, size: int) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """The eager module and the inputs predict gives it at ``size``² pixels (batch 1, seeded)."""
    from lotus_core.runtime.networks import UNetArguments, time_features

    generator = torch.Generator().manual_seed(0)
    latent = size // 8
    if network == "encode":
        return model.vae.encoder, (torch.rand(1, 3, size, size, generator=generator) * 2 - 1,)
    if network == "decode":
        return model.vae.decoder, (torch.randn(1, 4, latent, latent, generator=generator) * 5,)
    inputs = (torch.randn(1, 8, latent, latent, generator=generator), time_features(model.unet.time_proj, 999, 1),
              model.prompt_embeds.float(), torch.tensor([[0.8414710, 0.0, 0.5403023, 1.0]]))
    return UNetArguments(model.unet), inputs


def openvino_candidate(module, inputs, dtype: torch.dtype, folder: Path) -> tuple:
    from lotus_core.runtime.openvino_ir import CompiledNetwork, convert

    begin = time.perf_counter()
    ir_file = convert(module, tuple(t[..., :64, :64] if t.ndim == 4 else t for t in inputs), folder)
    network = CompiledNetwork(ir_file, dtype)
    network(*inputs)  # compiles for these shapes (a program written to the cache)
    setup = time.perf_counter() - begin
    del network  # its memory goes before the cache hit is measured
    network = CompiledNetwork(ir_file, dtype)
    begin = time.perf_counter()
    network(*inputs)  # the cache hit: the compiled program is read back (and run once)
    return network, setup, time.perf_counter() - begin


class TimestepUNet(torch.nn.Module):
    """The UNet taking the timestep itself (999): dynamo cannot follow how ``UNetArguments`` hands the UNet
    its timestep features, so inductor compiles the UNet as ``predict`` calls it."""

    def __init__(self, unet) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, _time_features, encoder_hidden_states, class_labels):
        return self.unet(sample, torch.tensor(999), encoder_hidden_states=encoder_hidden_states,
                         class_labels=class_labels, return_dict=False)[0]


def inductor_candidate(module, inputs, dtype: torch.dtype) -> tuple:
    import copy

    import torch._inductor.config

    from lotus_core.runtime.networks import UNetArguments

    if isinstance(module, UNetArguments):
        module = TimestepUNet(module.unet)
    torch._inductor.config.freezing = True  # weights become constants: folded, prepacked for oneDNN
    source = module if dtype == torch.float32 else copy.deepcopy(module).to(dtype)
    cast = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)
    compiled = torch.compile(source)
    begin = time.perf_counter()
    compiled(*cast)
    first = time.perf_counter() - begin
    begin = time.perf_counter()
    compiled(*cast)
    warm = time.perf_counter() - begin
    torch._dynamo.reset()
    compiled = torch.compile(source)
    begin = time.perf_counter()
    compiled(*cast)
    hit = time.perf_counter() - begin
    return (lambda *x: compiled(*(t.to(dtype) if t.is_floating_point() else t for t in x))), first - warm, hit


def networks_child(args: argparse.Namespace) -> None:
    from benchmark import EMBEDS_FILE
    from safetensors.torch import load_file

    import lotus_core

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = lotus_core.load_model(args.folder, quantity="depth")
    model.prompt_embeds = load_file(Path(args.folder) / EMBEDS_FILE)["prompt_embeds"]
    eager, inputs = network_and_inputs(model, args.network, args.size)
    runners, rows = {"eager-fp32": eager}, {"eager-fp32": {"setup": 0.0, "hit": 0.0, "added_gb": 0.0}}
    for name in args.candidates:
        before = rss_gb()
        if name == "openvino":
            ir_folder = Path(args.work) / f"{args.network}-{args.dtype}-ir"
            runner, setup, hit = openvino_candidate(eager, inputs, dtype, ir_folder)
        elif name == "inductor":
            runner, setup, hit = inductor_candidate(eager, inputs, dtype)
        else:  # eager-bf16: torch's own bf16 kernels on a bf16 copy
            import copy

            copied = copy.deepcopy(eager).to(torch.bfloat16)
            runner, setup, hit = (lambda *x, m=copied: m(*(t.to(torch.bfloat16) if t.is_floating_point() else t
                                                           for t in x))), 0.0, 0.0
        runners[name] = runner
        rows[name] = {"setup": setup, "hit": hit, "added_gb": rss_gb() - before}
    times = {name: [] for name in runners}
    outputs = {}
    with torch.inference_mode():
        for name, runner in runners.items():  # a round not counted: first-call allocations, lazy inits
            runner(*inputs)
        for _ in range(args.repeats):
            for name, runner in runners.items():
                begin = time.perf_counter()
                output = runner(*inputs)
                times[name].append(time.perf_counter() - begin)
                outputs[name] = output
    reference = outputs["eager-fp32"].float()
    for name, row in rows.items():
        row["seconds"] = statistics.median(times[name])
        row["max_abs"] = (outputs[name].float() - reference).abs().max().item()
    print(json.dumps({"rows": rows, "peak_gb": peak_rss_gb()}))


def networks(args: argparse.Namespace, folder: Path, work: Path) -> None:
    print("| network | size | precision | runtime | median s | ÷ eager fp32 | max abs Δ vs eager fp32 | setup s"
          " | first call, warm cache s | RSS added GB | process peak GB | load average |")
    print("|---" * 12 + "|")
    for size in args.sizes:
        for network in args.networks:
            for precision in args.precisions:
                candidates = [c for c in args.candidates or CANDIDATES[precision]
                              if not (c == "eager-bf16" and precision == "fp32")]
                command = [sys.executable, __file__, "networks", "--child", "--folder", str(folder), "--work",
                           str(work), "--network", network, "--size", str(size), "--dtype", precision,
                           "--repeats", str(args.repeats), "--candidates", *candidates]
                done = subprocess.run(command, capture_output=True, text=True,
                                      env={**os.environ, "PYTHONWARNINGS": "ignore"})
                if done.returncode != 0:
                    print(f"| {network} | {size} | {precision} | failed: {done.stderr[-400:]!r} |", flush=True)
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                base = result["rows"]["eager-fp32"]["seconds"]
                for name, row in result["rows"].items():
                    if name == "eager-fp32" and precision != args.precisions[0]:
                        continue
                    shown = precision if name != "eager-fp32" else "fp32"
                    print(f"| {network} | {size}² | {shown} | {name} | {row['seconds']:.3g}"
                          f" | {row['seconds'] / base:.2f} | {row['max_abs']:.1e} | {row['setup']:.1f}"
                          f" | {row['hit']:.1f} | {row['added_gb']:.2f}"
                          f" | {result['peak_gb']:.2f} | {load_average()} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("networks", "pipeline"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 768], help="square processing sizes")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS), help="networks mode: which")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=None,
                        help="default: fp32, plus bf16 where the CPU has it natively")
    parser.add_argument("--candidates", nargs="*", choices=("openvino", "inductor", "eager-bf16"), default=None,
                        help="networks: the runtimes set against eager fp32 (default: OpenVINO, and torch bf16)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (networks) or warm images (pipeline)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--folder", "--work", "--network", "--dtype", "--backend", "--depth-file"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return networks_child(args) if args.mode == "networks" else pipeline_child(args)
    if args.precisions is None:
        args.precisions = ["fp32"] + (["bf16"] if native_bf16() else [])
    print(f"machine: {machine(torch.device('cpu'))}; ISA flags: {cpu_flags()}; load average at start:"
          f" {load_average()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder, work = Path(tmp) / "lotus-g-random", Path(tmp) / "work"
        write_folder(folder)
        work.mkdir()
        os.environ["LOTUS_RUNTIME_CACHE"] = str(work / "cache")  # a cold cache for this run, reused within it
        (networks if args.mode == "networks" else pipeline)(args, folder, work)
    print(f"load average at the end: {load_average()}")


# --- pipeline: load_model(backend=...) and predict, a fresh process per row ---

def anonymous_rss_gb() -> float:
    """Resident memory not backed by a file: what the process holds for itself (the mapped IR file is not)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return float("nan")
    line = next(line for line in status.read_text().splitlines() if line.startswith("RssAnon:"))
    return int(line.split()[1]) / 2**20


def pipeline_child(args: argparse.Namespace) -> None:
    from benchmark import EMBEDS_FILE
    from safetensors.torch import load_file

    import lotus_core

    images = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    anonymous = [anonymous_rss_gb()]
    begin = time.perf_counter()
    model = lotus_core.load_model(args.folder, quantity="depth", dtype=args.dtype, backend=args.backend)
    model.prompt_embeds = load_file(Path(args.folder) / EMBEDS_FILE)["prompt_embeds"]
    loaded = time.perf_counter() - begin
    anonymous.append(anonymous_rss_gb())

    def image() -> tuple[float, torch.Tensor]:
        begin = time.perf_counter()
        depth = lotus_core.predict(model, images, processing_resolution=args.size, seed=0).values
        anonymous.append(anonymous_rss_gb())
        return time.perf_counter() - begin, depth

    first, depth = image()
    warm = statistics.median(image()[0] for _ in range(args.repeats))
    np.save(args.depth_file, depth.numpy())
    print(json.dumps({"backend": model.backend, "load": loaded, "first": first, "warm": warm,
                      "peak_gb": peak_rss_gb(), "anonymous_gb": max(anonymous)}))


def pipeline(args: argparse.Namespace, folder: Path, work: Path) -> None:
    print("| size | precision | backend | cache | load s | first image s | warm image s | first ÷ warm"
          " | warm ÷ eager fp32 | peak RSS GB | anonymous RSS after load and images, max GB | peak ÷ eager"
          " | max abs Δ depth vs eager fp32"
          " | load average |")
    print("|---" * 14 + "|")
    rows = [("eager", "fp32", "-")]  # the baseline, always
    for precision in args.precisions:
        rows += [("eager", precision, "-")] * (precision != "fp32")
        rows += [("openvino", precision, "cold"), ("openvino", precision, "warm")]
    for size in args.sizes:
        base, reference = None, None
        for backend, precision, cache in rows:
            depth_file = work / f"{backend}-{precision}-{cache}.npy"
            if cache == "cold":  # a cache of its own: the conversions and compilations happen in this process
                os.environ["LOTUS_RUNTIME_CACHE"] = str(work / f"cache-{size}-{precision}")
            command = [sys.executable, __file__, "pipeline", "--child", "--folder", str(folder), "--size", str(size),
                       "--dtype", precision, "--backend", backend, "--repeats", str(args.repeats),
                       "--depth-file", str(depth_file)]
            done = subprocess.run(command, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if done.returncode != 0:
                print(f"| {size}² | {precision} | {backend} | {cache} | failed: {done.stderr[-400:]!r} |", flush=True)
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            depth = np.load(depth_file)
            if base is None:
                base, reference = r, depth
            print(f"| {size}² | {precision} | {r['backend']} | {cache} | {r['load']:.1f} | {r['first']:.1f}"
                  f" | {r['warm']:.1f} | {r['first'] / r['warm']:.2f} | {r['warm'] / base['warm']:.2f}"
                  f" | {r['peak_gb']:.2f} | {r['anonymous_gb']:.2f} | {r['peak_gb'] / base['peak_gb']:.2f}"
                  f" | {np.abs(depth - reference).max():.1e} | {load_average()} |", flush=True)


if __name__ == "__main__":
    main()
