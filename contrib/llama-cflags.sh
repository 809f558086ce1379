#!/bin/sh
# The C and C++ flags llama-cpp-python is compiled with, wherever Parley builds it: the Makefile,
# both Dockerfiles and the systemd install in README. On x86-64, llama.cpp's AMX kernels are left
# out: on CPUs that report AMX the first decode dies with SIGSEGV in ggml_backend_amx_mul_mat
# (ggml-org/llama.cpp#20824); AVX-512 and VNNI stay. Elsewhere: no flags.
case "$(uname -m)" in
    x86_64 | amd64) echo "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" ;;
    *) echo "" ;;
esac
