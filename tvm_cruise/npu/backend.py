"""The Cruise NPU as a ``tvm_cruise.backend.Backend``: architecture ``cruise-npu``.

Partitioning is the shared BYOC one (``tvm_cruise.byoc``: pattern tables built from the
spec); lowering is this package's program compiler (``npu.compiler``); the runtime is
``<key>.run`` over the simulator (``npu.runtime``); tuning searches MAC layers' tiles on
the cycle model (``npu.compiler.search``).
"""

from __future__ import annotations

from ..backend import Backend, TunableLayer


class CruiseNpuBackend(Backend):
    architecture = "cruise-npu"

    def register(self, spec) -> list[str]:
        from ..byoc.patterns import register as register_patterns
        from .runtime import register_runtime

        return register_patterns(spec) + [register_runtime(spec)]

    def partition(self, mod, spec, precision, model, refused, layer_precision):
        from ..byoc.partition import partition

        return partition(mod, spec, precision, model, refused, layer_precision)

    def conv2d_sram(self, spec, shapes, strides, padding, dilation, groups, dtype, bias,
                    residual):
        from .compiler import tiling

        shape = tiling.conv_shape(*shapes, strides, padding, dilation, groups, dtype, bias,
                                  residual)
        t, need = tiling.smallest_conv(spec, shape)
        return (f"{t.oc} output channels, {t.rows} output row, {t.ic} input channels, "
                f"weights {'resident' if t.resident else 'streamed'}", need)

    def offloaded(self, partitioned, spec) -> list:
        from ..byoc.partition import accelerator_functions

        return accelerator_functions(partitioned, spec)

    def calibrated_functions(self, partitioned, functions, precision) -> list[str]:
        from ..byoc.precision import function_precision

        return [gv.name_hint for gv in functions
                if function_precision(partitioned[gv], precision) == "int8"]

    def lower(self, partitioned, spec, functions, *, tilings=None, records=None,
              ranges=None):
        from .compiler import lower

        return lower(partitioned, spec, functions, tilings, records, ranges)

    def run(self, spec, compiled, inputs) -> list:
        import numpy as np

        from .simulator import Simulator

        from ..errors import BuildError

        if compiled.input_scales is not None:
            raise BuildError(f"{compiled.name} is an int8 program: running it on float "
                             "inputs needs its input scales (verify compares fp16 programs)")
        dtype = compiled.graph.dtype
        outputs, _ = Simulator(spec).run(compiled.program,
                                         [np.asarray(x).astype(dtype) for x in inputs])
        return outputs

    def totals(self, compiled) -> dict:
        from .compiler import total_stats

        return total_stats(compiled)

    def tunable_layers(self, compiled) -> list[TunableLayer]:
        from .compiler.graph import TUNABLE, describe_layer, layer_signature

        return [TunableLayer(layer_signature(layer), describe_layer(layer), layer)
                for c in compiled for layer in c.graph.layers if layer.kind in TUNABLE]

    def tuned_layers(self, compiled) -> int:
        return sum(len(c.tuned_layers) for c in compiled)

    def search_layer(self, spec, layer: TunableLayer) -> dict:
        from .compiler.search import search_layer

        return search_layer(spec, layer.handle)
