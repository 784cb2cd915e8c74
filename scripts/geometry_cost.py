"""What exact geometry costs: predict's time with geometry="exact" vs "reference" on full-size random
Lotus-D networks (real SD2 UNet and SD VAE architecture), same inputs, same process.

    python scripts/geometry_cost.py [--device cuda] [--repeats 5]

Exact geometry pads the processed image to a multiple of 8 (at most 7 rows and 7 columns), so the
networks see a little more; the table prints the processed pixels, the median times and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lotus_core  # noqa: E402
from lotus_core.loading.architecture import LOTUS_UNET_CONFIG, SD_VAE_CONFIG  # noqa: E402
from lotus_core.prediction.images import processing_size  # noqa: E402

CASES = [("4096x2160 photo at 768", 2160, 4096, 768), ("317x251 native", 251, 317, 0),
         ("1000x750 at 768", 750, 1000, 768)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(LOTUS_UNET_CONFIG).to(device, dtype).eval()
    vae = AutoencoderKL.from_config(SD_VAE_CONFIG).to(device, dtype).eval()
    model = lotus_core.LotusModel(unet, vae, "depth", prompt_embeds=torch.randn(1, 2, 1024) * 0.1)

    def seconds(image, resolution, geometry) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        lotus_core.predict(model, image, processing_resolution=resolution, seed=0, encode="mean", geometry=geometry)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), {dtype},"
          f" median of {args.repeats}\n")
    print("| input | processed | exact px / reference px | reference s | exact s | exact / reference |")
    print("|---|---|---|---|---|---|")
    for name, height, width, resolution in CASES:
        image = torch.rand(1, 3, height, width)
        h, w = processing_size(height, width, resolution)
        ratio = (-(-h // 8) * -(-w // 8)) / ((h // 8) * (w // 8))
        for geometry in ("reference", "exact"):  # warm-up: kernels for both shapes
            seconds(image, resolution, geometry)
        runs = {"reference": [], "exact": []}
        for _ in range(args.repeats):  # interleaved, so drift in the machine's speed hits both alike
            for geometry, times in runs.items():
                times.append(seconds(image, resolution, geometry))
        times = {geometry: statistics.median(values) for geometry, values in runs.items()}
        print(f"| {name} | {w}x{h} | {ratio:.4f} | {times['reference']:.3f} | {times['exact']:.3f} |"
              f" {times['exact'] / times['reference']:.3f} |")


if __name__ == "__main__":
    main()
