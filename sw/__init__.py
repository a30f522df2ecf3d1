"""Software: the ``qta`` command, GEMM compiler, DRAM layouts, cycle model, golden and RTL
back ends, and UNet workload traces."""
