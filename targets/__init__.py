"""Targets: one file per target (cpu.py, portable.py, ...) defining a `Target` row (base.py), found by
registry.py; the lowering passes they list live in passes/."""
