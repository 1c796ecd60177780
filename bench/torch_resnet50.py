#!/usr/bin/env python3
"""PyTorch reference throughput of a ResNet-50, for bench/train.ts --depth 50 (e.g. --size 224 --batch 32).

Why this file exists: ../shared/bench/torch_reference.py (outside the repository, not ours to edit) builds
only a ResNet-18. This script keeps its method unchanged by running its own main(): the same flags
(--size --batch --classes --threads --steps --warmup --bf16), the same fixed synthetic batch, timing loop,
SGD with Nesterov momentum 0.9 and weight decay 1e-4 on conv and dense kernels only, and the same JSON
line (with "model": "resnet50"). Only the network differs: the model class main() instantiates is
replaced by ResNet50 below, a ResNet v1 with bottleneck blocks as lib/model.ts builds it after
tensorflow/tpu's resnet_model.py: stages of 3, 4, 6, 3 blocks of 1x1 / 3x3 / 1x1 convolutions with
4x expansion, the stride on the 3x3 convolution, and a projection shortcut (1x1 conv + BN) on the
first block of every stage.

Run:  /usr/bin/python3 bench/torch_resnet50.py --size 224 --batch 32 --classes 5 --threads 2
The reference is looked up at ../shared/bench/torch_reference.py beside the repository, or at
$IMGCLASS_TORCH_REFERENCE.
"""
import contextlib, importlib.util, io, json, os, sys
from pathlib import Path

import torch, torch.nn as nn, torch.nn.functional as F


def load_reference():
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "torch_reference.py"
    path = Path(os.environ.get("IMGCLASS_TORCH_REFERENCE", default))
    if not path.is_file():
        sys.exit(f"torch_reference.py not found at {path}: set IMGCLASS_TORCH_REFERENCE to its path")
    spec = importlib.util.spec_from_file_location("torch_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, "ResNet18") or not hasattr(mod, "main"):
        sys.exit(f"{path} no longer defines ResNet18 and main(): update bench/torch_resnet50.py to match it")
    return mod


class Bottleneck(nn.Module):
    def __init__(self, cin, filters, stride, projection):
        super().__init__()
        cout = 4 * filters
        self.c1 = nn.Conv2d(cin, filters, 1, 1, 0, bias=False); self.b1 = nn.BatchNorm2d(filters)
        self.c2 = nn.Conv2d(filters, filters, 3, stride, 1, bias=False); self.b2 = nn.BatchNorm2d(filters)
        self.c3 = nn.Conv2d(filters, cout, 1, 1, 0, bias=False); self.b3 = nn.BatchNorm2d(cout)
        self.short = None
        if projection:  # tensorflow/tpu: the first block of every stage
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = F.relu(self.b2(self.c2(y)))
        y = self.b3(self.c3(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNet50(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for i, (filters, count) in enumerate(zip([64, 128, 256, 512], [3, 4, 6, 3])):
            for j in range(count):
                blocks.append(Bottleneck(cin, filters, 2 if (j == 0 and i > 0) else 1, j == 0)); cin = 4 * filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


def main():
    ref = load_reference()
    ref.ResNet18 = ResNet50  # main() builds whatever this name holds
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ref.main()
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    line["model"] = "resnet50"
    print(json.dumps(line))


if __name__ == "__main__":
    main()
