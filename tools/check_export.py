#!/usr/bin/env python3
"""Checks a Canopy export against Hugging Face transformers, an independent implementation
of BLOOM and of byte-level BPE.

    python3 check_export.py EXPORT_DIR EXPECTED_JSON

EXPECTED_JSON holds what Canopy computed for a text: {"text": ..., "ids": [...], "logits":
[[...], ...]}, as `cargo run --release -p canopy-shaders --example logits -- DIR TEXT` prints
it (the e2e tests write it in-process). Needs `pip install torch transformers`.
The script loads the directory as it is with AutoTokenizer and BloomForCausalLM, checks that
the tokenizer gives the same ids and decodes them back, that the logits agree, and that
pipeline("text-generation") runs. It prints one JSON line with what it found and exits
non-zero when a check fails.
"""

import json
import sys

import torch
from transformers import AutoTokenizer, BloomForCausalLM, pipeline


def main(export_dir, expected_path):
    with open(expected_path, encoding="utf-8") as f:
        expected = json.load(f)
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    model = BloomForCausalLM.from_pretrained(export_dir, torch_dtype=torch.float32)
    model.eval()
    ids = tokenizer(expected["text"], add_special_tokens=False)["input_ids"]
    decoded = tokenizer.decode(ids)
    with torch.no_grad():
        logits = model(torch.tensor([expected["ids"]])).logits[0]
    want = torch.tensor(expected["logits"])
    max_diff = float((logits - want).abs().max())
    relative = max_diff / max(float(want.abs().max()), 1e-12)
    generator = pipeline("text-generation", model=export_dir, tokenizer=export_dir)
    generated = generator(expected["text"], max_new_tokens=16, do_sample=False)[0]["generated_text"]
    report = {
        "same_ids": ids == expected["ids"],
        "round_trip": decoded == expected["text"],
        "vocab_size": len(tokenizer),
        "max_logit_diff": max_diff,
        "relative_logit_diff": relative,
        "generated": generated,
    }
    print(json.dumps(report, ensure_ascii=False))
    ok = report["same_ids"] and report["round_trip"] and relative < 1e-4
    ok = ok and generated.startswith(expected["text"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
