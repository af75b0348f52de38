"""Convert a sharded checkpoint with Ray: one `tensorbridge convert --shards I/N` task per slice.

Ray does the scheduling (local cores here, or a cluster with `ray.init(address="auto")`); each task
converts the input shards k with k % N == I into the output folder, and the task that completes the
set writes the index. Input and output must be on storage every worker sees (a shared file system).

    python examples/ray_convert.py --workers 2 llama/ out/
"""
import argparse
import subprocess

import ray


@ray.remote(num_cpus=1)
def convert_slice(tensorbridge, src, dst, i, n, extra):
    cmd = [tensorbridge, "convert", src, dst, "--to", "safetensors", "--shards", f"{i}/{n}", "--jobs", "1", "-q", *extra]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stderr


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="sharded input: *.index.json or its folder")
    p.add_argument("dst", help="output folder (or x.safetensors for shards x-00001-of-0000N.safetensors)")
    p.add_argument("--workers", type=int, default=2, help="slices, one Ray task each (default 2)")
    p.add_argument("--tensorbridge", default="tensorbridge", help="path of the tensorbridge binary")
    p.add_argument("extra", nargs="*", help="more convert flags after --, e.g. -- --dtype bfloat16")
    a = p.parse_args()
    ray.init(num_cpus=a.workers, include_dashboard=False, logging_level="ERROR")
    n = a.workers
    ray.get([convert_slice.remote(a.tensorbridge, a.src, a.dst, i, n, a.extra) for i in range(n)])
    ray.shutdown()
    print(f"converted {a.src} -> {a.dst} in {n} Ray tasks")


if __name__ == "__main__":
    main()
