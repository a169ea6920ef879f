"""Adapters and models out to the ecosystem and back, from the command line or from Python.

    python -m rallrec_jax.convert to-peft   --model M --adapters workdir/finetune/simple/<fp>/best --out peft_dir
    python -m rallrec_jax.convert merged    --model M [--adapters A] --out hf_dir [--dtype bfloat16]
    python -m rallrec_jax.convert from-peft --model M --adapters peft_dir --out our_adapters_dir

M is the base model as the configs name it (an HF folder, a .gguf file, a hub name "org/model[@revision]",
or "" for the bundled SmolLM2-135M-Instruct). `--adapters` is either format: a PEFT folder (it holds
adapter_config.json) or a folder of this library's saved adapters (lora_config.json says their layout); so
`from-peft` turns, e.g., the official RALLRec LoRA into a folder that `evaluate.adapters` takes.
"""
from __future__ import annotations

import argparse
import os
import pathlib

from rallrec_jax import assets, checkpoint
from rallrec_jax.llm import peft
from rallrec_jax.llm.model import Llm


def load_adapters(folder: str | os.PathLike, model: Llm, *, check_base: bool = True) -> Llm:
    """Either adapter format into `model` (unmerged): a PEFT folder or hub name (adapter_config.json), else a
    folder of our saved adapters (`checkpoint.restore_adapters`, newest good step). Returns the model."""
    path = pathlib.Path(folder).expanduser()
    if not path.exists() or (path / peft.CONFIG_FILE).is_file():
        return peft.load_peft(folder, model, check_base=check_base)
    checkpoint.restore_adapters(path, model, check_base=check_base)
    return model


def load_model(model: str, adapters: str | os.PathLike | None = None, *, check_base: bool = True, **kw) -> Llm:
    """The base model (config naming: "" is the bundled SmolLM2 GGUF) with `adapters` (either format) loaded."""
    from rallrec_jax.llm import weights

    llm = weights.load(model or str(assets.smollm2_gguf()), **kw)
    return load_adapters(adapters, llm, check_base=check_base) if adapters else llm


def main(argv: list[str] | None = None) -> pathlib.Path:
    parser = argparse.ArgumentParser(prog="python -m rallrec_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["to-peft", "merged", "from-peft"])
    parser.add_argument("--model", default="", help='base model: HF folder, .gguf, "org/model[@rev]", "" = SmolLM2')
    parser.add_argument("--adapters", default="", help="PEFT folder (or hub name) or our saved adapters folder")
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--base_model", default="", help="to-peft: the base name to record (default: --model)")
    parser.add_argument("--tokenizer", default="", help="merged: tokenizer source (default: --model)")
    parser.add_argument("--dtype", default="", help="merged: float32, bfloat16 or float16 (default: the model's)")
    parser.add_argument("--no_check_base", action="store_true",
                        help="accept adapters recorded for another base name (the same weights renamed)")
    args = parser.parse_args(argv)
    if args.command != "merged" and not args.adapters:
        parser.error(f"{args.command} needs --adapters")
    model = load_model(args.model, args.adapters or None, check_base=not args.no_check_base)
    if args.command == "to-peft":
        out = peft.export_peft(model, args.out, base_model=args.base_model or None)
    elif args.command == "merged":
        from rallrec_jax.llm import export

        tokenizer = args.tokenizer or args.model or str(assets.smollm2_gguf())
        out = export.export_merged(model, args.out, tokenizer=tokenizer, dtype=args.dtype or None)
    else:
        out = checkpoint.save_adapters(args.out, 0, model, max_to_keep=1)
    print(out)
    return out


if __name__ == "__main__":
    main()
