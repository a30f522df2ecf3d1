"""Amaranth hardware: the PE array, SRAM buffers, DMA and controller, plus the Amaranth-free
configuration (``config``), instruction set (``isa``), register map (``regs``) and timing model
(``timing``) that the software and testbenches import."""
