#!/usr/bin/python3
"""Copied from the shared bench folder for `deno task bench cpu` (bench/cpu.ts).

CPU anchor: the SD 1.5 CLIP ViT-L/14 text encoder with LoRA r16 on q/k/v/out, random weights,
batch 2 x 77, forward and forward + backward into the LoRA, in plain PyTorch (Debian's
python3-torch, CPU). Same workload as `deno task bench clip`. Also raw fp32 matmul
and 3x3 conv throughput. Prints JSON. Usage: OPENBLAS_NUM_THREADS=2 /usr/bin/python3 torch_cpu_anchor.py 1
(needs: apt-get install python3-torch libopenblas0-pthread; Debian's default BLAS is ~30x slower)

With --serve (added for bench/cpu.ts's turns), it builds the model, prints "@@turn ready", then
answers one stdin line at a time: "fwd N" / "fb N" time N calls and print "@@turn [ms, ...]";
"extras" prints "@@turn {...}", the figures above without the CLIP rows; "quit" ends."""
import json, statistics, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

threads = int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads()
torch.set_num_threads(threads)
torch.manual_seed(0)
D, M, L, H, T, V, R = 768, 3072, 12, 12, 77, 49408, 16


class LoraLinear(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.base = nn.Linear(i, o)
        self.base.requires_grad_(False)
        self.a = nn.Parameter(torch.randn(R, i) * 0.01)
        self.b = nn.Parameter(torch.randn(o, R) * 0.01)

    def forward(self, x):
        return self.base(x) + (x @ self.a.t()) @ self.b.t()


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.q, self.k, self.v, self.o = (LoraLinear(D, D) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(D, M), nn.Linear(M, D)
        for p in [*self.ln1.parameters(), *self.ln2.parameters(), *self.fc1.parameters(), *self.fc2.parameters()]:
            p.requires_grad_(False)

    def forward(self, x, mask):
        b = x.shape[0]
        h = self.ln1(x)
        q = self.q(h).view(b, T, H, D // H).transpose(1, 2) * (D // H) ** -0.5
        k = self.k(h).view(b, T, H, D // H).transpose(1, 2)
        v = self.v(h).view(b, T, H, D // H).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) + mask, -1) @ v
        x = x + self.o(a.transpose(1, 2).reshape(b, T, D))
        h = self.fc1(self.ln2(x))
        h = h * torch.sigmoid(1.702 * h)
        return x + self.fc2(h)


class TextModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok, self.pos = nn.Embedding(V, D), nn.Embedding(T, D)
        self.layers = nn.ModuleList(Layer() for _ in range(L))
        self.ln = nn.LayerNorm(D)
        for p in [*self.tok.parameters(), *self.pos.parameters(), *self.ln.parameters()]:
            p.requires_grad_(False)
        self.register_buffer("mask", torch.full((T, T), float("-inf")).triu(1))

    def forward(self, ids):
        x = self.tok(ids) + self.pos.weight[None]
        for l in self.layers:
            x = l(x, self.mask)
        return self.ln(x)


def med(fn, n=5):
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(); ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


m = TextModel()
ids = torch.randint(0, V, (2, T))


def fwd_call():
    with torch.no_grad():
        m(ids)


def fb():
    m.zero_grad(set_to_none=True)
    m(ids).square().mean().backward()


def extras():
    a = torch.randn(512, 512); b = torch.randn(512, 512)
    mm512 = med(lambda: a @ b, 20)
    a2 = torch.randn(2048, 2048); b2 = torch.randn(2048, 2048)
    mm2048 = med(lambda: a2 @ b2, 5)
    x = torch.randn(2, 320, 64, 64); w = torch.randn(320, 320, 3, 3)
    with torch.no_grad():
        conv = med(lambda: F.conv2d(x, w, padding=1), 5)
    return {
        "torch": torch.__version__, "threads": threads,
        "matmul512_gflops": round(2 * 512**3 / mm512 / 1e6, 1),
        "matmul2048_gflops": round(2 * 2048**3 / mm2048 / 1e6, 1),
        "conv3x3_2x320x64x64_gflops": round(2 * 2 * 320 * 320 * 9 * 64 * 64 / conv / 1e6, 1),
    }


def timed(fn, n):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(); ts.append(round((time.perf_counter() - t) * 1e3, 2))
    return ts


if "--serve" in sys.argv:
    for _ in range(2):
        fwd_call(); fb()
    print("@@turn ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "extras":
            print("@@turn " + json.dumps(extras()), flush=True)
        else:
            print("@@turn " + json.dumps(timed(fwd_call if cmd[0] == "fwd" else fb, int(cmd[1]))), flush=True)
    sys.exit(0)

fwd = med(fwd_call)
fwdbwd = med(fb)
print(json.dumps({**extras(), "clip_text_fwd_ms": round(fwd, 1), "clip_text_fwd_bwd_ms": round(fwdbwd, 1)}))
