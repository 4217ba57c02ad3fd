"""Shared setup for the index tests: at most two FAISS threads (the machine has two cores)."""

import faiss

faiss.omp_set_num_threads(2)
