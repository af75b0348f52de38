"""cuBLAS/cuDNN reference for bench_compute's TB_BENCH_SWEEP=1 lines, on the same GPU in the same call.

Prints `torch_<precision>_<op>,<shape>,<ms>,<GFLOP/s>` for square GEMMs 512-8192 in fp32 (TF32 off),
TF32 and fp16 (tensor cores), the 3x3 convolution 32x64x56x56 -> 64 in the same three, and the seed
MLP at batch 4096 and 65536 in fp32 and TF32. Needs torch with CUDA
(the lent GPU machine has it); exits 77 without a GPU.
"""
import sys
import time

try:
    import torch
except ImportError:
    print("SKIPPED: no torch")
    sys.exit(77)
if not torch.cuda.is_available():
    print("SKIPPED: no CUDA device")
    sys.exit(77)

dev = "cuda"
torch.manual_seed(0)
print("torch", torch.__version__, torch.cuda.get_device_name(0))


def timed_ms(f, budget_s=1.0):
    """Mean milliseconds per call after two warm-up calls, for about budget_s seconds."""
    f()
    f()
    torch.cuda.synchronize()
    reps, t0 = 0, time.perf_counter()
    while reps < 4000:
        for _ in range(4):
            f()
        reps += 4
        torch.cuda.synchronize()
        if time.perf_counter() - t0 > budget_s:
            break
    return (time.perf_counter() - t0) * 1e3 / reps


def line(tag, shape, ms, flops):
    print(f"torch_{tag},{shape},{ms:.4f},{flops / ms / 1e6:.1f}")


for tag, dtype, tf32 in (("float32", torch.float32, False), ("tf32", torch.float32, True),
                         ("float16", torch.float16, False)):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    for n in (512, 1024, 2048, 4096, 8192):
        a = torch.randn(n, n, device=dev, dtype=dtype)
        b = torch.randn(n, n, device=dev, dtype=dtype)
        line(f"{tag}_gemm", f"{n}x{n}x{n}", timed_ms(lambda: a @ b), 2 * n**3)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(dev, dtype)
    x = torch.randn(32, 64, 56, 56, device=dev, dtype=dtype)
    with torch.no_grad():
        line(f"{tag}_conv3x3", "32x64x56x56", timed_ms(lambda: conv(x)), 2 * 32 * 64 * 64 * 9 * 56 * 56)
    if dtype == torch.float16:
        continue
    for batch in (4096, 65536):
        net = torch.nn.Sequential(torch.nn.Linear(20, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).to(dev)
        x = torch.randn(batch, 20, device=dev)
        with torch.no_grad():
            line(f"{tag}_mlp", f"batch{batch}", timed_ms(lambda: net(x)), 2 * batch * (20 * 256 + 256 * 10))
