"""GPU check of progress, Cancel and the memory guard on full-size random Lotus-G networks.

    python scripts/gpu_check_progress.py            # on a machine with CUDA; prints Markdown tables

1. The hooks that make Cancel work inside one image change nothing: results with and without
   ``callback``/``check_interrupt`` are compared bit for bit, and their cost is timed.
2. Cancel latency: a prediction runs in a thread; a stop is requested half-way through its run
   time (measured first) and the time until the exception, and until the GPU is idle, is printed.
3. The memory guard on the GPU's real free memory: which processing sizes it accepts or refuses.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lotus_core import LotusError, LotusModel, predict  # noqa: E402
from lotus_core.loading.architecture import LOTUS_UNET_CONFIG, SD_VAE_CONFIG  # noqa: E402
from lotus_core.prediction.memory import check_fits, memory_budget  # noqa: E402

DEVICE = torch.device("cuda")


class Stop(Exception):
    pass


def model() -> LotusModel:
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config({**LOTUS_UNET_CONFIG, "in_channels": 8}).to(DEVICE, torch.bfloat16)
    vae = AutoencoderKL.from_config(SD_VAE_CONFIG).to(DEVICE, torch.bfloat16)
    return LotusModel(unet.eval(), vae.eval(), "depth", prompt_embeds=torch.randn(1, 2, 1024) * 0.1)


def timed(call) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    call()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    lotus = model()
    print(f"{torch.cuda.get_device_name()}, torch {torch.version.__version__}\n")
    print("| processing px | plain s (median of 3) | with hooks s | overhead | bit-identical |")
    print("|---|---|---|---|---|")
    for resolution in (768, 2048):
        image = torch.rand(1, 3, resolution * 3 // 4, resolution, generator=torch.Generator().manual_seed(1))
        plain = lambda: predict(lotus, image, processing_resolution=resolution, seed=0)  # noqa: E731
        hooked = lambda: predict(lotus, image, processing_resolution=resolution, seed=0,  # noqa: E731
                                 callback=lambda done, total: None, check_interrupt=lambda: None)
        plain()
        same = torch.equal(plain().values, hooked().values)
        a = statistics.median(timed(plain) for _ in range(3))
        b = statistics.median(timed(hooked) for _ in range(3))
        print(f"| {resolution} | {a:.3f} | {b:.3f} | {100 * (b / a - 1):+.1f} % | {same} |")

    print("\n| processing px | run s | stop requested at s | exception after ms | GPU idle after ms |")
    print("|---|---|---|---|---|")
    for resolution in (2048, 4096):
        image = torch.rand(1, 3, resolution * 3 // 4, resolution, generator=torch.Generator().manual_seed(2))
        run = timed(lambda: predict(lotus, image, processing_resolution=resolution, seed=0))
        stop, raised = threading.Event(), {}

        def check():
            if stop.is_set():
                raise Stop

        def work():
            try:
                predict(lotus, image, processing_resolution=resolution, seed=0, check_interrupt=check)
            except Stop:
                raised["at"] = time.perf_counter()
                torch.cuda.synchronize()
                raised["idle"] = time.perf_counter()

        thread = threading.Thread(target=work)
        thread.start()
        time.sleep(run / 2)
        asked = time.perf_counter()
        stop.set()
        thread.join()
        print(f"| {resolution} | {run:.2f} | {run / 2:.2f} | {1e3 * (raised['at'] - asked):.1f} |"
              f" {1e3 * (raised['idle'] - asked):.1f} |")

    budget = memory_budget(DEVICE)
    print(f"\nmemory guard, budget {budget / 1e9:.1f} GB (3/4 of free), bf16 VAE, a 4:3 image of 8000x6000:")
    for resolution in (4096, 8192, 16384, 32768):
        try:
            check_fits((6000, 8000), resolution, 2, budget)
            print(f"- {resolution}: accepted")
        except LotusError as error:
            print(f"- {resolution}: refused: {error}")
    image = torch.rand(1, 3, 384, 512)
    try:
        predict(lotus, image, processing_resolution=8192, seed=0)
        print("- 8192 ran to the end")
    except LotusError as error:
        print(f"- 8192 in predict refused: {error}")


if __name__ == "__main__":
    main()
