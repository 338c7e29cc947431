"""Training throughput of registered models (images/s), for sizing CPU recipes.

Times full training steps (forward, loss, backward, AdamW step) on random inputs, so it
measures the model alone; the engine adds augmentation and a validation pass per epoch on
top, so its ``images_per_second`` column in ``metrics.csv`` is lower. Run it on an otherwise
idle machine: a concurrent job skews it badly.

    python benchmarks/train_throughput.py --model compact_cnn --size 48 --batch 64
    python benchmarks/train_throughput.py --model compact_cnn --size 48 \
        --option convs_per_stage=[1,1,2,2] --option width=0.75
"""

from __future__ import annotations

import argparse
import time

import torch
import yaml

from robustfer.models import create_model


def measure(model: torch.nn.Module, size: int, batch: int, in_chans: int, steps: int, warmup: int,
            channels_last: bool, amp_cpu: bool = False) -> float:
    """Images per second over ``steps`` timed training steps after ``warmup`` untimed ones."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, in_chans, size, size)
    y = torch.randint(0, 8, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp_cpu):
            loss = torch.nn.functional.cross_entropy(model(x).logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="compact_cnn")
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--amp-cpu", action="store_true", help="bf16 autocast (train.amp_cpu=true)")
    p.add_argument("--option", "-o", action="append", default=[], help="model option key=value (YAML value)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    opts = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in a.option)}
    model = create_model(a.model, num_classes=8, in_chans=a.in_chans, **opts)
    n = sum(q.numel() for q in model.parameters())
    rates = [measure(model, a.size, a.batch, a.in_chans, a.steps, a.warmup, not a.no_channels_last,
                     a.amp_cpu)
             for _ in range(a.repeats)]
    print(f"{a.model} {opts} {a.size}px batch {a.batch}: {n / 1e6:.2f} M params, "
          f"{torch.get_num_threads()} threads, images/s per repeat: "
          f"{', '.join(f'{r:.0f}' for r in rates)} (median {sorted(rates)[len(rates) // 2]:.0f})")


if __name__ == "__main__":
    main()
