"""Reading the Lotus-2 release files: the two LoRAs (diffusers LoRA format) and the LCM state dict.

The LoRA files hold ``transformer.<module>.lora_A.weight`` [r, in] and ``…lora_B.weight`` [out, r]
pairs (older diffusers names are converted as the official loader converts them), applied with
``lora_alpha`` = r (scale 1). The two tasks share one layout and differ
only in their rank (depth 128, normal 256), which is how a file is told to belong to a task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import LotusError, check_choice
from ..loading.checkpoint import read_state_dict
from .releases import TASK_LORA_RANK, TASKS

LORA_PREFIX = "transformer."
LORA_DOWN, LORA_UP = ".lora_A.weight", ".lora_B.weight"


@dataclass(frozen=True)
class Lotus2Lora:
    """One LoRA file: its tensors under the file's own keys, and the rank and modules they adapt."""

    state_dict: dict[str, torch.Tensor]
    rank: int
    modules: tuple[str, ...]  # diffusers module names inside the transformer, e.g. "transformer_blocks.0.attn.to_q"
    source: str

    @property
    def task(self) -> str | None:
        """The task whose official rank this LoRA has (None for another rank)."""
        return next((task for task, rank in TASK_LORA_RANK.items() if rank == self.rank), None)

    def require_task(self, task: str) -> None:
        """Refuse a LoRA of the other task (e.g. a normal LoRA where depth is asked)."""
        check_choice("task", task, TASKS)
        if self.task is not None and self.task != task:
            raise LotusError(
                f"{self.source} is a Lotus-2 {self.task} LoRA (rank {self.rank}) but {task} was asked;"
                f" use the lotus-2_*_{task}.safetensors files (rank {TASK_LORA_RANK[task]})"
            )

    def transformer_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors under the transformer's own module names (the ``transformer.`` prefix removed)."""
        return {key[len(LORA_PREFIX):]: value for key, value in self.state_dict.items()}


def read_lora(path: str | Path) -> Lotus2Lora:
    """A Lotus-2 LoRA file, checked: diffusers LoRA keys under ``transformer.``, one rank throughout."""
    path = Path(path)
    state_dict = read_state_dict(path)
    return lora_from_state_dict(state_dict, repr(path.name))


def lora_from_state_dict(state_dict: dict[str, torch.Tensor], source: str) -> Lotus2Lora:
    from diffusers.utils import convert_unet_state_dict_to_peft

    # The official loader passes the file through diffusers' converter (older diffusers names such as
    # ".lora.down.weight" become lora_A) and fixes lora_alpha = rank, so alpha tensors play no part.
    state_dict = convert_unet_state_dict_to_peft({k: v for k, v in state_dict.items() if not k.endswith(".alpha")})
    strays = [key for key in state_dict if not (key.startswith(LORA_PREFIX) and key.endswith((LORA_DOWN, LORA_UP)))]
    if strays or not state_dict:
        example = f" (e.g. {strays[0]!r})" if strays else ""
        raise LotusError(
            f"{source} is not a Lotus-2 LoRA: it must hold only 'transformer.<module>.lora_A.weight' and"
            f" '.lora_B.weight' tensors (diffusers LoRA format for FLUX), found {len(strays)} other keys{example}"
        )
    modules = sorted({key[len(LORA_PREFIX):].rsplit(".", 2)[0] for key in state_dict})
    ranks = set()
    for module in modules:
        down, up = (state_dict.get(f"{LORA_PREFIX}{module}{suffix}") for suffix in (LORA_DOWN, LORA_UP))
        if down is None or up is None or down.ndim != 2 or up.ndim != 2 or up.shape[1] != down.shape[0]:
            raise LotusError(f"{source}: the LoRA of {module!r} needs a lora_A [r, in] and a lora_B [out, r] tensor")
        ranks.add(down.shape[0])
    if len(ranks) != 1:
        raise LotusError(f"{source} mixes LoRA ranks {sorted(ranks)}; a Lotus-2 LoRA has one rank")
    return Lotus2Lora(state_dict, ranks.pop(), tuple(modules), source)


class LocalContinuityModule(torch.nn.Module):
    """Lotus-2's LCM on the unpacked latent: ``x + conv3x3(2C→C)(GELU(conv3x3(C→2C)(x)))``.

    The layers sit in ``self.lcm`` (indices 0 and 2) so that the release's state dict loads as it is.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.lcm = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            torch.nn.GELU(),
            torch.nn.Conv2d(2 * channels, channels, kernel_size=3, padding=1),
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        # the official module runs in its own dtype, whatever the transformer handed over
        latent = latent.to(self.lcm[0].weight.dtype)
        return latent + self.lcm(latent)


def read_lcm(path: str | Path, channels: int = 16) -> LocalContinuityModule:
    """The LCM of a ``lotus-2_lcm_*.safetensors`` file for a ``channels``-channel latent (FLUX: 16)."""
    path = Path(path)
    return lcm_from_state_dict(read_state_dict(path), channels, repr(path.name))


def lcm_from_state_dict(state_dict: dict[str, torch.Tensor], channels: int, source: str) -> LocalContinuityModule:
    module = LocalContinuityModule(channels)
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state_dict.items()}
    if found != expected:
        raise LotusError(
            f"{source} is not a Lotus-2 LCM for a {channels}-channel latent: expected tensors {expected},"
            f" found {found}"
        )
    module.load_state_dict(state_dict)
    return module.eval().requires_grad_(False)
