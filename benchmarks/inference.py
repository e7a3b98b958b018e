"""Inference images/s and batch-1 latency: fp32 and bf16, eager and compiled with frozen weights.

    .venv/bin/python benchmarks/inference.py [--cases alexnet:224,alexnet_cifar:32] [--batches 1,256]
            [--modes fp32,bf16,bf16-autocast,fp32-compiled,bf16-compiled] [--device cpu]

Each configuration runs the model the way ``alexnet evaluate``/``predict`` do (eval mode, inference
mode, channels_last; ``bf16``: weights and inputs stored in bf16; ``bf16-autocast``: fp32 weights under
autocast, as training runs, for comparison; ``-compiled``: ``torch.compile`` with Inductor's
``freezing``) on a ready batch, so the figures are the model's; the preprocessing is benchmarked in
``pipeline.py``. One JSON line per result; batch 1 also reports its latency in ms. ``alexnet evaluate``'s
whole path (uint8 batch in, probabilities out) is reported too, at the largest batch in bf16.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from pathlib import Path

import torch

from alexnet.inference import average_views
from alexnet.models import get_model
from alexnet.runtime import tune_allocator

from common import measure, parse_args, report, report_peaks


def _onnx_model(name: str, size: int, classes: int, folder: Path):
    """``name`` exported as `alexnet export` exports it, run by onnxruntime as `alexnet predict x.onnx` runs it."""
    from alexnet.export import export_onnx
    from alexnet.modelcard import InputSpec, ModelCard
    from alexnet.modeldir import save_model_dir
    from alexnet.onnxmodel import OnnxModel

    card = ModelCard(name, {"num_classes": classes}, tuple(map(str, range(classes))),
                     InputSpec(size, 3, (0.5,) * 3, (0.25,) * 3, size))  # fmt: skip
    save_model_dir(get_model(name, num_classes=classes).eval(), folder, card)
    return OnnxModel(Path(export_onnx(folder, check_images=2)["onnx"]))


def _runner(name: str, size: int, batch: int, mode: str, device: str, folder: Path):
    if mode == "onnx":
        model = _onnx_model(name, size, 10 if size <= 32 else 1000, folder)
        images = torch.randn(batch, 3, size, size)

        def run() -> None:
            model(images)

        return run, model, torch.float32
    autocast = mode.startswith("bf16-autocast")
    dtype = torch.bfloat16 if mode.startswith("bf16") and not autocast else torch.float32
    model = get_model(name, num_classes=10 if size <= 32 else 1000).eval()
    model = model.to(device, dtype=dtype, memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    if mode.endswith("compiled"):
        import torch._inductor.config as inductor

        inductor.freezing = True
        torch._dynamo.reset()
        model = torch.compile(model)
    images = torch.randn(batch, 3, size, size, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    context = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    def step() -> None:
        with torch.inference_mode(), context:
            model(images)

    return step, model, dtype


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="alexnet:224,alexnet_cifar:32")
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--modes", default="fp32,bf16,bf16-autocast,fp32-compiled,bf16-compiled,onnx")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parse_args(parser)
    if args.quick:
        args.cases, args.batches, args.modes, args.repeats = "alexnet_cifar:32", "1,8", "fp32,bf16,onnx", 1
    tune_allocator()
    report_peaks()
    for case in args.cases.split(","):
        name, size = case.split(":")
        size = int(size)
        for mode in args.modes.split(","):
            for batch in map(int, args.batches.split(",")):
                with tempfile.TemporaryDirectory() as tmp:
                    step, model, dtype = _runner(name, size, batch, mode, args.device, Path(tmp))
                repeats = args.repeats * (20 if batch == 1 else 1)
                rates = measure(step, items=batch, device=args.device, warmup=3, repeats=repeats)
                extra = {"latency_ms": round(1000 / statistics.median(rates), 2)} if batch == 1 else {}
                report(f"{name} {size}px batch {batch} {mode}", rates, device=args.device, **extra)
                if batch == max(map(int, args.batches.split(","))) and mode == "bf16":
                    # evaluate's whole path: uint8 stored images -> normalised views -> softmax.
                    stored = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=args.device)
                    from alexnet.data.augment import Preprocess

                    prep = Preprocess(image_size=size, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3, flip=False)
                    rates = measure(
                        lambda: average_views(model, prep.evaluate(stored, dtype=dtype)),  # noqa: B023
                        items=batch, device=args.device, warmup=2, repeats=args.repeats,
                    )  # fmt: skip
                    report(f"{name} {size}px batch {batch} bf16, uint8 in -> probabilities out", rates)


if __name__ == "__main__":
    main()
