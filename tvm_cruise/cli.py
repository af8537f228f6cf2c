"""The ``tvm-cruise`` command line.

    tvm-cruise targets                      list targets
    tvm-cruise models                       list bundled reference models
    tvm-cruise export-onnx resnet18 -o r.onnx
    tvm-cruise compile MODEL --target cruise-npu -o model.so [--no-fallback]
    tvm-cruise analyze MODEL --target cruise-npu-lite [--json]
    tvm-cruise run model.so [--inputs in.npz] [--save out.npz] [--repeat 20]
    tvm-cruise inspect model.so [--json]
    tvm-cruise report MODEL --target T [--inputs in.npz] [--json r.json] [--html r.html]
                      [--min-npu-share 0.9] [--max-rel-error 1e-2]   (exit 1: a gate failed)
    tvm-cruise demo
    tvm-cruise tune MODEL --target T --tuning-logs DIR [--trials N] [--time-budget S]
    tvm-cruise logs list|merge|prune|validate DIR
    tvm-cruise npu disasm program.crnpu     NPU program as text
    tvm-cruise npu simulate program.crnpu   simulated cycles and utilization
    tvm-cruise env                          environment variables and their values

MODEL is a bundled model name, a .onnx file or a .pt2 file. Errors print one line naming
the problem and the fix, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

EXIT_USAGE = 2


def _parse_shape(text: str) -> tuple[str, list[int]]:
    name, sep, dims = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, [int(d) for d in dims.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--input-shape {text!r} must look like NAME=1x3x224x224") from None


def _parse_layer_precision(text: str) -> tuple[str, str]:
    from .byoc.precision import LAYER_PRECISIONS

    name, sep, precision = text.rpartition("=")
    if not sep or not name or precision not in LAYER_PRECISIONS:
        raise argparse.ArgumentTypeError(
            f"--layer-precision {text!r} must look like NAME=PRECISION with PRECISION one of "
            f"{', '.join(LAYER_PRECISIONS)} (e.g. conv1=fp16, 'layer4.*=fp32')")
    return name, precision


_LAYER_PRECISION_HELP = ("mixed precision: run the layers NAME names (placement-report name, "
                         "wildcards, or #N for op N) in PRECISION: fp32 on the host, fp16 or "
                         "int8 on the accelerator (repeatable)")


def _cmd_targets(args) -> int:
    from . import list_targets

    rows = [(t.name, t.host_kind, t.accelerator.name if t.accelerator else "-", t.description)
            for t in list_targets()]
    if args.json:
        print(json.dumps([dict(zip(("name", "host", "accelerator", "description"), r))
                          for r in rows], indent=2))
        return 0
    width = max(len(r[0]) for r in rows)
    for name, host, _, desc in rows:
        print(f"{name:<{width}}  [{host:4}]  {desc}")
    return 0


def _cmd_models(_args) -> int:
    from .models import REFERENCE_MODELS

    width = max(map(len, REFERENCE_MODELS))
    for ref in REFERENCE_MODELS.values():
        print(f"{ref.name:<{width}}  {ref.description}")
    return 0


def _cmd_export_onnx(args) -> int:
    from .models import export_onnx

    path = export_onnx(args.model, args.output or f"{args.model}.onnx")
    print(f"wrote {path}")
    return 0


def _cmd_compile(args) -> int:
    from . import build

    shapes = dict(args.input_shape) if args.input_shape else None
    art = build(args.model, target=args.target, host=args.host, cuda_arch=args.cuda_arch,
                input_shapes=shapes, tuning_logs=args.tuning_logs,
                shipped_logs=not args.no_shipped_logs, precision=args.precision,
                allow_fallback=not args.no_fallback,
                default_schedules=not args.no_default_schedules,
                fast_math=not args.exact_math,
                # the build-time check compares fp16 programs with fp32 (int8 ones: not
                # yet; the build says so)
                verify=False if args.no_verify else ("strict" if args.verify_strict else True),
                verify_tolerance=args.verify_tolerance, calibration=args.calibration,
                calibration_method=args.calibration_method,
                calibration_percentile=args.calibration_percentile,
                layer_precision=dict(args.layer_precision or ()))
    output = args.output or f"{Path(str(args.model)).stem}.{art.target}.so"
    art.export_library(output)
    print(art.describe())
    if art.placement is not None:
        print()
        print(art.placement.table())
    stats = art.npu_stats()
    if stats is not None:
        print()
        print(stats.table())
    checks = art.verification
    if checks:
        from .verify import table

        print()
        print(table(checks))
    print(f"wrote {output}")
    return 0


def _cmd_analyze(args) -> int:
    from .byoc import analyze

    shapes = dict(args.input_shape) if args.input_shape else None
    report = analyze(args.model, args.target, input_shapes=shapes, precision=args.precision,
                     layer_precision=dict(args.layer_precision or ()))
    print(report.to_json() if args.json else report.table())
    return 0


def _load_inputs(art, path: str | None, seed: int) -> dict:
    from .errors import InputMismatchError

    if path is None:
        return art.random_inputs(seed)
    try:
        data = np.load(path)
    except (OSError, ValueError) as err:
        raise InputMismatchError(f"--inputs {path}: not a readable .npz file ({err}); write one "
                                 "with numpy.savez(path, input_name=array)") from None
    names = [i.name for i in art.input_info]
    keys = list(data.keys())
    if set(keys) == set(names):
        return {k: data[k] for k in names}
    positional = [f"arr_{i}" for i in range(len(names))]
    if keys == positional:
        return dict(zip(names, (data[k] for k in positional)))
    raise InputMismatchError(f"--inputs {path} holds arrays {keys} but the model's inputs are "
                             f"{names}; save them under those names")


def _cmd_run(args) -> int:
    from . import load

    art = load(args.artifact)
    inputs = _load_inputs(art, args.inputs, args.seed)
    outs = art.run(**inputs)
    outs = outs if isinstance(outs, list) else [outs]
    print(f"ran {art!r}" + ("" if args.inputs else f" on seeded random inputs (seed {args.seed})"))
    for info, out in zip(art.output_info, outs):
        print(f"  {info.name}: {out.dtype}{list(out.shape)}  min {out.min():.4g}  "
              f"max {out.max():.4g}  mean {out.mean():.4g}")
    if args.save:
        np.savez(args.save, **{i.name: o for i, o in zip(art.output_info, outs)})
        print(f"wrote {args.save}")
    if args.repeat:
        t = art.time_run(**inputs, repeat=args.repeat)
        print(f"  measured wall time on this machine: min {t['min_ms']:.2f} ms, median "
              f"{t['median_ms']:.2f} ms over {t['runs']} runs"
              + (" (includes the NPU simulator's own run time)" if art.npu_stats() else ""))
    stats = art.npu_stats()
    if stats is not None:
        print(stats.table())
    return 0


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"--min-npu-share {text!r} must be a share of MACs between 0 and 1 (0.9 = 90%)")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(
            f"--max-rel-error {text!r} must be a positive number such as 1e-2")
    return value


def _cmd_report(args) -> int:
    import time

    from .reporting import report

    start = time.perf_counter()

    def progress(text: str) -> None:
        if not args.quiet:
            print(f"tvm-cruise report: [{time.perf_counter() - start:6.1f} s] {text}",
                  file=sys.stderr, flush=True)

    shapes = dict(args.input_shape) if args.input_shape else None
    rep = report(args.model, args.target, inputs=args.inputs, input_shapes=shapes,
                 seed=args.seed, repeat=args.repeat, host=args.host, precision=args.precision,
                 tuning_logs=args.tuning_logs, top=args.top, progress=progress)
    gates = rep.gates(min_npu_share=args.min_npu_share, max_rel_error=args.max_rel_error)
    print(rep.table())
    for path, text in ((args.json, rep.to_json(gates) if args.json else None),
                       (args.html, rep.to_html() if args.html else None)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    for gate in gates:
        print(f"gate {gate.name}: {'ok' if gate.ok else 'FAILED'}: {gate.message}")
    progress(f"done in {time.perf_counter() - start:.1f} s")
    return 1 if any(not g.ok for g in gates) else 0


def _cmd_sensitivity(args) -> int:
    from .sensitivity import sensitivity

    shapes = dict(args.input_shape) if args.input_shape else None
    rep = sensitivity(args.model, args.target, calibration=args.calibration, data=args.data,
                      alternative=args.alternative, samples=args.samples, layers=args.layers,
                      calibration_method=args.calibration_method,
                      calibration_percentile=args.calibration_percentile,
                      input_shapes=shapes)
    print(rep.table())
    suggestion = rep.suggest(args.min_gain)
    if suggestion:
        flags = " ".join(f"--layer-precision '{k}={v}'" for k, v in suggestion.items())
        print(f"to build with them: tvm-cruise compile {args.model} -t {args.target} "
              "--precision int8"
              + (f" --calibration {args.calibration}" if args.calibration else "")
              + f" {flags}")
    if args.json:
        Path(args.json).write_text(json.dumps(rep.to_dict(), indent=2))
        print(f"wrote {args.json}")
    return 0


def _cmd_bench(args) -> int:
    from .benchmark import benchmark

    res = benchmark(args.model, tuning_logs=args.tuning_logs, repeat=args.repeat,
                    rounds=args.rounds, skip=tuple(args.skip or ()),
                    progress=lambda msg: print(f"tvm-cruise bench: {msg}", file=sys.stderr))
    print(res.table())
    if args.json:
        Path(args.json).write_text(json.dumps(res.to_dict(), indent=2))
        print(f"wrote {args.json}")
    return 1 if any(r.status == "WRONG" for r in res.results) else 0


def _cmd_inspect(args) -> int:
    from . import read_metadata
    from .artifact import describe

    meta = read_metadata(args.artifact)
    print(json.dumps(meta, indent=2, sort_keys=True) if args.json else describe(meta))
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(model=args.model, target=args.target, repeat=args.repeat)


def _cmd_tune(args) -> int:
    from .autotune.host import tune_host
    from .autotune.npu import tune_npu

    shapes = dict(args.input_shape) if args.input_shape else None
    options = {"host": args.host, "cuda_arch": args.cuda_arch, "input_shapes": shapes}
    print(f"tuning {args.model} for {args.target} into {args.tuning_logs}")
    if not args.host_only:
        report = tune_npu(args.model, args.target, args.tuning_logs, retune=args.retune,
                          **options)
        print(report.summary())
    if not args.npu_only:
        report = tune_host(args.model, args.target, args.tuning_logs, trials=args.trials,
                           time_budget=args.time_budget, retune=args.retune,
                           workers=args.workers, rpc_tracker=args.rpc_tracker,
                           rpc_key=args.rpc_key, fast_math=not args.exact_math, **options)
        print(report.summary())
    return 0


def _cmd_logs(args) -> int:
    from .autotune import tools

    if args.logs_command == "list":
        print("\n".join(tools.list_logs(Path(args.dir))))
    elif args.logs_command == "merge":
        counts = tools.merge_logs([Path(d) for d in args.sources], Path(args.output))
        print(f"merged {counts['host']} host and {counts['npu']} NPU records into "
              f"{args.output}")
    elif args.logs_command == "prune":
        counts = tools.prune_logs(Path(args.dir), keep=args.keep)
        print(f"removed {counts['host_removed']} host and {counts['npu_removed']} NPU records "
              f"from {args.dir} (kept the best {args.keep} per workload)")
    else:
        from .targets import resolve_target

        target = resolve_target(args.target, host=args.host).tvm_target
        results = tools.validate_logs(Path(args.dir), target)
        bad = [r for r in results if not r["ok"]]
        for r in results:
            status = "ok" if r["ok"] else "MISMATCH" if r.get("error") is not None else "FAILED"
            detail = f"rel. error {r['error']:.2e}" if r.get("error") is not None else \
                r.get("failure", "")
            print(f"  {status:<8} {r['workload']}: {detail}")
        print(f"validated {len(results)} workloads: {len(bad)} bad")
        return 1 if bad else 0
    return 0


def _read_program(path: str):
    from .npu.program import Program
    from .errors import NpuProgramError
    from .targets import accelerators

    try:
        data = open(path, "rb").read()
    except OSError as err:
        raise NpuProgramError(f"{path}: cannot read it ({err.strerror})") from None
    name = Program.from_bytes(data, None, where=path).accelerator  # header and hash checks
    specs = accelerators()
    if name not in specs:
        raise NpuProgramError(f"{path}: built for accelerator {name!r}, which this "
                              f"tvm-cruise does not know ({', '.join(specs)})")
    return Program.from_bytes(data, specs[name], where=path), specs[name]


def _cmd_npu_disasm(args) -> int:
    from .npu.disasm import disassemble

    program, _ = _read_program(args.program)
    print(disassemble(program))
    return 0


def _cmd_npu_simulate(args) -> int:
    from .npu import Simulator

    program, spec = _read_program(args.program)
    rng = np.random.default_rng(args.seed)
    inputs = []
    for t in program.inputs:
        if t.dtype == "int8":
            inputs.append(rng.integers(-128, 128, t.shape).astype("int8"))
        else:
            inputs.append(rng.standard_normal(t.shape).astype(t.dtype))
    _, stats = Simulator(spec).run(program, inputs)
    d = stats.to_dict()
    print(f"simulated on {spec.name} ({spec.hardware['clock_mhz']} MHz), seeded random inputs "
          f"(seed {args.seed}):")
    print(f"  cycles {d['cycles']} ({d['time_us']} us simulated), MACs {d['macs']}, "
          f"utilization {d['utilization']:.1%}")
    print(f"  DMA {d['dma_bytes_loaded']} B in, {d['dma_bytes_stored']} B out; SRAM high water "
          f"{d['sram_high_water']} B; bank conflicts {d['bank_conflict_cycles']} cycles")
    for name, c in d["by_class"].items():
        print(f"  {name:<9} x{c['count']:<5} {c['cycles']:>10} cycles  {c['macs']:>12} MACs")
    return 0


def _cmd_env(_args) -> int:
    from .env import KNOBS

    for knob in KNOBS:
        print(f"{knob.name}={knob.get()!r}\n    {knob.help}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    from .calibration import DEFAULT_PERCENTILE, METHODS

    parser = argparse.ArgumentParser(
        prog="tvm-cruise", description="Compile PyTorch/ONNX models for on-car accelerators "
        "with Apache TVM.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-v info, -vv debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("targets", help="list targets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_targets)

    p = sub.add_parser("models", help="list bundled reference models")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("export-onnx", help="export a bundled reference model to ONNX")
    p.add_argument("model")
    p.add_argument("-o", "--output")
    p.set_defaults(func=_cmd_export_onnx)

    p = sub.add_parser("compile", help="compile a model into an artifact (.so or .tar)")
    p.add_argument("model", help="bundled model name, .onnx or .pt2 file")
    p.add_argument("-t", "--target", default="cruise-npu", help="see `tvm-cruise targets`")
    p.add_argument("--host", help="CPU side: 'llvm -mcpu=cortex-a78 -mtriple=aarch64-linux-gnu'"
                   " or a JSON dict (default: this machine's CPU)")
    p.add_argument("--cuda-arch", help="GPU arch of -cuda targets (default sm_87)")
    p.add_argument("--input-shape", action="append", type=_parse_shape, metavar="NAME=DIMS",
                   help="fix a dynamic ONNX input, e.g. input=1x3x224x224 (repeatable)")
    p.add_argument("--tuning-logs", action="append", metavar="DIR",
                   help="tuning-log directory to apply (repeatable)")
    p.add_argument("--no-shipped-logs", action="store_true",
                   help="do not apply the tuning logs shipped with tvm-cruise")
    p.add_argument("--precision", default="fp16", choices=["fp16", "fp32", "int8"],
                   help="accelerator arithmetic (default fp16; the host stays fp32); int8 "
                        "needs --calibration")
    p.add_argument("--calibration", metavar="PATH",
                   help="int8: calibration samples, an .npz (one array per input name, one "
                        "sample or a stack) or a directory of .npy files")
    p.add_argument("--calibration-method", default="minmax", choices=METHODS,
                   help="int8: activation range per tensor: largest |x|, a percentile of |x|, "
                        "or the KL-divergence (entropy) threshold (default minmax)")
    p.add_argument("--calibration-percentile", type=float, default=DEFAULT_PERCENTILE,
                   metavar="P", help="int8 with --calibration-method percentile: the "
                                     f"percentile of |x| (default {DEFAULT_PERCENTILE})")
    p.add_argument("--layer-precision", action="append", type=_parse_layer_precision,
                   metavar="NAME=PRECISION", help=_LAYER_PRECISION_HELP)
    p.add_argument("--no-fallback", action="store_true",
                   help="fail, listing every op that would fall back to the host and why")
    p.add_argument("--no-default-schedules", action="store_true",
                   help="leave CPU kernels without a tuning record unscheduled "
                        "(TVM's single-threaded lowering) instead of tvm-cruise's default, "
                        "every convolution computed directly (no Winograd)")
    p.add_argument("--exact-math", action="store_true",
                   help="CPU hosts: keep TVM's libm exp/erf/tanh (one call per element) "
                        "instead of vectorized polynomial forms (<= 3.4e-7 relative error), "
                        "and Winograd F(2x2) instead of the less accurate F(4x4) (AVX2)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip checking each NPU function (simulated) against TVM's fp32 host "
                        "build of it on seeded inputs (on by default)")
    p.add_argument("--verify-strict", action="store_true",
                   help="fail the build when a function is beyond the precision bound")
    p.add_argument("--verify-tolerance", type=float, metavar="REL",
                   help="precision bound, max|npu-fp32|/max|fp32| (default 2e-2, or twice the "
                        "function's fp16 floor where that is larger)")
    p.add_argument("-o", "--output", help="artifact path (.so or .tar)")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("analyze", help="where each op would run on an accelerator, and why "
                       "(no build)")
    p.add_argument("model", help="bundled model name, .onnx or .pt2 file")
    p.add_argument("-t", "--target", default="cruise-npu")
    p.add_argument("--input-shape", action="append", type=_parse_shape, metavar="NAME=DIMS")
    p.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    p.add_argument("--layer-precision", action="append", type=_parse_layer_precision,
                   metavar="NAME=PRECISION",
                   help="fp32 or fp16 only here: " + _LAYER_PRECISION_HELP)
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("run", help="run an artifact")
    p.add_argument("artifact")
    p.add_argument("--inputs", help=".npz with one array per input name (default: seeded "
                   "random inputs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", help="write the outputs to this .npz")
    p.add_argument("--repeat", type=int, default=0,
                   help="also measure wall time over this many runs")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("report", help="deployability report: placement, performance (host "
                       "measured, NPU simulated), accuracy vs the framework, the first layer "
                       "that goes wrong; JSON, HTML, CI gates")
    p.add_argument("model", help="bundled model name, .onnx or .pt2 file")
    p.add_argument("-t", "--target", default="cruise-npu", help="see `tvm-cruise targets`")
    p.add_argument("--inputs", metavar="NPZ", help=".npz with one array per input name "
                   "(default: seeded N(0,1) inputs, --seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=5,
                   help="timed runs after one warm-up (default 5)")
    p.add_argument("--json", metavar="OUT", help="write the report as JSON (docs/report.md)")
    p.add_argument("--html", metavar="OUT", help="write the report as one self-contained page")
    p.add_argument("--min-npu-share", type=_share, metavar="SHARE",
                   help="gate: exit 1 when less than this share of MACs runs on the "
                        "accelerator (0.9 = 90%%)")
    p.add_argument("--max-rel-error", type=_positive, metavar="REL",
                   help="gate: exit 1 when max|out-ref|/max|ref| vs the framework exceeds "
                        "this")
    p.add_argument("--top", type=int, default=10, help="hotspots listed (default 10)")
    p.add_argument("--host", help="CPU side (as for compile)")
    p.add_argument("--input-shape", action="append", type=_parse_shape, metavar="NAME=DIMS")
    p.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    p.add_argument("--tuning-logs", action="append", metavar="DIR")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("sensitivity", help="int8: rank the accelerator layers by what int8 "
                       "costs the output (one build per layer, measured in the simulator)")
    p.add_argument("model", help="bundled model name, .onnx or .pt2 file")
    p.add_argument("-t", "--target", default="cruise-npu", help="see `tvm-cruise targets`")
    p.add_argument("--calibration", metavar="PATH",
                   help="calibration samples (as for compile --precision int8; a QDQ model "
                        "may go without, then give --data)")
    p.add_argument("--calibration-method", default="minmax", choices=METHODS)
    p.add_argument("--calibration-percentile", type=float, default=DEFAULT_PERCENTILE,
                   metavar="P")
    p.add_argument("--data", metavar="PATH", help="samples to measure on, same forms "
                   "(default: the calibration samples; held-out data gives an unbiased "
                   "figure)")
    p.add_argument("--samples", type=int, default=32, help="samples used (default 32)")
    p.add_argument("--layers", type=int, help="measure only the N largest layers by MACs")
    p.add_argument("--alternative", default="fp16", choices=["fp16", "fp32"],
                   help="the precision a layer is measured in: fp16 on the accelerator "
                        "(default) or fp32 on the host")
    p.add_argument("--min-gain", type=float, default=1.0, metavar="DB",
                   help="suggest layers whose SQNR gain is at least this (default 1 dB)")
    p.add_argument("--input-shape", action="append", type=_parse_shape, metavar="NAME=DIMS")
    p.add_argument("--json", metavar="OUT", help="write the ranking as JSON")
    p.set_defaults(func=_cmd_sensitivity)

    p = sub.add_parser("bench", help="host latency vs PyTorch, torch.compile, ONNX Runtime "
                       "and untuned TVM in one interleaved run (measured; outputs checked)")
    p.add_argument("model", help="bundled model name, .onnx or .pt2 file")
    p.add_argument("--tuning-logs", action="append", metavar="DIR",
                   help="records for the tvm-tuned system (with the shipped ones)")
    p.add_argument("--repeat", type=int, default=20, help="runs per system and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--skip", action="append", metavar="SYSTEM",
                   help="leave a system out (repeatable): pytorch, torch.compile, "
                        "onnxruntime, tvm-untuned, tvm-default, tvm-tuned")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("inspect", help="print an artifact's metadata (no loading needed)")
    p.add_argument("artifact")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("demo", help="compile the perception CNN for cruise-npu, run it, "
                       "compare with PyTorch")
    p.add_argument("--model", default="perception-cnn")
    p.add_argument("-t", "--target", default="cruise-npu")
    p.add_argument("--repeat", type=int, default=10, help="timed runs per system")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("tune", help="tune a model's host kernels (MetaSchedule) and NPU tiles "
                       "(cycle model) into a tuning-log directory")
    p.add_argument("model", help="bundled model name, .onnx or .pt2 file")
    p.add_argument("-t", "--target", default="cruise-npu")
    p.add_argument("--tuning-logs", required=True, metavar="DIR")
    p.add_argument("--trials", type=int, default=64, help="host trials for the whole job")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="stop starting new host tasks after this long")
    p.add_argument("--retune", action="store_true", help="tune again what the log has")
    p.add_argument("--exact-math", action="store_true",
                   help="tune the kernels of builds made with --exact-math (libm exp/erf/"
                        "tanh, Winograd F(2x2) only): records match the kernels they were "
                        "tuned on")
    p.add_argument("--workers", type=int, help="parallel local builders (default: cores)")
    p.add_argument("--rpc-tracker", metavar="HOST:PORT",
                   help="measure on remote boards through TVM's RPC tracker")
    p.add_argument("--rpc-key", help="the key the boards registered with")
    p.add_argument("--host", help="CPU side of the target (as for compile)")
    p.add_argument("--cuda-arch")
    p.add_argument("--input-shape", action="append", type=_parse_shape, metavar="NAME=DIMS")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--host-only", action="store_true", help="skip the NPU tiling search")
    group.add_argument("--npu-only", action="store_true", help="skip host tuning")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("logs", help="tuning logs: list, merge, prune, validate")
    logs = p.add_subparsers(dest="logs_command", metavar="LOGS_COMMAND")
    logs.required = True
    q = logs.add_parser("list", help="what is tuned, for which target, how good")
    q.add_argument("dir")
    q.set_defaults(func=_cmd_logs)
    q = logs.add_parser("merge", help="merge log directories into one")
    q.add_argument("sources", nargs="+")
    q.add_argument("-o", "--output", required=True)
    q.set_defaults(func=_cmd_logs)
    q = logs.add_parser("prune", help="keep the best records per workload")
    q.add_argument("dir")
    q.add_argument("--keep", type=int, default=1)
    q.set_defaults(func=_cmd_logs)
    q = logs.add_parser("validate", help="replay host records and compare with untuned "
                        "kernels")
    q.add_argument("dir")
    q.add_argument("-t", "--target", default="llvm")
    q.add_argument("--host")
    q.set_defaults(func=_cmd_logs)

    p = sub.add_parser("npu", help="NPU programs: disassemble, simulate")
    npu = p.add_subparsers(dest="npu_command", metavar="NPU_COMMAND")
    npu.required = True
    q = npu.add_parser("disasm", help="print a program (.crnpu) as text")
    q.add_argument("program")
    q.set_defaults(func=_cmd_npu_disasm)
    q = npu.add_parser("simulate", help="run a program on seeded random inputs, print "
                       "simulated cycles and utilization")
    q.add_argument("program")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_cmd_npu_simulate)

    p = sub.add_parser("env", help="environment variables tvm-cruise reads")
    p.set_defaults(func=_cmd_env)
    return parser


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    from . import env
    from .errors import CruiseError

    if args.quiet:
        env.configure_logging("error")
    elif args.verbose:
        env.configure_logging("debug" if args.verbose > 1 else "info")
    try:
        return args.func(args)
    except CruiseError as err:
        print(f"tvm-cruise {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
