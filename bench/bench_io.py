#!/usr/bin/python3
"""I/O benchmarks against the Python peers. Run through bench/run.sh [SIZE_MB].

Runs with Debian /usr/bin/python3 (torch 1.13, numpy 1.24, h5py, onnx). safetensors lives only in the
peers venv (numpy 2, no torch), so the safetensors inputs and Python-side safetensors timings run there.
Every measurement is its own subprocess: the child prints "seconds=<s>" for the timed operation (after
its imports, so interpreter start-up is never counted against Python), and the parent reads the child's
peak RSS from the OS with os.wait4. Commands timed from outside (our CLI, cp) count their whole wall
time, process start included. Medians of TB_BENCH_RUNS runs (default 3) after TB_BENCH_WARMUP untimed
runs (default 1), page cache warm (each input is also read once before its group). Prints a table with ratios; writes results.json and results.md in the work
folder. Benchmarks only: nothing here asserts a time.
"""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
SYS_PY = "/usr/bin/python3"
PEERS_PY = os.path.expanduser(os.environ.get("TB_PEERS_PYTHON", "~/.cache/tensorbridge/peers-venv/bin/python"))
RUNS = int(os.environ.get("TB_BENCH_RUNS", "3"))
WARMUP = int(os.environ.get("TB_BENCH_WARMUP", "1"))  # untimed runs before each measurement

# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------
GEN_TORCH = r"""
import sys, torch, numpy as np
size_mb, out, which = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.manual_seed(0)
d = 1024
def state_dict(size_mb):
    sd = {"embed.weight": torch.randn(8192, d)}  # 32 MiB, the largest tensor
    for i in range(max(1, (size_mb - 32) // 48)):  # 48 MiB per block
        p = "blocks.%d." % i
        for n in ("q", "k", "v", "o"):
            sd[p + "attn.%s.weight" % n] = torch.randn(d, d)
            sd[p + "attn.%s.bias" % n] = torch.randn(d)
        sd[p + "mlp.fc1.weight"] = torch.randn(4 * d, d)
        sd[p + "mlp.fc1.bias"] = torch.randn(4 * d)
        sd[p + "mlp.fc2.weight"] = torch.randn(d, 4 * d)
        sd[p + "mlp.fc2.bias"] = torch.randn(d)
        for n in ("ln1", "ln2"):
            sd[p + n + ".weight"] = torch.ones(d)
            sd[p + n + ".bias"] = torch.zeros(d)
    return sd
if which == "many":  # 100,000 small tensors
    sd = {"layers.%d.weight" % i: torch.full((4,), float(i)) for i in range(100000)}
    torch.save(sd, out + "/many.pt")
    sys.exit(0)
if which == "scale":
    torch.save(state_dict(size_mb), out + "/scale.pt")
    sys.exit(0)
sd = state_dict(size_mb)
torch.save(sd, out + "/model.pt")
arrays = {k: v.numpy() for k, v in sd.items()}
np.savez(out + "/model.npz", **arrays)
np.save(out + "/model.npy", np.concatenate([a.ravel() for a in arrays.values()]))
import h5py
with h5py.File(out + "/model.h5", "w") as f:
    for k, a in arrays.items():
        f.create_dataset(k, data=a)
import onnx
from onnx import helper, numpy_helper
inits = [numpy_helper.from_array(a, k) for k, a in arrays.items()]
graph = helper.make_graph([], "bench", [], [], initializer=inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
onnx.save_model(model, out + "/model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                location="model.onnx.data", size_threshold=0)
print(max(a.nbytes for a in arrays.values()))
"""

GEN_SAFETENSORS = r"""
import sys, numpy as np
from safetensors.numpy import save_file
out = sys.argv[1]
z = np.load(out + "/model.npz")
save_file({k: z[k] for k in z.files}, out + "/model.safetensors")
"""

# The newer formats, each written by its own framework from the same tensors (model.npz): GGUF by gguf-py,
# a TensorFlow bundle by tf.train.Checkpoint.write, a Keras 3 .keras of Dense layers (1024 <-> 4096, about
# the same bytes) and a TorchScript archive of the same Linear stack (torch.jit.script + save).
GEN_NEW_PEERS = r"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
size_mb, out = int(sys.argv[1]), sys.argv[2]
z = np.load(out + "/model.npz")
arrays = {k: z[k] for k in z.files}
import gguf
w = gguf.GGUFWriter(out + "/model.gguf", "bench")
for k, a in arrays.items():
    w.add_tensor(k, a)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
import tensorflow as tf
tf.train.Checkpoint(**{k.replace(".", "_"): tf.Variable(a) for k, a in arrays.items()}).write(out + "/model_tf")
import keras
keras.utils.set_random_seed(0)
layers = [keras.Input((1024,))]
for i in range(max(1, size_mb // 32)):
    layers += [keras.layers.Dense(4096), keras.layers.Dense(1024)]
keras.Sequential(layers).save(out + "/model.keras")
"""

GEN_NEW_TORCH = r"""
import sys, torch
size_mb, out = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
layers = []
for i in range(max(1, size_mb // 32)):
    layers += [torch.nn.Linear(1024, 4096), torch.nn.Linear(4096, 1024)]
torch.jit.script(torch.nn.Sequential(*layers)).save(out + "/model_ts.pt")
"""

# Extra inputs of the `new` group (written when missing, so an existing work folder gains them): the same
# tensors as GGUF Q8_0, quantized by gguf-py (gguf.quants.quantize; 1-d tensors stay F32), as real GGUF
# files mostly are; and the TorchScript archive's weights as .npz, for the safetensors half of its peer.
GEN_GGUF_Q8_0 = r"""
import sys, numpy as np, gguf
from gguf import GGMLQuantizationType as T
out = sys.argv[1]
z = np.load(out + "/model.npz")
w = gguf.GGUFWriter(out + "/model_q8_0.gguf", "bench")
for k in z.files:
    a = z[k]
    if a.ndim >= 2 and a.shape[-1] % 32 == 0:
        w.add_tensor(k, gguf.quants.quantize(a, T.Q8_0), raw_dtype=T.Q8_0)
    else:
        w.add_tensor(k, a)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
"""

GEN_TS_NPZ = r"""
import sys, torch, numpy as np
sd = torch.jit.load(sys.argv[1] + "/model_ts.pt").state_dict()
np.savez(sys.argv[1] + "/model_ts.npz", **{k: v.numpy() for k, v in sd.items()})
"""

# ------------------------------------------------------------------------------------------------
# Python-side measurements: each prints seconds=<s> for the timed part only.
# ------------------------------------------------------------------------------------------------
PY_LOAD = {
    "pt": (SYS_PY, r"""
import sys, time, torch
t0 = time.perf_counter(); sd = torch.load(sys.argv[1], weights_only=True); t1 = time.perf_counter()
print("seconds=%f tensors=%d" % (t1 - t0, len(sd)))"""),
    "npz": (SYS_PY, r"""
import sys, time, numpy as np
t0 = time.perf_counter()
with np.load(sys.argv[1]) as z: sd = {k: z[k] for k in z.files}
t1 = time.perf_counter(); print("seconds=%f tensors=%d" % (t1 - t0, len(sd)))"""),
    "npy": (SYS_PY, r"""
import sys, time, numpy as np
t0 = time.perf_counter(); a = np.load(sys.argv[1]); t1 = time.perf_counter()
print("seconds=%f tensors=1" % (t1 - t0))"""),
    "h5": (SYS_PY, r"""
import sys, time, h5py
t0 = time.perf_counter()
sd = {}
with h5py.File(sys.argv[1], "r") as f:
    f.visititems(lambda k, o: sd.__setitem__(k, o[()]) if isinstance(o, h5py.Dataset) else None)
t1 = time.perf_counter(); print("seconds=%f tensors=%d" % (t1 - t0, len(sd)))"""),
    "onnx": (SYS_PY, r"""
import sys, time, onnx
from onnx import numpy_helper
t0 = time.perf_counter()
m = onnx.load(sys.argv[1])
sd = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
t1 = time.perf_counter(); print("seconds=%f tensors=%d" % (t1 - t0, len(sd)))"""),
    "safetensors": (PEERS_PY, r"""
import sys, time
from safetensors.numpy import load_file
t0 = time.perf_counter(); sd = load_file(sys.argv[1]); t1 = time.perf_counter()
print("seconds=%f tensors=%d" % (t1 - t0, len(sd)))"""),
}

# Loads of the newer formats by their own frameworks (every tensor in memory, as ours owned load).
PY_LOAD_NEW = {
    "gguf": (PEERS_PY, r"""
import sys, time, numpy as np
from gguf import GGUFReader
t0 = time.perf_counter()
sd = {t.name: np.array(t.data) for t in GGUFReader(sys.argv[1]).tensors}
t1 = time.perf_counter(); print("seconds=%f tensors=%d" % (t1 - t0, len(sd)))"""),
    "gguf-q8_0": (PEERS_PY, r"""
import sys, time
from gguf import GGUFReader
from gguf.quants import dequantize
t0 = time.perf_counter()
sd = {t.name: dequantize(t.data, t.tensor_type) for t in GGUFReader(sys.argv[1]).tensors}
t1 = time.perf_counter(); print("seconds=%f tensors=%d" % (t1 - t0, len(sd)))"""),
    "tf-checkpoint": (PEERS_PY, r"""
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
t0 = time.perf_counter()
r = tf.train.load_checkpoint(sys.argv[1][:-len(".index")])
sd = {k: r.get_tensor(k) for k, d in r.get_variable_to_dtype_map().items() if d != tf.string}
t1 = time.perf_counter(); print("seconds=%f tensors=%d" % (t1 - t0, len(sd)))"""),
    "keras": (PEERS_PY, r"""
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
t0 = time.perf_counter()
m = keras.saving.load_model(sys.argv[1])
sd = [w.numpy() for w in m.weights]
t1 = time.perf_counter(); print("seconds=%f tensors=%d" % (t1 - t0, len(sd)))"""),
    "torchscript": (SYS_PY, r"""
import sys, time, torch
t0 = time.perf_counter(); sd = torch.jit.load(sys.argv[1]).state_dict(); t1 = time.perf_counter()
print("seconds=%f tensors=%d" % (t1 - t0, len(sd)))"""),
}

# The writers of .pt -> GGUF / TF bundle in Python: torch.load (system python, PY_LOAD["pt"]) plus the
# framework's writer of the same arrays (peers venv), as for safetensors.
PY_SAVE_NEW = {
    "gguf": r"""
import sys, time, numpy as np, gguf
with np.load(sys.argv[1]) as z: sd = {k: z[k] for k in z.files}
t0 = time.perf_counter()
w = gguf.GGUFWriter(sys.argv[2], "bench")
for k, a in sd.items(): w.add_tensor(k, a)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
t1 = time.perf_counter(); print("seconds=%f" % (t1 - t0))""",
    "tf-checkpoint": r"""
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, tensorflow as tf
with np.load(sys.argv[1]) as z: sd = {k: z[k] for k in z.files}
t0 = time.perf_counter()
tf.train.Checkpoint(**{k.replace(".", "_"): tf.Variable(a) for k, a in sd.items()}).write(sys.argv[2])
t1 = time.perf_counter(); print("seconds=%f" % (t1 - t0))""",
}

# X -> safetensors in Python: the framework's load of every tensor, then safetensors.numpy.save_file
# (timed together). TorchScript's torch and safetensors live in different interpreters: torch.jit.load
# (PY_LOAD_NEW) plus save_file of the same arrays from model_ts.npz, summed.
PY_TO_SAFETENSORS_SAVE = r"""
t0 = time.perf_counter()
from safetensors.numpy import save_file
save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, sys.argv[2])
t1 = time.perf_counter(); print("seconds=%f" % (t1 - t0 + load_seconds))"""
PY_TO_SAFETENSORS = {
    "gguf": r"""
import sys, time, numpy as np
from gguf import GGUFReader
t0 = time.perf_counter()
sd = {t.name: np.array(t.data) for t in GGUFReader(sys.argv[1]).tensors}
load_seconds = time.perf_counter() - t0""",
    "gguf-q8_0": r"""
import sys, time, numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
t0 = time.perf_counter()
sd = {t.name: dequantize(t.data, t.tensor_type) for t in GGUFReader(sys.argv[1]).tensors}
load_seconds = time.perf_counter() - t0""",
    "tf-checkpoint": r"""
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, tensorflow as tf
t0 = time.perf_counter()
r = tf.train.load_checkpoint(sys.argv[1][:-len(".index")])
sd = {k: r.get_tensor(k) for k, d in r.get_variable_to_dtype_map().items() if d != tf.string}
load_seconds = time.perf_counter() - t0""",
    "keras": r"""
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, keras
t0 = time.perf_counter()
m = keras.saving.load_model(sys.argv[1])
sd = {w.path: w.numpy() for w in m.weights}
load_seconds = time.perf_counter() - t0""",
    "torchscript": r"""
import sys, time, numpy as np
with np.load(sys.argv[1]) as z: sd = {k: z[k] for k in z.files}
load_seconds = 0.0""",
}

# Lazy / memory-mapped opens the peers offer (torch 1.13 has no mmap: torch.load(mmap=True) is 2.1+).
PY_OPEN = {
    "npy": (SYS_PY, r"""
import sys, time, numpy as np
t0 = time.perf_counter(); a = np.load(sys.argv[1], mmap_mode="r"); t1 = time.perf_counter()
print("seconds=%f tensors=1" % (t1 - t0))"""),
    "safetensors": (PEERS_PY, r"""
import sys, time
from safetensors import safe_open
t0 = time.perf_counter()
with safe_open(sys.argv[1], "np") as f: sd = {k: f.get_slice(k) for k in f.keys()}
t1 = time.perf_counter(); print("seconds=%f tensors=%d" % (t1 - t0, len(sd)))"""),
}

# .pt -> X with the Python libraries (the torch.load is part of the conversion, as in ours).
PY_CONVERT = {
    "npz": r"""
import sys, time, torch, numpy as np
t0 = time.perf_counter()
sd = torch.load(sys.argv[1], weights_only=True)
np.savez(sys.argv[2], **{k: v.numpy() for k, v in sd.items()})
t1 = time.perf_counter(); print("seconds=%f" % (t1 - t0))""",
    "h5": r"""
import sys, time, torch, h5py
t0 = time.perf_counter()
sd = torch.load(sys.argv[1], weights_only=True)
with h5py.File(sys.argv[2], "w") as f:
    for k, v in sd.items(): f.create_dataset(k, data=v.numpy())
t1 = time.perf_counter(); print("seconds=%f" % (t1 - t0))""",
    "onnx": r"""
import sys, os, time, torch, onnx
from onnx import helper, numpy_helper
t0 = time.perf_counter()
sd = torch.load(sys.argv[1], weights_only=True)
inits = [numpy_helper.from_array(v.numpy(), k) for k, v in sd.items()]
m = helper.make_model(helper.make_graph([], "bench", [], [], initializer=inits))
onnx.save_model(m, sys.argv[2], save_as_external_data=True, all_tensors_to_one_file=True,
                location=os.path.basename(sys.argv[2]) + ".data", size_threshold=1024)
t1 = time.perf_counter(); print("seconds=%f" % (t1 - t0))""",
}
# No interpreter here has both torch and safetensors: the Python .pt -> .safetensors time is the sum of
# torch.load (system python) and safetensors.numpy.save_file of the same tensors (peers venv).
PY_SAVE_SAFETENSORS = r"""
import sys, time, numpy as np
from safetensors.numpy import save_file
with np.load(sys.argv[1]) as z: sd = {k: z[k] for k in z.files}
t0 = time.perf_counter(); save_file(sd, sys.argv[2]); t1 = time.perf_counter()
print("seconds=%f" % (t1 - t0))"""


# ------------------------------------------------------------------------------------------------
def read_anon(pid):
    """RssAnon of a live process in bytes (0 when it is gone)."""
    try:
        with open("/proc/%d/status" % pid) as st:
            for line in st:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_once(cmd, inner):
    """Runs cmd; returns (seconds, peak_rss_bytes, peak_anon_bytes, stdout). inner: take seconds from the
    child's output. Peak RSS is the OS's ru_maxrss (mapped file pages included); peak anonymous memory
    (heap, copies) is sampled from /proc every 5 ms, so it can miss a short spike."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err)
        anon = 0
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            anon = max(anon, read_anon(p.pid))
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read().decode(errors="replace")
        if p.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode,
                                                       err.read().decode(errors="replace")[-2000:]))
    secs = wall
    if inner:
        m = re.search(r"seconds=([0-9.e+-]+)", text)
        if not m:
            raise RuntimeError("%s printed no seconds=: %s" % (" ".join(cmd), text[-500:]))
        secs = float(m.group(1))
    return secs, ru.ru_maxrss * 1024, anon, text


FAILURES = []


def measure(cmd, inner=True, runs=RUNS, warm=(), before=None):
    try:
        return measure_or_raise(cmd, inner, runs, warm, before)
    except RuntimeError as e:
        FAILURES.append(str(e).splitlines()[0][:300])
        print("  FAILED: " + FAILURES[-1], flush=True)
        return None


def measure_or_raise(cmd, inner, runs, warm, before):
    for f in warm:
        warm_cache(f)
    for _ in range(WARMUP):
        run_once(cmd, inner)
    times, rss, anon, text = [], 0, 0, ""
    for _ in range(runs):
        if before:
            before()
        s, r, a, text = run_once(cmd, inner)
        times.append(s)
        rss, anon = max(rss, r), max(anon, a)
    return {"seconds": statistics.median(times), "all": times, "rss": rss, "anon": anon, "out": text.strip()[:200]}


def warm_cache(path):
    with open(path, "rb") as f:
        while f.read(16 * MiB):
            pass


def fmt_s(s):
    return "%.1f ms" % (s * 1e3) if s < 1 else "%.2f s" % s


def main():
    size_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    build = os.environ.get("TB_BUILD_DIR", os.path.join(root, "build"))
    cli = os.path.join(build, "cli", "tensorbridge")
    bench = os.path.join(build, "bench", "bench_io")
    work = os.environ.get("TB_BENCH_DIR", "/tmp/tensorbridge-bench-%d" % size_mb)
    only = set(filter(None, os.environ.get("TB_BENCH_ONLY", "").split(",")))  # e.g. "load,open"
    scale = int(os.environ.get("TB_BENCH_SCALE", "4"))  # linearity check: scale x size (.pt only); 0 = skip
    for exe in (cli, bench):
        if not os.access(exe, os.X_OK):
            sys.exit("missing %s: cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTB_BUILD_BENCH=ON && "
                     "cmake --build build --target tensorbridge bench_io" % exe)
    os.makedirs(work, exist_ok=True)
    outdir = os.path.join(work, "out")
    os.makedirs(outdir, exist_ok=True)

    def f(name):
        return os.path.join(work, name)

    def want(group):
        return not only or group in only

    # ---- inputs (kept between runs: delete the folder to regenerate)
    stamp = f("inputs.json")
    if not os.path.exists(stamp):
        print("writing inputs (%d MiB) in %s ..." % (size_mb, work), flush=True)
        t0 = time.time()
        largest = int(subprocess.check_output([SYS_PY, "-c", GEN_TORCH, str(size_mb), work, "main"]).split()[-1])
        subprocess.check_call([PEERS_PY, "-c", GEN_SAFETENSORS, work])
        subprocess.check_call([SYS_PY, "-c", GEN_TORCH, str(size_mb), work, "many"])
        json.dump({"largest": largest}, open(stamp, "w"))
        print("  inputs written in %.0f s" % (time.time() - t0), flush=True)
    largest = json.load(open(stamp))["largest"]
    stamp_new = f("inputs_new.json")
    if want("new") and not os.path.exists(stamp_new):
        print("writing the gguf, TF bundle, .keras and TorchScript inputs ...", flush=True)
        subprocess.check_call([PEERS_PY, "-c", GEN_NEW_PEERS, str(size_mb), work])
        subprocess.check_call([SYS_PY, "-c", GEN_NEW_TORCH, str(size_mb), work])
        json.dump({}, open(stamp_new, "w"))
    if want("new") and not os.path.exists(f("model_q8_0.gguf")):
        print("writing the Q8_0 gguf input ...", flush=True)
        subprocess.check_call([PEERS_PY, "-c", GEN_GGUF_Q8_0, work])
    if want("new") and not os.path.exists(f("model_ts.npz")):
        subprocess.check_call([SYS_PY, "-c", GEN_TS_NPZ, work])
    if scale and want("scale") and not os.path.exists(f("scale.pt")):
        print("writing the %dx input (%d MiB) ..." % (scale, scale * size_mb), flush=True)
        subprocess.check_call([SYS_PY, "-c", GEN_TORCH, str(scale * size_mb), work, "scale"])

    pt_bytes = os.path.getsize(f("model.pt"))
    data_bytes = os.path.getsize(f("model.npy")) - 128
    results = {"size_mb": size_mb, "runs": RUNS, "pt_bytes": pt_bytes, "data_bytes": data_bytes,
               "largest_tensor": largest, "rows": []}
    rows = results["rows"]

    def row(group, name, ours, peer=None, target=None, note=""):
        if ours is None:
            return
        r = {"group": group, "name": name, "ours": ours, "peer": peer, "target": target, "note": note}
        rows.append(r)
        line = "%-48s ours %9s rss %5.0f anon %5.0f MiB" % (name, fmt_s(ours["seconds"]), ours["rss"] / MiB,
                                                            ours["anon"] / MiB)
        if peer:
            line += " | peer %9s rss %5.0f MiB | %5.1fx" % (fmt_s(peer["seconds"]), peer["rss"] / MiB,
                                                          peer["seconds"] / ours["seconds"])
        if target:
            line += "   target %s" % target
        print(line + ("   " + note if note else ""), flush=True)

    ext = {"pt": "model.pt", "npz": "model.npz", "npy": "model.npy", "h5": "model.h5", "onnx": "model.onnx",
           "safetensors": "model.safetensors"}
    warm_of = {k: [f(v)] for k, v in ext.items()}
    warm_of["onnx"] = [f("model.onnx"), f("model.onnx.data")]

    # ---- floor
    memcpy = measure([bench, "memcpy", str(data_bytes)])
    row("floor", "memcpy of the tensor bytes", memcpy)
    cp = measure(["cp", f("model.pt"), os.path.join(outdir, "cp.pt")], inner=False, warm=[f("model.pt")])
    row("floor", "cp model.pt", cp)
    cps = measure(["sh", "-c", 'cp "$0" "$1" && sync "$1"', f("model.pt"), os.path.join(outdir, "cp.pt")],
                  inner=False)
    row("floor", "cp model.pt + fsync (as our writer does)", cps)

    # ---- load into owned memory
    load_targets = {"pt": 12, "npz": 5, "h5": 4, "onnx": 10}
    if want("load"):
        for fmt in ("pt", "npz", "npy", "h5", "onnx", "safetensors"):
            ours = measure([bench, "load", f(ext[fmt]), "owned"], warm=warm_of[fmt])
            if ours is None:
                continue
            py, code = PY_LOAD[fmt]
            peer = measure([py, "-c", code, f(ext[fmt])])
            t = load_targets.get(fmt)
            row("load", "load %s into memory (vs Python)" % fmt, ours, peer, ">= %dx" % t if t else None)

    # ---- zero-copy open
    if want("open"):
        for fmt in ("pt", "npy", "safetensors", "onnx", "npz", "h5"):
            ours = measure([bench, "load", f(ext[fmt]), "mmap"], warm=warm_of[fmt])
            if ours is None:
                continue
            m = re.search(r"tensors=(\d+) .*mapped=(\d+)", ours["out"])
            note = "%s of %s tensors mapped" % (m.group(2), m.group(1)) if m else ""
            peer = None
            if fmt in PY_OPEN:
                py, code = PY_OPEN[fmt]
                peer = measure([py, "-c", code, f(ext[fmt])])
            target = "<= 20 ms" if fmt in ("pt", "npy", "safetensors", "onnx") else None
            row("open", "zero-copy open %s (vs lazy Python open)" % fmt, ours, peer, target, note)

    # ---- convert .pt -> X
    if want("convert"):
        for fmt, name in (("safetensors", "c.safetensors"), ("npz", "c.npz"), ("h5", "c.h5"), ("onnx", "c.onnx")):
            dst = os.path.join(outdir, name)
            ours = measure([cli, "convert", f("model.pt"), dst, "--force"], inner=False, warm=[f("model.pt")])
            if fmt == "safetensors":
                a = measure([SYS_PY, "-c", PY_LOAD["pt"][1], f("model.pt")])
                b = measure([PEERS_PY, "-c", PY_SAVE_SAFETENSORS, f("model.npz"), os.path.join(outdir, "py.safetensors")])
                peer = None if a is None or b is None else {
                    "seconds": a["seconds"] + b["seconds"], "rss": max(a["rss"], b["rss"]),
                    "anon": max(a["anon"], b["anon"]), "all": []}
            else:
                peer = measure([SYS_PY, "-c", PY_CONVERT[fmt], f("model.pt"), os.path.join(outdir, "py." + fmt)])
            if ours is None or peer is None:
                continue
            ratio_cp = ours["seconds"] / cp["seconds"]
            budget = (largest + 64 * MiB) / MiB
            row("convert", "convert pt -> %s (vs Python)" % fmt, ours, peer, "<= 3x cp, rss <= %.0f MiB" % budget,
                "%.1fx cp" % ratio_cp)
        shutil.rmtree(outdir, ignore_errors=True)
        os.makedirs(outdir, exist_ok=True)

    def to_safetensors_peer(fmt, path, dst):
        """The Python time of X -> safetensors (PY_TO_SAFETENSORS), None when a part failed."""
        if fmt != "torchscript":
            return measure([PEERS_PY, "-c", PY_TO_SAFETENSORS[fmt] + PY_TO_SAFETENSORS_SAVE, path, dst])
        a = measure([SYS_PY, "-c", PY_LOAD_NEW["torchscript"][1], path])
        b = measure([PEERS_PY, "-c", PY_TO_SAFETENSORS[fmt] + PY_TO_SAFETENSORS_SAVE, f("model_ts.npz"), dst])
        if a is None or b is None:
            return None
        return {"seconds": a["seconds"] + b["seconds"], "rss": max(a["rss"], b["rss"]),
                "anon": max(a["anon"], b["anon"]), "all": []}

    # ---- the newer formats: loads against their frameworks, opens, converts from and to them
    if want("new"):
        new_files = {"gguf": f("model.gguf"), "gguf-q8_0": f("model_q8_0.gguf"), "tf-checkpoint": f("model_tf.index"),
                     "keras": f("model.keras"), "torchscript": f("model_ts.pt")}
        warm_new = {k: [v] for k, v in new_files.items()}
        warm_new["tf-checkpoint"] = [f("model_tf.index"), f("model_tf.data-00000-of-00001")]
        for fmt, path in new_files.items():
            ours = measure([bench, "load", path, "owned"], warm=warm_new[fmt])
            if ours is None:
                continue
            m = re.search(r"bytes=(\d+)", ours["out"])
            floor = measure([bench, "memcpy", m.group(1)]) if m else None
            py, code = PY_LOAD_NEW[fmt]
            peer = measure([py, "-c", code, path])
            note = "%.1fx memcpy of its %.0f MiB" % (ours["seconds"] / floor["seconds"], int(m.group(1)) / MiB) if floor else ""
            what = "load gguf q8_0 dequantized" if fmt == "gguf-q8_0" else "load %s" % fmt
            row("new", "%s into memory (vs Python)" % what, ours, peer, "<= 1.5x memcpy", note)
        for fmt in ("gguf", "tf-checkpoint"):
            ours = measure([bench, "load", new_files[fmt], "mmap"], warm=warm_new[fmt])
            if ours is None:
                continue
            m = re.search(r"tensors=(\d+) .*mapped=(\d+)", ours["out"])
            row("new", "zero-copy open %s" % fmt, ours, None, None,
                "%s of %s tensors mapped" % (m.group(2), m.group(1)) if m else "")
        for fmt, name in (("gguf", "c.gguf"), ("tf-checkpoint", "c_tf")):
            dst = os.path.join(outdir, name)
            ours = measure([cli, "convert", f("model.pt"), dst, "--to", fmt, "--force"], inner=False, warm=[f("model.pt")])
            a = measure([SYS_PY, "-c", PY_LOAD["pt"][1], f("model.pt")])
            b = measure([PEERS_PY, "-c", PY_SAVE_NEW[fmt], f("model.npz"), os.path.join(outdir, "py_" + name)])
            if ours is None or a is None or b is None:
                continue
            peer = {"seconds": a["seconds"] + b["seconds"], "rss": max(a["rss"], b["rss"]),
                    "anon": max(a["anon"], b["anon"]), "all": []}
            row("new", "convert pt -> %s (vs Python)" % fmt, ours, peer, "<= 1.3x cp+fsync",
                "%.1fx cp+fsync" % (ours["seconds"] / cps["seconds"]))
        for fmt, path in new_files.items():
            dst = os.path.join(outdir, "from_%s.safetensors" % fmt.replace("-", "_"))
            src_bytes = sum(os.path.getsize(p) for p in warm_new[fmt])
            cp_src = measure(["sh", "-c", 'cp "$0" "$1" && sync "$1"', warm_new[fmt][-1], os.path.join(outdir, "cp.bin")],
                             inner=False, warm=warm_new[fmt])
            ours = measure([cli, "convert", path, dst, "--drop-non-tensors", "--force"], inner=False, warm=warm_new[fmt])
            peer = to_safetensors_peer(fmt, path, os.path.join(outdir, "py_from.safetensors"))
            if ours is None or cp_src is None:
                continue
            row("new", "convert %s -> safetensors (vs Python)" % fmt.replace("-q8_0", " q8_0"), ours, peer,
                "<= 1.3x cp+fsync",
                "%.1fx cp+fsync of its %.0f MiB (%s)" % (ours["seconds"] / cp_src["seconds"], src_bytes / MiB,
                                                         fmt_s(cp_src["seconds"])))
        # Quantized blocks kept as they are: GGUF -> GGUF is a copy of the file's bytes.
        cp_q = measure(["sh", "-c", 'cp "$0" "$1" && sync "$1"', f("model_q8_0.gguf"), os.path.join(outdir, "cp.bin")],
                       inner=False, warm=warm_new["gguf-q8_0"])
        ours = measure([cli, "convert", f("model_q8_0.gguf"), os.path.join(outdir, "q.gguf"), "--keep-quantized",
                        "--force"], inner=False, warm=warm_new["gguf-q8_0"])
        if ours and cp_q:
            row("new", "convert gguf q8_0 -> gguf --keep-quantized", ours, None, "<= 1.3x cp+fsync",
                "%.1fx cp+fsync (%s)" % (ours["seconds"] / cp_q["seconds"], fmt_s(cp_q["seconds"])))
        shutil.rmtree(outdir, ignore_errors=True)
        os.makedirs(outdir, exist_ok=True)

    # ---- scaling
    if want("many"):
        ours = measure([cli, "inspect", f("many.pt")], inner=False, warm=[f("many.pt")])
        peer = measure([SYS_PY, "-c", PY_LOAD["pt"][1], f("many.pt")])
        row("many", "inspect many.pt (100,000 tensors) (vs torch.load)", ours, peer, "<= 1 s")
        ours = measure([bench, "load", f("many.pt"), "owned"])
        row("many", "load many.pt into memory (vs torch.load)", ours, peer)
    if scale and want("scale"):
        base = measure([bench, "load", f("model.pt"), "owned"], warm=[f("model.pt")])
        big = measure([bench, "load", f("scale.pt"), "owned"], warm=[f("scale.pt")])
        if base and big:
            row("scale", "load %dx .pt (%.0f MiB) into memory" % (scale, os.path.getsize(f("scale.pt")) / MiB), big,
                None, "<= %.1fx the 1x time" % (1.1 * scale), "%.2fx the 1x time (best runs: %.2fx)" % (
                    big["seconds"] / base["seconds"], min(big["all"]) / min(base["all"])))
        c1 = measure([cli, "convert", f("model.pt"), os.path.join(outdir, "s1.safetensors"), "--force"], inner=False,
                     warm=[f("model.pt")])
        c4 = measure([cli, "convert", f("scale.pt"), os.path.join(outdir, "s4.safetensors"), "--force"], inner=False,
                     warm=[f("scale.pt")])
        if c1 and c4:
            row("scale", "convert %dx .pt -> safetensors" % scale, c4, None, "<= %.1fx the 1x time" % (1.1 * scale),
                "%.2fx the 1x time (best runs: %.2fx)" % (c4["seconds"] / c1["seconds"], min(c4["all"]) / min(c1["all"])))
        shutil.rmtree(outdir, ignore_errors=True)

    with open(f("results.json"), "w") as fo:
        json.dump(results, fo, indent=1)
    with open(f("results.md"), "w") as fo:
        fo.write("| measurement | tensorbridge | peak RSS (anon) | Python peer | peak RSS | ratio | target | note |\n")
        fo.write("|---|---:|---:|---:|---:|---:|---|---|\n")
        for r in rows:
            o, p = r["ours"], r["peer"]
            fo.write("| %s | %s | %.0f MiB (%.0f) | %s | %s | %s | %s | %s |\n" % (
                r["name"], fmt_s(o["seconds"]), o["rss"] / MiB, o["anon"] / MiB, fmt_s(p["seconds"]) if p else "",
                "%.0f MiB" % (p["rss"] / MiB) if p else "", "%.1fx" % (p["seconds"] / o["seconds"]) if p else "",
                r["target"] or "", r["note"]))
    for e in FAILURES:
        print("failed: " + e)
    print("\nresults: %s/results.json, %s/results.md" % (work, work))


if __name__ == "__main__":
    main()
