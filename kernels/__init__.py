"""Numba kernels of fabricsim (installed as ``fabricsim.kernels``).

Arrays in, arrays out: no Python objects per flow, packet or event. Modules:

- :mod:`fabricsim.kernels.heaps`   indexed binary min-heaps over arrays
- :mod:`fabricsim.kernels.maxmin`  max-min fair rate allocation (bottleneck order with a heap)
- :mod:`fabricsim.kernels.flowsim` the flow-level (fluid) event-driven engine
"""
