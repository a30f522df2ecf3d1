"""cocotb testbenches (``test_*.py``: a cocotb half and a pytest half each), their drivers and
scoreboards, simulator setup, and the demo and benchmark jobs."""
