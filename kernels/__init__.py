"""Compute kernels (CPU: numba, CUDA: numba.cuda). Never imports gpubfv."""
