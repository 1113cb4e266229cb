"""Entry point of the local llama.cpp server: ``python -m labeler.llama_entry <llama_cpp.server options>``.

It is ``python -m llama_cpp.server`` with one change: the model loads without ggml's "extra buffer types"
(``use_extra_bufts = False``). On CPUs that report Intel AMX, ggml places the weights in AMX tile buffers,
and where the OS or the hypervisor has not enabled AMX for the process (seen on 2-core cloud VMs) the first
matrix product dies with a general-protection fault inside libggml-cpu: the server answers ``/v1/models``,
then vanishes on the first completion. Plain CPU buffers work everywhere; for the 135M model on 2 cores
they cost nothing measurable.
"""
from __future__ import annotations

import runpy

import llama_cpp.llama_cpp as llama_c

_default_model_params = llama_c.llama_model_default_params


def _model_params_without_extra_buffers():
    params = _default_model_params()
    params.use_extra_bufts = False
    return params


if __name__ == "__main__":
    llama_c.llama_model_default_params = _model_params_without_extra_buffers
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
