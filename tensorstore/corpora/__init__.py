"""Model families for the demo, the tests and the benchmarks (SPEC §7)."""
