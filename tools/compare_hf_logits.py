#!/usr/bin/env python3
"""Checks a Canopy export against Hugging Face transformers.

Loads DIR (model.safetensors + config.json written by `canopy-node train --export DIR`) with
`BloomForCausalLM`, runs the bytes of TEXT through it, and compares the logits with the ones
Canopy computes (`cargo run --release -p canopy-shaders --example logits -- DIR TEXT`, given
as a JSON file). Needs `pip install torch transformers`; not part of the test suite, which
must run without them.

usage: compare_hf_logits.py DIR CANOPY_LOGITS.json
"""
import json
import sys

import torch
from transformers import BloomForCausalLM


def main() -> int:
    model_dir, logits_file = sys.argv[1], sys.argv[2]
    with open(logits_file) as f:
        canopy = json.load(f)
    model = BloomForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.eval()
    ids = torch.tensor([canopy["ids"]], dtype=torch.long)
    with torch.no_grad():
        hf = model(input_ids=ids).logits[0]
    ours = torch.tensor(canopy["logits"], dtype=torch.float32)
    diff = (hf - ours).abs().max().item()
    scale = ours.abs().max().item()
    agree = (hf.argmax(-1) == ours.argmax(-1)).float().mean().item()
    print(json.dumps({"max_abs_diff": diff, "max_abs_logit": scale,
                      "relative": diff / scale, "argmax_agreement": agree,
                      "shape": list(hf.shape)}))
    return 0 if diff / scale < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
