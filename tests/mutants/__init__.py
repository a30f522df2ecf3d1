"""Mutation testing of the generated RTL (issue 9): does the fast suite notice a broken design?

yosys' ``mutate`` pass (:mod:`mutants.yosys`) makes single-bit mutants of the generated PE,
array core, accelerator and DMA engines; :mod:`mutants.catalog` adds hand-written mutants for
the risks that matter most. :mod:`mutants.flow` writes each mutant into a build root of its
own and runs the target's fast suite on it, stage by stage (:mod:`mutants.targets`), in
bounded child processes (:mod:`mutants.stage`); :mod:`mutants.report` prints the table.
``python -m mutants`` (``nox -s mutants``) runs it all; ``tests/rtl/test_mutants.py`` runs the
hand-written mutants in CI. Test infrastructure: nothing in the product imports it.
"""
