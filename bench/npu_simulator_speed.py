"""How fast the NPU simulator runs: MACs simulated per second of wall time.

A ResNet-18-sized convolution (64 -> 64 channels, 3x3, 56x56, 115.6 M MACs) as a
hand-tiled, double-buffered program on cruise-npu: 8 output rows per tile, input rows
loaded into alternating buffers in different SRAM banks. Prints the wall time of
``Simulator.run`` (measured on this machine) and, separately, the program's simulated
cycles and utilization (figures of the cycle model, not measurements).

    python bench/npu_simulator_speed.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np

from tvm_cruise.npu import ProgramBuilder, Simulator
from tvm_cruise.targets import accelerators

C, H, W, K, ROWS = 64, 56, 56, 3, 8


def build(spec, dtype: str):
    b = ProgramBuilder(spec)
    x = b.input("x", dtype, (C, H + 2, W + 2))  # padded by the host for this benchmark
    rng = np.random.default_rng(0)
    w = (rng.integers(-8, 8, (C, C, K, K)) if dtype == "int8"
         else rng.standard_normal((C, C, K, K)) * 0.05).astype(dtype)
    wt = b.constant("w", w)
    y = b.output("acc", "int32" if dtype == "int8" else "float32", (C, H, W))
    bank = spec.hardware["sram_bytes"] // spec.hardware["sram_banks"]
    in_buf = [0, 2 * bank]          # ping-pong input row buffers, separate banks
    w_addr, acc_addr = 4 * bank, 6 * bank
    rows_in = ROWS + K - 1
    b.dma_load(wt, w_addr, w.shape)
    b.dma_load(x, in_buf[0], (C, rows_in, W + 2), offset=0)
    b.sync(dma=True)
    tiles = H // ROWS
    for t in range(tiles):
        if t + 1 < tiles:  # prefetch the next rows while this tile computes
            b.dma_load(x, in_buf[(t + 1) % 2], (C, rows_in, W + 2),
                       dram_strides=((H + 2) * (W + 2), W + 2, 1),
                       offset=(t + 1) * ROWS * (W + 2))
        b.conv(in_buf[t % 2], w_addr, acc_addr, C, rows_in, W + 2, C, ROWS, W, (K, K),
               dtype=dtype)
        b.sync(compute=True)
        b.dma_store(y, acc_addr, (C, ROWS, W), dram_strides=(H * W, W, 1),
                    offset=t * ROWS * W)
        b.sync(dma=True)
    return b.build()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    spec = accelerators()["cruise-npu"]
    macs = C * H * W * C * K * K
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; conv {C}->{C} "
          f"{K}x{K} on {H}x{W}: {macs / 1e6:.1f} M MACs")
    for dtype in ("float16", "int8"):
        program = build(spec, dtype)
        x = (np.random.default_rng(1).integers(-128, 128, (C, H + 2, W + 2)) if dtype == "int8"
             else np.random.default_rng(1).standard_normal((C, H + 2, W + 2))).astype(dtype)
        sim = Simulator(spec)
        _, stats = sim.run(program, [x])
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            sim.run(program, [x])
            times.append(time.perf_counter() - start)
        med = statistics.median(times)
        print(f"{dtype:>8}: measured wall time median {med * 1e3:.1f} ms over {args.repeat} runs "
              f"-> {macs / med / 1e9:.2f} G MACs simulated per second")
        print(f"          simulated: {stats.cycles} cycles ({stats.time_us:.1f} us at "
              f"{spec.hardware['clock_mhz']} MHz), utilization {stats.utilization:.1%}, "
              f"{len(program.instructions)} instructions")


if __name__ == "__main__":
    main()
