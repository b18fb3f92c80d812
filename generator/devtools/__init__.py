"""Tools for developing the gallery, not needed to build one: the benchmark and the demo-model trainer."""
